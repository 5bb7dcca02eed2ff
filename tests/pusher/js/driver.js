// Drives real pusher-js clients for tests/pusher: commands in on stdin, events out on
// stdout, one JSON object a line. A test (tests/pusher/pusherjs.py) starts it with Node.
//
// Commands: {"op":"connect","id":"a","key":...,"port":...}
//           {"op":"subscribe","id":"a","channel":...}
//           {"op":"unsubscribe","id":"a","channel":...}
//           {"op":"trigger","id":"a","channel":...,"event":...,"data":...}
//           {"op":"disconnect","id":"a"}, {"op":"signin","id":"a"}
// Events:   {"id":"a","kind":"state","current":...}, "connected" (socket_id),
//           "succeeded" (members), "subscription_error", "member_added", "member_removed",
//           "signed_in", "user_event" (an event sent to the signed-in user),
//           "event" (channel, event, data), "bound" (an event named in the subscribe's
//           "events", with the user_id pusher-js passes), "error", "trigger" (its result)
"use strict";
const readline = require("readline");
const Pusher = require("pusher-js");

const clients = {};

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function membersOf(channel) {
  const list = [];
  channel.members.each((m) => list.push({ id: m.id, info: m.info }));
  return { me: channel.members.me, count: channel.members.count, list };
}

function connect(cmd) {
  const id = cmd.id;
  const pusher = new Pusher(cmd.key, {
    cluster: "local",
    wsHost: "127.0.0.1",
    wsPort: cmd.port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    activityTimeout: cmd.activityTimeout || 120000,
    channelAuthorization: {
      endpoint: `http://127.0.0.1:${cmd.port}/pusher/auth`,
      transport: "ajax",
      headers: { "X-Test-User": cmd.user || "" },
    },
    userAuthentication: {
      endpoint: `http://127.0.0.1:${cmd.port}/pusher/user-auth`,
      transport: "ajax",
      headers: { "X-Test-User": cmd.user || "" },
    },
  });
  clients[id] = pusher;
  pusher.connection.bind("state_change", (s) => out({ id, kind: "state", current: s.current }));
  pusher.connection.bind("connected", () =>
    out({ id, kind: "connected", socket_id: pusher.connection.socket_id }));
  pusher.connection.bind("error", (err) => out({ id, kind: "error", error: err }));
  pusher.bind("pusher:signin_success", (data) => out({ id, kind: "signed_in", data }));
  pusher.user.bind_global((event, data) => out({ id, kind: "user_event", event, data }));
}

function subscribe(cmd) {
  const id = cmd.id;
  const channel = clients[id].subscribe(cmd.channel);
  channel.bind("pusher:subscription_succeeded", (data) => {
    const members = channel.members ? membersOf(channel) : null;
    out({ id, kind: "succeeded", channel: cmd.channel, members });
  });
  channel.bind("pusher:subscription_error", (err) =>
    out({ id, kind: "subscription_error", channel: cmd.channel, error: err }));
  channel.bind("pusher:member_added", (m) =>
    out({ id, kind: "member_added", channel: cmd.channel, member: { id: m.id, info: m.info },
          count: channel.members.count }));
  channel.bind("pusher:member_removed", (m) =>
    out({ id, kind: "member_removed", channel: cmd.channel, member: { id: m.id },
          count: channel.members.count }));
  channel.bind_global((event, data) => {
    if (!event.startsWith("pusher:")) out({ id, kind: "event", channel: cmd.channel, event, data });
  });
  for (const event of cmd.events || []) {  // a bound callback also gets the sender's user_id
    channel.bind(event, (data, metadata) => out({
      id, kind: "bound", channel: cmd.channel, event, data,
      user_id: metadata && metadata.user_id !== undefined ? metadata.user_id : null }));
  }
}

const ops = {
  connect,
  subscribe,
  unsubscribe: (cmd) => clients[cmd.id].unsubscribe(cmd.channel),
  trigger: (cmd) => {
    const ok = clients[cmd.id].channel(cmd.channel).trigger(cmd.event, cmd.data);
    out({ id: cmd.id, kind: "trigger", ok });
  },
  disconnect: (cmd) => clients[cmd.id].disconnect(),
  signin: (cmd) => clients[cmd.id].signin(),
};

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const cmd = JSON.parse(line);
  try {
    ops[cmd.op](cmd);
  } catch (err) {
    out({ id: cmd.id, kind: "driver_error", error: String(err) });
  }
});
process.stdin.on("end", () => {
  for (const c of Object.values(clients)) c.disconnect();
  setTimeout(() => process.exit(0), 100);
});
out({ kind: "ready", version: require("pusher-js/package.json").version });
