"""Tools for tests and lessons: a TCP fault proxy, a restartable server, socketless ports."""

from realtime_lab.testing.fault_proxy import FaultProxy
from realtime_lab.testing.ports import NullPort, RecordingPort
from realtime_lab.testing.restartable import RestartableServer
from realtime_lab.testing.storm import StormReport, max_window_share, storm_report

__all__ = [
    "FaultProxy",
    "NullPort",
    "RecordingPort",
    "RestartableServer",
    "StormReport",
    "max_window_share",
    "storm_report",
]
