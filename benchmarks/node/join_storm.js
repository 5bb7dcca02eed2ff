// Load client of the join-storm scenario (benchmarks/join_storm.py), in its own process.
//
//   node join_storm.js --port P --clients N [--presence] [--concurrency 64]
//
// Opens N WebSocket connections to ws://127.0.0.1:P/ws?user=u<i> (at most
// --concurrency handshakes in flight, below the servers' listen backlog), each
// subscribing to one channel as soon as it is welcomed. With --presence every
// client rebuilds the channel's member list from presence_state, presence_page and
// presence_diff (docs/protocol.md, "To rebuild the member list") in a bitset of the
// N users (u0..u<N-1>), so 10,000 clients x 10,000 members fit in 12.5 MB; a client
// is exact when it lists every one of the N users, each with one connection, and no
// other name. A channel in counts mode (docs/presence.md, "Presence modes") sends
// presence_count (and presence_mode when a full channel passes its limit) instead: a
// client that got one keeps only the count, and is exact when the count is N.
//
// Prints one JSON line on stdout each time the whole crowd settles: every client
// subscribed (and, with --presence, exact). Times are CLOCK_MONOTONIC nanoseconds
// (process.hrtime.bigint(), the clock of Python's time.monotonic_ns()), so the
// runner can line them up with its own. A closed connection (a server restart)
// reconnects as the realtime_lab clients do: after a close the server advises
// reconnecting at once for (1001, 1012, 42xx) the first attempt waits a random
// time in [0, 0.5] s, every other a full-jitter backoff of 0.5 s doubling up to
// 20 s; it subscribes again and rebuilds its list from scratch, and the crowd
// settles again. Ends when stdin closes.
"use strict";
// The `ws` package (make bench installs it) or, without it, Node's own WebSocket
// (Node 22, or Node 20 with --experimental-websocket: how the smoke test runs it).
let WebSocket = globalThis.WebSocket;
let OPTIONS;
try {
  WebSocket = require("ws");
  OPTIONS = { perMessageDeflate: false, maxPayload: 64 << 20 };
} catch (err) {
  if (!WebSocket) throw new Error("neither the ws package (npm ci --prefix benchmarks/node) " +
                                  "nor a built-in WebSocket (node --experimental-websocket)");
}

function arg(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 ? process.argv[at + 1] : fallback;
}
const PORT = Number(arg("--port"));
const N = Number(arg("--clients", "1000"));
const PRESENCE = process.argv.includes("--presence");
const CONCURRENCY = Number(arg("--concurrency", "64"));
const CHANNEL = arg("--channel", "room");
const URL = `ws://127.0.0.1:${PORT}/ws`;
const SUBSCRIBE = JSON.stringify({ type: "subscribe", channel: CHANNEL, id: 1 });
const BYTES = (N + 7) >> 3;
const now = () => process.hrtime.bigint();

const stats = {
  frames: 0, presence_frames: 0, bytes: 0, closes: 0, errors: 0, reconnects: 0,
  bad_members: 0, last_open_ns: null,
};
let subscribedCount = 0; // clients subscribed now
let exactCount = 0; // clients whose member list (or count) is exact now
let countModeClients = 0; // clients that got a count instead of a member list
let phase = 0; // 0: the join storm; each restart starts the next
let phaseStart = now();
let firstSubscribedNs = null;
let allSubscribedNs = null; // when the last client of this phase got "subscribed"
let reported = -1;
let stopping = false;

class Member {
  constructor(i) {
    this.i = i;
    this.user = `u${i}`;
    this.ws = null;
    this.subscribed = false;
    this.attempt = 0;
    this.done = null;
    this.exact = false;
    this.resetView();
  }

  resetView() {
    if (this.exact) exactCount -= 1;
    if (this.counted !== undefined && this.counted !== null) countModeClients -= 1;
    this.bits = PRESENCE ? new Uint8Array(BYTES) : null;
    this.count = 0;
    this.exact = false;
    this.building = null; // {sync, next, bits, count} while pages arrive
    this.counted = null; // the member count, in counts mode (presence_count, presence_mode)
  }

  // ``done``: called once, when this connection is welcomed or closed (the launcher's
  // slot for the next handshake).
  open(done) {
    const url = `${URL}?user=${this.user}`;
    const ws = OPTIONS ? new WebSocket(url, OPTIONS) : new WebSocket(url);
    this.ws = ws;
    this.done = done;
    let opened = false;
    let ended = false;
    const end = (code) => { // once per attempt, whichever of close, error, timeout comes
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      this.release();
      this.onClose(code, opened);
    };
    // an attempt that neither opens nor fails within 5 s is given up (and retried)
    const timer = setTimeout(() => { if (!opened) { abort(ws); end(1006); } }, 5000);
    ws.onopen = () => { opened = true; clearTimeout(timer); };
    ws.onmessage = (event) => this.onMessage(event.data);
    // Node's own WebSocket may report a refused connection with "error" alone
    ws.onerror = () => { stats.errors += 1; if (!opened) end(1006); };
    ws.onclose = (event) => end(event.code);
  }

  release() {
    const done = this.done;
    this.done = null;
    if (done) done();
  }

  onMessage(data) {
    stats.frames += 1;
    stats.bytes += data.length;
    const msg = JSON.parse(data);
    const type = msg.type;
    if (type === "welcome") {
      this.ws.send(SUBSCRIBE);
      this.attempt = 0;
      stats.last_open_ns = now();
      this.release();
    } else if (type === "subscribed") {
      if (!this.subscribed) {
        this.subscribed = true;
        subscribedCount += 1;
        if (firstSubscribedNs === null) firstSubscribedNs = now();
        if (subscribedCount === N) allSubscribedNs = now();
      }
      check();
    } else if (type === "presence_state" || type === "presence_page" ||
               type === "presence_diff" || type === "presence_count" ||
               type === "presence_mode") {
      stats.presence_frames += 1;
      this.applyPresence(msg);
      check();
    }
  }

  applyPresence(msg) {
    if (msg.type === "presence_count" || msg.type === "presence_mode") {
      if (this.counted === null) countModeClients += 1;
      this.counted = msg.count;
      this.bits = null; // the member list is given up: a count only
      this.building = null;
    } else if (this.counted !== null) {
      if (msg.type === "presence_diff") return; // none comes after the switch
      this.counted = null; // a member list: full mode again
      countModeClients -= 1;
      this.bits = new Uint8Array(BYTES);
      this.count = 0;
    }
    if (this.counted !== null) {
      // exact: the count
    } else if (msg.type === "presence_state") {
      this.building = null;
      this.setAll(msg.members);
    } else if (msg.type === "presence_page") {
      if (msg.page === 1) this.building = { sync: msg.sync, next: 1, bits: new Uint8Array(BYTES),
                                            count: 0 };
      const b = this.building;
      if (!b || b.sync !== msg.sync || b.next !== msg.page) return;
      for (const user in msg.members) b.count += this.put(b.bits, user, msg.members[user]);
      b.next += 1;
      if (!msg.more) {
        this.bits = b.bits;
        this.count = b.count;
        this.building = null;
      }
    } else {
      const b = this.building;
      const bits = b ? b.bits : this.bits;
      let delta = 0;
      for (const user in msg.leaves) delta -= this.drop(bits, user);
      for (const user in msg.joins) delta += this.put(bits, user, msg.joins[user]);
      if (b) b.count += delta; else this.count += delta;
    }
    const exact = this.counted !== null ? this.counted === N
      : this.building === null && this.count === N;
    if (exact !== this.exact) {
      this.exact = exact;
      exactCount += exact ? 1 : -1;
    }
  }

  setAll(members) {
    this.bits = new Uint8Array(BYTES);
    this.count = 0;
    for (const user in members) this.count += this.put(this.bits, user, members[user]);
  }

  // 1 when ``user`` is new in ``bits``; a name outside u0..u<N-1> or a count other
  // than one connection is counted as bad (it never makes a list exact).
  put(bits, user, info) {
    const i = index(user);
    if (i < 0 || (info && info.connections !== undefined && info.connections !== 1)) {
      stats.bad_members += 1;
      return 0;
    }
    const mask = 1 << (i & 7);
    if (bits[i >> 3] & mask) return 0;
    bits[i >> 3] |= mask;
    return 1;
  }

  drop(bits, user) {
    const i = index(user);
    if (i < 0) return 0;
    const mask = 1 << (i & 7);
    if (!(bits[i >> 3] & mask)) return 0;
    bits[i >> 3] &= ~mask;
    return 1;
  }

  onClose(code, opened) {
    stats.closes += 1;
    if (reported === phase) { // the crowd had settled: this close starts a new phase
      phase += 1;
      phaseStart = now();
      firstSubscribedNs = null;
      allSubscribedNs = null;
    }
    if (this.subscribed) {
      this.subscribed = false;
      subscribedCount -= 1;
    }
    this.resetView();
    this.ws = null;
    if (stopping) return;
    this.attempt += 1;
    const soon = opened && (code === 1001 || code === 1012 || (code >= 4200 && code < 4300));
    const delay = soon && this.attempt === 1 ? Math.random() * 500
      : Math.random() * Math.min(20000, 500 * 2 ** (this.attempt - 1));
    setTimeout(() => { stats.reconnects += 1; this.open(null); }, delay);
  }
}

function abort(ws) {
  if (ws.terminate) ws.terminate(); else ws.close();
}

function index(user) {
  if (user.charCodeAt(0) !== 117) return -1; // "u"
  const i = Number(user.slice(1));
  return Number.isInteger(i) && i >= 0 && i < N ? i : -1;
}

function phaseSettled() {
  return subscribedCount === N && (!PRESENCE || exactCount === N);
}

function check() {
  if (reported === phase || !phaseSettled()) return;
  reported = phase;
  const t = now();
  process.stdout.write(JSON.stringify({
    event: "settled", phase, clients: N, presence: PRESENCE,
    phase_start_ns: phaseStart.toString(), settled_ns: t.toString(),
    first_subscribed_ns: firstSubscribedNs === null ? null : firstSubscribedNs.toString(),
    all_subscribed_ns: allSubscribedNs === null ? null : allSubscribedNs.toString(),
    last_open_ns: stats.last_open_ns === null ? null : stats.last_open_ns.toString(),
    frames: stats.frames, presence_frames: stats.presence_frames, bytes: stats.bytes,
    closes: stats.closes, errors: stats.errors, reconnects: stats.reconnects,
    bad_members: stats.bad_members, counts_mode: countModeClients,
  }) + "\n");
}

const members = Array.from({ length: N }, (_, i) => new Member(i));
let next = 0;
function launch() { // keep CONCURRENCY handshakes in flight until all are started
  if (next >= N) return;
  const m = members[next++];
  m.open(launch);
}
for (let k = 0; k < Math.min(CONCURRENCY, N); k++) launch();

function stop() {
  if (stopping) return;
  stopping = true;
  for (const m of members) if (m.ws) abort(m.ws);
  setTimeout(() => process.exit(0), 200).unref();
}
process.stdin.on("data", (data) => { // "status": where the crowd is now (a run that timed out)
  if (String(data).includes("status")) {
    process.stdout.write(JSON.stringify({
      event: "status", phase, clients: N, subscribed: subscribedCount, exact: exactCount,
      frames: stats.frames, presence_frames: stats.presence_frames, closes: stats.closes,
      errors: stats.errors, reconnects: stats.reconnects, bad_members: stats.bad_members,
    }) + "\n");
  }
});
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
