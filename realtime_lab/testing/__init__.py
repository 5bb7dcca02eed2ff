"""Tools for tests and lessons: a TCP fault proxy, a crowd of simulated clients, a
restartable server, socketless ports, a manual clock and a turn-by-turn scheduler for a
socketless hub, silent presence members."""

from realtime_lab.testing.clock import ManualClock, ManualScheduler, TurnScheduler
from realtime_lab.testing.crowd import Crowd
from realtime_lab.testing.fault_proxy import FaultProxy
from realtime_lab.testing.ports import NullPort, RecordingPort, SlowPort
from realtime_lab.testing.restartable import RestartableServer
from realtime_lab.testing.silent_members import SilentMembers
from realtime_lab.testing.storm import StormReport, max_window_share, storm_report

__all__ = [
    "Crowd",
    "FaultProxy",
    "ManualClock",
    "ManualScheduler",
    "NullPort",
    "RecordingPort",
    "RestartableServer",
    "SilentMembers",
    "SlowPort",
    "StormReport",
    "TurnScheduler",
    "max_window_share",
    "storm_report",
]
