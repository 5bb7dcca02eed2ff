// realtime-lab.js: the browser client of realtime_lab (a dependency-free ES module).
//
//   import { RealtimeClient } from "/static/realtime-lab.js";
//   const client = new RealtimeClient("ws://127.0.0.1:8765/ws", { user: "ada" });
//   client.addEventListener("state", (e) => console.log(e.detail.state, e.detail.attempt));
//   client.addEventListener("message", (e) => console.log(e.detail.channel, e.detail.data));
//   await client.connect();
//   await client.subscribe("room");
//   await client.publish("room", { text: "hello" });
//
// Same semantics as the Python client (docs/client.md): states idle, connecting,
// open, reconnecting, closing, closed; exponential backoff with full / equal /
// none jitter; the close code decides between reconnecting at once, backing off
// and stopping; after a reconnection channels are subscribed again (history
// channels recover what was missed with `since`), presence is rebuilt and the
// presence state/metadata set with setPresence() is set again; sends while
// reconnecting are buffered up to `bufferSize`.
// Differences: reconnection is ON by default here, and the heartbeat uses
// protocol-level {"type":"ping"} messages, because browsers hide WebSocket pings.

import { ConnectionClosed, RequestFailed, SendBufferFull } from "./errors.js";
import { Watchdog } from "./heartbeat.js";
import * as msgpack from "./msgpack.js";
import { followCount, followPresence, isCountMessage, memberIds } from "./presence.js";
import { Receipts } from "./receipts.js";
import { DEFAULT_BACKOFF, State, reconnectPlan } from "./rules.js";

export { ConnectionClosed, RequestFailed, SendBufferFull } from "./errors.js";
export { PAGE_VERSION, applyPresence, changedFields, followCount, followPresence, memberIds } from "./presence.js";
export { Advice, DEFAULT_BACKOFF, State, adviceFor, backoffDelay, reconnectPlan } from "./rules.js";

export const VERSION = "1";

/** Subprotocol per `protocol` option: JSON text frames, or MessagePack binary frames. */
export const SUBPROTOCOLS = Object.freeze({ json: "realtime-lab.v1.json", msgpack: "realtime-lab.v1.msgpack" });

export const DEFAULTS = Object.freeze({
  user: null,
  token: null,  // a string, or a (possibly async) function called before every attempt
  reconnect: true,
  backoff: DEFAULT_BACKOFF,
  maxAttempts: null,
  reconnectNowWindow: 0.5,
  connectTimeout: 10,
  requestTimeout: 10,
  bufferSize: 100,
  heartbeat: true,
  heartbeatTimeout: null,
  protocol: "json",  // or "msgpack" (binary frames; bytes travel as Uint8Array)
  receipts: true,  // report latencies of messages a recording server stamped (docs/protocol.md)
});

/** The default endpoint of the page's own server: ws(s)://HOST/ws. */
export function defaultUrl(loc = globalThis.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws`;
}

const now = () => performance.now() / 1000;

/**
 * One logical connection that survives lost sockets.
 * Events (CustomEvent, payload in `detail`; docs/client.md): "state" (a state
 * change), "message" (a channel message), "presence" ({channel, kind, members,
 * joined, updated, left}; in counts mode {channel, kind: "count" or "mode", count,
 * mode, left}), "recovered" (the server's recovery flag), "unsubscribed"
 * (the server removed this connection from a channel: {channel, reason}), "error"
 * (an error message from the server, a refused resubscribe or presence restore),
 * "reconnected" ({downtime, reconnects}).
 */
export class RealtimeClient extends EventTarget {
  constructor(url = defaultUrl(), options = {}) {
    super();
    this.url = url;
    this.options = { ...DEFAULTS, ...options, backoff: { ...DEFAULT_BACKOFF, ...(options.backoff || {}) } };
    this.user = this.options.user;
    this.state = State.IDLE;
    this.welcome = null;
    this.closeCode = null;
    this.closeReason = null;
    this.history = [];
    this.presence = new Map(); // channel -> {user: info}
    this._presenceBuilds = new Map(); // channel -> a member list arriving in pages (presence.js)
    this.presenceCounts = new Map(); // channel -> member count, for channels in counts mode
    this.positions = new Map(); // channel -> {offset, epoch}: last message seen (history channels)
    this._presenceWanted = new Map(); // channel -> {state, meta} set by setPresence(), restored
    this._auth = new Map(); // channel -> channel token, or a (session, channel) => token function
    this.unsent = [];
    this.reconnects = 0;
    this._channels = new Set();
    this._outbox = [];
    this._pending = new Map();
    this._ids = 1;
    this._ws = null;
    this._closing = false;
    this._attempt = 0;
    this._lostAt = null;
    this._timer = null;
    this._watchdog = null;  // a Watchdog (heartbeat.js) while a socket is open
    this._receipts = null;  // a Receipts batcher (receipts.js) while a recording server stamps
    this._left = new Set();  // channels forgotten on this connection: stragglers are not tracked
    this._first = null;
  }

  get subscriptions() { return [...this._channels]; }
  get buffered() { return this._outbox.length; }

  /** Listen to an event type; returns a function that removes the listener. */
  on(type, fn) {
    const handler = (e) => fn(e.detail);
    this.addEventListener(type, handler);
    return () => this.removeEventListener(type, handler);
  }

  /** Open the connection; resolves when OPEN, rejects if the client gives up. */
  connect() {
    if (this.state !== State.IDLE) return Promise.reject(new Error(`connect() in state ${this.state}`));
    this._first = {};
    const promise = new Promise((resolve, reject) => { this._first.resolve = resolve; this._first.reject = reject; });
    this._open();
    return promise;
  }

  /** Close for good: no more reconnection. */
  close(code = 1000, reason = "") {
    if (this.state === State.CLOSED || this.state === State.IDLE) {
      this._finish(this.closeCode, "closed");
      return;
    }
    this._closing = true;
    this._setState(State.CLOSING, { code, reason });
    clearTimeout(this._timer);
    if (this._ws && this._ws.readyState <= WebSocket.OPEN) this._ws.close(code, reason);
    else this._finish(code, reason);
  }

  /**
   * Subscribe; the channel is subscribed again after every reconnection.
   * `auth`: for a private or presence channel, a channel token, or a function
   * (session, channel) => token (may be async) called on every (re)subscribe,
   * since a token is bound to the session id, which changes on reconnect.
   */
  subscribe(channel, { auth = null } = {}) {
    if (auth !== null && auth !== undefined) this._auth.set(channel, auth);
    const message = this._subscribeMessage(channel, false);  // sent now unless auth is a function
    const reply = message instanceof Promise ? message.then((m) => this.request(m)) : this.request(message);
    return reply.then((r) => {
      this._channels.add(channel);
      if (r.epoch !== undefined && !this.positions.has(channel)) {
        this.positions.set(channel, { offset: r.offset, epoch: r.epoch });
      }
      return r;
    }, (err) => {
      if (!this._channels.has(channel)) this._auth.delete(channel);
      throw err;
    });
  }

  /** Unsubscribe; while reconnecting this only forgets the channel locally. */
  unsubscribe(channel) {
    if (this._receipts) this._receipts.forget(channel);
    this.presence.delete(channel);
    this._presenceBuilds.delete(channel);
    this.presenceCounts.delete(channel);
    this._presenceWanted.delete(channel);
    if (this.state !== State.OPEN && this._canBuffer()) {
      this._forget(channel);
      return Promise.resolve({ type: "unsubscribed", channel });
    }
    return this.request({ type: "unsubscribe", channel }).then((reply) => {
      this._forget(channel);
      return reply;
    });
  }

  /**
   * Change this user's presence state and/or metadata in `channel`
   * (docs/presence.md); resolves with the reply ({changed: [...]}). What was set
   * is remembered per channel (the latest state and the latest meta) and set again
   * after every reconnection, until `unsubscribe`. Same as the Python client's
   * `set_presence(channel, state=..., meta=...)`.
   */
  async setPresence(channel, { state = null, meta = null } = {}) {
    const message = { type: "presence", channel };
    if (state !== null && state !== undefined) message.state = state;
    if (meta !== null && meta !== undefined) message.meta = meta;
    const reply = await this.request(message);
    if (this._channels.has(channel)) {
      const wanted = this._presenceWanted.get(channel) || {};
      if ("state" in message) wanted.state = message.state;
      if ("meta" in message) wanted.meta = message.meta;
      this._presenceWanted.set(channel, wanted);
    }
    return reply;
  }

  /** The presence state/metadata this client set in `channel` (restored after reconnects). */
  presenceSet(channel) {
    const wanted = this._presenceWanted.get(channel);
    return wanted ? { ...wanted } : null;
  }

  /** Whether a member list of `channel` is arriving in pages (Python: `client.presence.syncing(ch)`). */
  presenceSyncing(channel) {
    return this._presenceBuilds.has(channel);
  }

  /**
   * The member count of `channel`: its `presence_count` in counts mode, else the size
   * of its member list; null before either arrived (Python: `client.presence.count(ch)`).
   */
  presenceCount(channel) {
    if (this.presenceCounts.has(channel)) return this.presenceCounts.get(channel);
    const members = this.presence.get(channel);
    return members ? Object.keys(members).length : null;
  }

  /** "full", "counts" or null (nothing yet) (Python: `client.presence.mode(ch)`). */
  presenceMode(channel) {
    if (this.presenceCounts.has(channel)) return "counts";
    return this.presence.has(channel) || this._presenceBuilds.has(channel) ? "full" : null;
  }

  /** The user ids present in `channel`, sorted (Python: `client.presence.members(ch)`). */
  members(channel) {
    return memberIds(this.presence.get(channel));
  }

  /** Publish; with {ack: true} resolves with the server's "published" reply. */
  publish(channel, data, { ack = false } = {}) {
    const msg = { type: "publish", channel, data };
    if (ack) return this.request(msg);
    this.send(msg);
    return Promise.resolve(null);
  }

  /** Send a raw message (buffered while reconnecting). */
  send(message) {
    if (this.state === State.OPEN) {
      this._ws.send(this._encode(message));
    } else if (this._canBuffer()) {
      this._buffer(message, null);
    } else {
      throw new ConnectionClosed(this.closeCode, this.closeReason || `state ${this.state}`);
    }
  }

  /** Send with a fresh id and resolve with the reply (reject on an error reply). */
  request(message) {
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, timer: null };
      entry.timer = setTimeout(() => {
        this._outbox = this._outbox.filter((item) => item.entry !== entry);
        for (const [id, e] of this._pending) if (e === entry) this._pending.delete(id);
        reject(new Error(`no reply to ${message.type} within ${this.options.requestTimeout}s`));
      }, this.options.requestTimeout * 1000);
      try {
        if (this.state === State.OPEN) this._sendRequest(message, entry);
        else if (this._canBuffer()) this._buffer(message, entry);
        else throw new ConnectionClosed(this.closeCode, this.closeReason || `state ${this.state}`);
      } catch (err) {
        clearTimeout(entry.timer);
        reject(err);
      }
    });
  }

  // ---------------------------------------------------------------- internals

  _setState(state, details = {}) {
    const change = { state, previous: this.state, at: now(), attempt: 0, delay: null, code: null,
      reason: "", downtime: null, ...details };
    this.state = state;
    this.history.push(change);
    if (this.history.length > 1000) this.history.shift();
    this.dispatchEvent(new CustomEvent("state", { detail: change }));
    return change;
  }

  _canBuffer() {
    return this.options.reconnect && !this._closing
      && (this.state === State.CONNECTING || this.state === State.RECONNECTING);
  }

  _buffer(message, entry) {
    if (this._outbox.length >= this.options.bufferSize) {
      throw new SendBufferFull(`${this._outbox.length} message(s) already wait for the connection `
        + `(bufferSize=${this.options.bufferSize}); this one was not sent`);
    }
    this._outbox.push({ message, entry });
  }

  _sendRequest(message, entry) {
    const id = this._ids++;
    this._pending.set(id, entry);
    this._ws.send(this._encode({ ...message, id }));
  }

  /** The frame payload of a message in the agreed protocol (text frames are JSON). */
  _encode(message) {
    return this._ws && this._ws.protocol === SUBPROTOCOLS.msgpack ? msgpack.encode(message)
      : JSON.stringify(message);
  }

  async _attemptUrl() {
    const query = new URLSearchParams();
    if (this.user) query.set("user", this.user);
    let token = this.options.token;
    if (typeof token === "function") token = await token();
    if (token !== null && token !== undefined) query.set("token", String(token));
    const qs = query.toString();
    return qs ? this.url + (this.url.includes("?") ? "&" : "?") + qs : this.url;
  }

  async _open() {
    this._setState(State.CONNECTING, { attempt: this._attempt });
    let ws;
    try {
      const url = await this._attemptUrl();
      if (this._closing) { this._finish(null, "closed"); return; }
      ws = new WebSocket(url, this.options.protocol === "msgpack" ? [SUBPROTOCOLS.msgpack] : []);
      ws.binaryType = "arraybuffer";
    } catch (err) {
      this._ended(null, `cannot connect: ${err.message}`, false);
      return;
    }
    this._ws = ws;
    let opened = false;
    let localReason = null;
    const giveUp = setTimeout(() => {
      localReason = "no welcome within the connect timeout";
      ws.close(4000, localReason);
      this._detach(ws, null, localReason, false);
    }, this.options.connectTimeout * 1000);
    ws.onmessage = (event) => {
      if (this._watchdog) this._watchdog.seen();
      let msg;
      try {
        msg = typeof event.data === "string" ? JSON.parse(event.data)
          : msgpack.decode(new Uint8Array(event.data));
      } catch { return; }
      if (msg.type === "welcome") {
        this.welcome = msg;
        this._receipts = this.options.receipts
          ? Receipts.forWelcome(msg, (m) => { if (this._ws === ws) ws.send(this._encode(m)); })
          : null;
        this._startWatchdog(ws, (reason) => { localReason = reason; });
        this._restore().then(() => {
          clearTimeout(giveUp);
          if (this._ws !== ws || this._closing) return;
          opened = true;
          this._opened();
        }, () => { /* the connection ended during the restore: onclose follows */ });
        return;
      }
      this._handle(msg);
    };
    ws.onclose = (event) => {
      clearTimeout(giveUp);
      const code = localReason ? null : (event.code === 1005 ? null : event.code);
      const reason = localReason || event.reason || (event.code === 1006 ? "connection lost" : "");
      this._detach(ws, code, reason, opened);
    };
  }

  _detach(ws, code, reason, opened) {
    if (this._ws !== ws) return;
    this._ws = null;
    if (this._watchdog) this._watchdog.stop();
    if (this._receipts) { this._receipts.stop(); this._receipts = null; }
    ws.onmessage = ws.onclose = null;
    const lost = new ConnectionClosed(code, reason);
    for (const entry of this._pending.values()) { clearTimeout(entry.timer); entry.reject(lost); }
    this._pending.clear();
    this._ended(code, reason, opened);
  }

  _ended(code, reason, opened) {
    if (this._closing) { this._finish(code, reason); return; }
    if (opened) { this._attempt = 0; this._lostAt = now(); }
    this._attempt += 1;
    const { delay, stop } = reconnectPlan(code, reason, this._attempt, this.options);
    if (stop !== undefined) { this._finish(code, stop); return; }
    this._setState(State.RECONNECTING, { attempt: this._attempt, delay, code, reason });
    this._timer = setTimeout(() => this._open(), delay * 1000);
  }

  /** The subscribe message for `channel` (`since` when recovering, `auth` when set);
   * a promise of it when `auth` is a function. */
  _subscribeMessage(channel, recover) {
    const message = { type: "subscribe", channel };
    this._left.delete(channel);
    const position = this.positions.get(channel);
    if (recover && position) message.since = { ...position };  // what was missed (history channels)
    const auth = this._auth.get(channel);
    if (typeof auth !== "function") {
      if (auth !== null && auth !== undefined) message.auth = auth;
      return message;
    }
    return Promise.resolve(auth(this.welcome ? this.welcome.session : "", channel))
      .then((token) => (token === null || token === undefined ? message : { ...message, auth: token }));
  }

  /** Send requests on `ws` now (not buffered); settle each with its reply. */
  async _requestAll(ws, messages) {
    if (this._ws !== ws) throw new Error("connection lost during the restore");
    const results = await Promise.allSettled(messages.map((message) => new Promise((resolve, reject) => {
      const entry = { resolve, reject, timer: null };
      entry.timer = setTimeout(() => reject(new Error(`no reply to ${message.type} within ${this.options.requestTimeout}s`)),
        this.options.requestTimeout * 1000);
      this._sendRequest(message, entry);
    })));
    if (this._ws !== ws) throw new Error("connection lost during the restore");
    return results;
  }

  /** Refused restore requests become "error" events; anything else ends the attempt. */
  _refusals(results, channels, what, forget) {
    results.forEach((result, i) => {
      if (result.status === "fulfilled") return;
      if (!(result.reason instanceof RequestFailed)) throw result.reason;
      if (forget) this._forget(channels[i]);
      this.dispatchEvent(new CustomEvent("error", { detail: { type: "error", code: result.reason.code,
        channel: channels[i], message: `${what} in ${JSON.stringify(channels[i])} refused: ${result.reason.message}` } }));
    });
  }

  /** After a (re)connection: subscribe again (recovering), then set presence again. */
  async _restore() {
    const ws = this._ws;
    this._left.clear();  // a new connection: nothing from the old one arrives on it
    const channels = [...this._channels];
    const messages = await Promise.all(channels.map((channel) => this._subscribeMessage(channel, true)));
    const results = await this._requestAll(ws, messages);
    this._refusals(results, channels, "resubscribe", true);
    // unsubscribed (or removed by the server) while its resubscribe was in flight: the
    // server subscribed it again, so leave it there (a refusal means it is already gone)
    const stale = channels.filter((c, i) => results[i].status === "fulfilled" && !this._channels.has(c));
    const left = await this._requestAll(ws, stale.map((channel) => ({ type: "unsubscribe", channel })));
    left.forEach((r) => { if (r.status === "rejected" && !(r.reason instanceof RequestFailed)) throw r.reason; });
    for (const channel of [...this.presence.keys()]) if (!this._channels.has(channel)) this.presence.delete(channel);
    for (const channel of [...this._presenceBuilds.keys()]) if (!this._channels.has(channel)) this._presenceBuilds.delete(channel);
    const wanted = [...this._presenceWanted].filter(([channel]) => this._channels.has(channel));
    const sets = wanted.map(([channel, values]) => ({ type: "presence", channel, ...values }));
    this._refusals(await this._requestAll(ws, sets), wanted.map(([channel]) => channel), "presence restore", false);
  }

  /** Drop everything kept for `channel` (unsubscribed, refused or removed by the server). */
  _forget(channel) {
    this._left.add(channel);
    this._channels.delete(channel);
    this._auth.delete(channel);
    this.positions.delete(channel);
    this.presence.delete(channel);
    this._presenceBuilds.delete(channel);
    this.presenceCounts.delete(channel);
    this._presenceWanted.delete(channel);
  }

  _opened() {
    const downtime = this._lostAt === null ? null : now() - this._lostAt;
    if (downtime !== null) this.reconnects += 1;
    this._lostAt = null;
    this._setState(State.OPEN, { attempt: this._attempt, downtime });
    if (downtime !== null) this.dispatchEvent(new CustomEvent("reconnected", { detail: { downtime, reconnects: this.reconnects } }));
    if (this._first) { this._first.resolve(this); this._first = null; }
    const outbox = this._outbox;
    this._outbox = [];
    for (const { message, entry } of outbox) {
      if (entry) this._sendRequest(message, entry);
      else this._ws.send(this._encode(message));
    }
  }

  _finish(code, reason) {
    if (this.state === State.CLOSED) return;
    clearTimeout(this._timer);
    if (this._watchdog) this._watchdog.stop();
    this.closeCode = code;
    this.closeReason = reason;
    const closed = new ConnectionClosed(code, reason);
    for (const { message, entry } of this._outbox) {
      if (entry) { clearTimeout(entry.timer); entry.reject(closed); } else this.unsent.push(message);
    }
    this._outbox = [];
    this._setState(State.CLOSED, { code, reason, unsent: this.unsent.length });
    if (this._first) { this._first.reject(closed); this._first = null; }
  }

  _handle(msg) {
    if (msg.id !== undefined && this._pending.has(msg.id)) {
      const entry = this._pending.get(msg.id);
      this._pending.delete(msg.id);
      clearTimeout(entry.timer);
      if (msg.type === "error") entry.reject(new RequestFailed(msg.code, msg.message));
      else entry.resolve(msg);
      return;
    }
    if (msg.type === "heartbeat" && this._watchdog) this._watchdog.changed(msg);
    // a channel left on this connection: the server's notice (control priority) may
    // overtake frames already queued for it; they revive no position nor member list
    const left = this._left.has(msg.channel);
    if (msg.type === "message" && msg.offset !== undefined && !left) {
      this.positions.set(msg.channel, { offset: msg.offset, epoch: msg.epoch });
    } else if (msg.type === "recovered") {
      if (!msg.complete && msg.epoch && !left) this.positions.set(msg.channel, { offset: msg.offset, epoch: msg.epoch });
      this.dispatchEvent(new CustomEvent("recovered", { detail: msg }));
    }
    if (isCountMessage(msg)) {
      if (left) return;
      const next = followCount(this.presence.get(msg.channel), msg);
      if (next.mode) {  // the channel left full mode: its member list would go stale
        this.presence.delete(msg.channel);
        this._presenceBuilds.delete(msg.channel);
      }
      this.presenceCounts.set(msg.channel, next.count);
      this.dispatchEvent(new CustomEvent("presence", { detail: { channel: msg.channel,
        kind: next.mode ? "mode" : "count", ...next } }));
      return;
    }
    if (msg.type === "presence_state" || msg.type === "presence_diff" || msg.type === "presence_page") {
      if (this.presenceCounts.has(msg.channel)) {
        if (msg.type === "presence_diff") return;  // a counts channel sends none: a straggler
        this.presenceCounts.delete(msg.channel);  // a member list: full again
      }
      const build = this._presenceBuilds.get(msg.channel) || null;
      // a diff without a state first is for a channel being left: nothing to apply it to
      if (left || (msg.type === "presence_diff" && !this.presence.has(msg.channel) && !build)) return;
      const next = followPresence(this.presence.get(msg.channel) || null, build, msg);
      if (next.build) this._presenceBuilds.set(msg.channel, next.build);
      else this._presenceBuilds.delete(msg.channel);
      if (!next.change) return;  // pages still arriving
      this.presence.set(msg.channel, next.members);
      const { joined, updated, left: gone } = next.change;
      // a merged diff may bring nothing new here (this client's own join, say): no event
      if (msg.type === "presence_diff" && ![joined, updated, gone].some((m) => Object.keys(m).length)) return;
      this.dispatchEvent(new CustomEvent("presence", { detail: { channel: msg.channel,
        kind: msg.type === "presence_diff" ? "diff" : "state", ...next.change } }));
    } else if (msg.type === "unsubscribed" && msg.id === undefined) {  // the server removed us (kicked)
      this._forget(msg.channel);
      this.dispatchEvent(new CustomEvent("unsubscribed", { detail: { channel: msg.channel, reason: msg.reason || null } }));
    } else if (msg.type === "message") {
      if (this._receipts && !left) this._receipts.note(msg);
      this.dispatchEvent(new CustomEvent("message", { detail: msg }));
    } else if (msg.type === "error") {
      this.dispatchEvent(new CustomEvent("error", { detail: msg }));
    }
  }

  _startWatchdog(ws, setReason) {
    if (this._watchdog) this._watchdog.stop();
    const ping = () => {  // browsers hide WebSocket pings: ask for a pong instead
      if (ws.readyState !== WebSocket.OPEN) return false;
      ws.send(this._encode({ type: "ping" }));
      return true;
    };
    this._watchdog = Watchdog.start(this.welcome, this.options, ping, (reason) => {
      setReason(reason);
      ws.close(4000, reason);  // the browser may wait for the dead peer: detach at once
      this._detach(ws, null, reason, this.state === State.OPEN);
    });
  }
}

/** Create a client and connect it; resolves with the open client. */
export function connect(url = defaultUrl(), options = {}) {
  const client = new RealtimeClient(url, options);
  return client.connect();
}
