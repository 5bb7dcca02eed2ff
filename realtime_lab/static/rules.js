// rules.js: the reconnection rules of the browser client (docs/client.md): its
// states, the close-code advice (the same table as realtime_lab/protocol/close_codes.py;
// a browser test checks they agree), the backoff with jitter and what to do after
// a lost connection.

export const State = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting",
  CLOSING: "closing",
  CLOSED: "closed",
});

export const Advice = Object.freeze({
  RECONNECT_NOW: "reconnect_now",
  BACKOFF: "backoff",
  STOP: "stop",
});

const STANDARD_ADVICE = {
  1000: Advice.STOP, 1001: Advice.RECONNECT_NOW, 1002: Advice.STOP, 1003: Advice.STOP,
  1005: Advice.BACKOFF, 1006: Advice.BACKOFF, 1007: Advice.STOP, 1008: Advice.STOP,
  1009: Advice.STOP, 1011: Advice.BACKOFF, 1012: Advice.RECONNECT_NOW, 1013: Advice.BACKOFF,
};

/** What to do after a close with `code` (null: lost without a close frame). */
export function adviceFor(code) {
  if (code === null || code === undefined) return Advice.BACKOFF;
  if (code in STANDARD_ADVICE) return STANDARD_ADVICE[code];
  if (code >= 4000 && code <= 4099) return Advice.STOP;
  if (code >= 4100 && code <= 4199) return Advice.BACKOFF;
  if (code >= 4200 && code <= 4299) return Advice.RECONNECT_NOW;
  return Advice.BACKOFF;
}

export const DEFAULT_BACKOFF = Object.freeze({ initial: 0.5, factor: 2, maxDelay: 20, jitter: "full" });

/** Delay (seconds) before `attempt` (1, 2, ...): exponential, capped, then jittered. */
export function backoffDelay(attempt, backoff = DEFAULT_BACKOFF, random = Math.random) {
  const b = { ...DEFAULT_BACKOFF, ...backoff };
  let ceiling = b.initial;
  for (let i = 1; i < attempt && ceiling < b.maxDelay; i++) ceiling *= b.factor;
  ceiling = Math.min(ceiling, b.maxDelay);
  if (b.jitter === "full") return random() * ceiling;
  if (b.jitter === "equal") return ceiling / 2 + random() * (ceiling / 2);
  if (b.jitter === "none") return ceiling;
  throw new Error(`unknown jitter ${b.jitter}: use full, equal or none`);
}

/**
 * After a lost connection, before attempt number `attempt` (1, 2, ...): `{delay}`
 * (seconds) to try again, or `{stop}` (the close reason) when the client gives up:
 * reconnection is off, the close code says stop, or `maxAttempts` are used up.
 * `options`: the client's (reconnect, maxAttempts, reconnectNowWindow, backoff).
 */
export function reconnectPlan(code, reason, attempt, options, random = Math.random) {
  if (!options.reconnect) return { stop: reason };
  const advice = adviceFor(code);
  if (advice === Advice.STOP) return { stop: `${reason} (close code ${code}: not reconnecting)` };
  const max = options.maxAttempts;
  if (max !== null && max !== undefined && attempt > max) return { stop: `gave up after ${max} attempts; last: ${reason}` };
  if (advice === Advice.RECONNECT_NOW && attempt === 1) return { delay: random() * options.reconnectNowWindow };
  return { delay: backoffDelay(attempt, options.backoff, random) };
}
