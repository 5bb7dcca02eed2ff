// heartbeat.js: the heartbeat watchdog of the browser client (docs/client.md).
// Browsers hide WebSocket pings, so when nothing came from the server for an
// interval it asks for a pong with a protocol-level {"type":"ping"}; when nothing
// came within the limit it calls `expire(reason)`.

const now = () => performance.now() / 1000;

export class Watchdog {
  /**
   * A running watchdog, or null when there is nothing to watch: `options.heartbeat`
   * is off, or the server announced no heartbeat and `heartbeatTimeout` is null.
   * `ping()` sends a ping and returns whether it could.
   */
  static start(welcome, options, ping, expire) {
    if (!options.heartbeat) return null;
    const beat = (welcome && welcome.heartbeat) || null;
    if (options.heartbeatTimeout === null && !beat) return null;
    return new Watchdog(beat, options.heartbeatTimeout, ping, expire);
  }

  constructor(beat, timeout, ping, expire) {
    this._beat = beat ? { interval: beat.interval, timeout: beat.timeout } : null;
    this._timeout = timeout;
    this._ping = ping;
    this._expire = expire;
    this._lastSeen = this._lastPing = now();
    this._timer = setTimeout(() => this._check(), this._period());
  }

  /** Seconds of silence after which the connection is dead. */
  get limit() { return this._timeout ?? (this._beat.interval + this._beat.timeout); }

  /** Seconds of silence after which a ping is sent. */
  get interval() { return this._beat ? this._beat.interval : this.limit / 2; }

  /** Something arrived from the server. */
  seen() { this._lastSeen = now(); }

  /** A "heartbeat" message: the server changed its interval/timeout. */
  changed(msg) {
    if (this._beat && msg.interval) this._beat = { interval: msg.interval, timeout: msg.timeout ?? msg.interval };
  }

  stop() { clearTimeout(this._timer); }

  _period() { return Math.max(10, (this.limit * 1000) / 8); }

  _check() {
    const t = now();
    const silent = t - this._lastSeen;
    if (silent > this.limit) {
      this._expire(`heartbeat timeout: nothing from the server for ${silent.toFixed(2)}s (limit ${this.limit}s)`);
      return;
    }
    if (t - this._lastPing >= this.interval && silent >= this.interval && this._ping()) this._lastPing = t;
    this._timer = setTimeout(() => this._check(), this._period());
  }
}
