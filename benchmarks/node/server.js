// Peer: Node.js `ws` (benchmarks/servers contract: prints "PORT n", stops on stdin EOF).
// Same protocol subset as the native Python servers: welcome on connect,
// subscribe -> subscribed, publish -> message to every subscriber. A publish is
// serialized once into a Buffer and passed to send() for each subscriber (the
// broadcast pattern in ws's README). permessage-deflate off (ws's server default).
// A loop-lag probe like benchmarks/servers/_common.py: a timer every 2 ms; firings
// later than 1 ms are kept as [process.hrtime.bigint() (CLOCK_MONOTONIC), lateness ns]
// and written as JSON to --lag-file when the server stops.
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const { WebSocketServer } = require("ws");

const args = process.argv.slice(2);
const lagFileAt = args.indexOf("--lag-file");
const lagFile = lagFileAt >= 0 ? args[lagFileAt + 1] : null;

const PERIOD_NS = 2000000n;
const RECORD_NS = 1000000n;
const lag = { events: [], max: 0n, firings: 0 };
let due = process.hrtime.bigint() + PERIOD_NS;
function fire() {
  const now = process.hrtime.bigint();
  const late = now - due > 0n ? now - due : 0n;
  lag.firings += 1;
  if (late > lag.max) lag.max = late;
  if (late > RECORD_NS) lag.events.push([Number(now), Number(late)]);
  due = now + PERIOD_NS;
  timer = setTimeout(fire, 2);
}
let timer = setTimeout(fire, 2);

const channels = new Map();
const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: false,
                                  maxPayload: 1 << 20, backlog: 2048 });

wss.on("connection", (ws) => {
  const user = crypto.randomBytes(8).toString("hex");
  const joined = new Set();
  ws.send(JSON.stringify({ type: "welcome", session: user, user: user }));
  ws.on("message", (data) => {
    const msg = JSON.parse(data);
    if (msg.type === "publish") {
      const members = channels.get(msg.channel);
      if (!members) return;
      const out = Buffer.from(JSON.stringify({ type: "message", channel: msg.channel,
                                               data: msg.data, from: user }));
      for (const peer of members) peer.send(out, { binary: false });
    } else if (msg.type === "subscribe") {
      if (!channels.has(msg.channel)) channels.set(msg.channel, new Set());
      channels.get(msg.channel).add(ws);
      joined.add(msg.channel);
      ws.send(JSON.stringify({ type: "subscribed", channel: msg.channel, id: msg.id }));
    }
  });
  ws.on("close", () => {
    for (const name of joined) {
      const members = channels.get(name);
      if (members) members.delete(ws);
    }
  });
  ws.on("error", () => {});
});

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  clearTimeout(timer);
  if (lagFile) {
    try {
      fs.writeFileSync(lagFile, JSON.stringify({ period_ms: 2, firings: lag.firings,
        max_ms: Number(lag.max) / 1e6, events: lag.events }));
    } catch (e) { /* the runner reports a missing lag file */ }
  }
  for (const client of wss.clients) client.terminate();
  wss.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 5000).unref();
}

wss.on("listening", () => process.stdout.write(`PORT ${wss.address().port}\n`));
process.stdin.on("data", () => {});
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
setTimeout(stop, 1800 * 1000).unref();
