/**
 * Delivery receipts (docs/protocol.md, "receipts"): while the server records
 * metrics, each channel message carries `ts` (the server's send time, Unix
 * seconds). A client whose server announced `receipts` in its welcome reports
 * `now - ts` per channel in batches: at most `max_samples` values a message,
 * one message per channel every `interval` seconds. Samples outside the range
 * the server accepts (a clock far from the server's) are skipped, never sent.
 */

export const RECEIPT_RANGE_MS = Object.freeze([-60000, 600000]);

export class Receipts {
  /** A batcher when `welcome` offers receipts, else null. */
  static forWelcome(welcome, send, interval = 0.5) {
    const offer = welcome && welcome.receipts;
    const max = offer && Number.isInteger(offer.max_samples) && offer.max_samples > 0
      ? offer.max_samples : 0;
    return max ? new Receipts(send, max, interval) : null;
  }

  constructor(send, maxSamples, interval) {
    this.send = send;
    this.max = maxSamples;
    this.interval = interval;
    this.pending = new Map();
    this.timer = null;
    this.sent = 0;
  }

  /** Take the latency of one received channel message (ignored without `ts`). */
  note(msg, nowMs = Date.now()) {
    if (typeof msg.ts !== "number" || typeof msg.channel !== "string") return;
    const latency = Math.round((nowMs - msg.ts * 1000) * 1000) / 1000;
    if (!(latency >= RECEIPT_RANGE_MS[0] && latency <= RECEIPT_RANGE_MS[1])) return;
    let samples = this.pending.get(msg.channel);
    if (!samples) { samples = []; this.pending.set(msg.channel, samples); }
    samples.push(latency);
    if (samples.length >= this.max) {
      this.pending.delete(msg.channel);
      this._send(msg.channel, samples);
    } else if (this.timer === null) {
      this.timer = setTimeout(() => this.flush(), this.interval * 1000);
    }
  }

  /** Drop what was collected for a channel being left (the server would refuse it). */
  forget(channel) { this.pending.delete(channel); }

  flush() {
    this.timer = null;
    const pending = this.pending;
    this.pending = new Map();
    for (const [channel, samples] of pending) if (samples.length) this._send(channel, samples);
  }

  /** The connection ended: drop what was not sent. */
  stop() {
    clearTimeout(this.timer);
    this.timer = null;
    this.pending.clear();
  }

  _send(channel, samples) {
    this.sent += 1;
    this.send({ type: "receipts", channel, latency_ms: samples });
  }
}
