// presence.js: rebuild one channel's member list from `presence_state` and
// `presence_diff` messages (docs/protocol.md#presence), with either wire shape:
//
// * presence_details=True (the server default): a member that stays and changes
//   (a tab opened or closed, state, meta) comes again in `joins` with its whole
//   info and in `changed` ({"ada": ["connections"]}); `connections` is exact;
//   leaves carry `reason` (closed, timeout, kicked; none: it unsubscribed).
// * presence_details=False (the earlier wire): joins and leaves only, no reasons;
//   a second tab sends nothing, so other users' `connections` may be stale.
//
// State and metadata changes carry `changed` with both. Applying leaves, then
// joins (a join for a known user replaces its info) gives the server's map.

const FIELDS = ["connections", "state", "meta"];

/** A canonical JSON text (sorted keys), to compare infos field by field. */
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value ?? null);
}

/** The fields (connections, state, meta) whose values differ between two member infos. */
export function changedFields(before, after) {
  return FIELDS.filter((field) => canonical(before?.[field]) !== canonical(after?.[field]));
}

/**
 * Apply a presence message to `members` (user -> info, or null before the first state).
 *
 * Returns {members, joined, updated, left}: `members` is a new object (the old one
 * is not modified), `joined` {user: info}, `updated` {user: [changed fields]} and
 * `left` {user: reason or null} say what changed, as the Python client's
 * `PresenceView.apply()`. A `presence_state` replaces the map; its differences
 * from the previous map (everyone, on the first state) are reported the same
 * way, with reason null for who left meanwhile.
 */
export function applyPresence(members, msg) {
  const before = members || {};
  const joined = {};
  const updated = {};
  const left = {};
  let after;
  if (msg.type === "presence_state") {
    after = { ...(msg.members || {}) };
    for (const user of Object.keys(before)) if (!(user in after)) left[user] = null;
  } else {
    after = { ...before };
    for (const [user, info] of Object.entries(msg.leaves || {})) {
      if (!(user in after)) continue;  // unknown here: nothing to take away
      delete after[user];
      left[user] = (info && info.reason) || null;
    }
  }
  const joins = msg.type === "presence_state" ? after : (msg.joins || {});
  const hints = msg.changed || {};
  for (const [user, info] of Object.entries(joins)) {
    const known = msg.type === "presence_state" ? before[user] : after[user];
    if (known === undefined || user in left) {
      joined[user] = info;
    } else {
      const changed = hints[user] || changedFields(known, info);
      if (changed.length) updated[user] = [...changed];
    }
    after[user] = info;
  }
  return { members: after, joined, updated, left };
}

/** The user ids of a member map, sorted (as the Python client's `presence.members()`). */
export function memberIds(members) {
  return Object.keys(members || {}).sort();
}
