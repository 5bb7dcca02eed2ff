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
// A diff may name many members (the server merges a channel's changes over
// `presence_batch_window`); a member it names as this client already has it, or a
// leave of one it never had, is not reported.
//
// A large member list arrives as `presence_page` messages instead of one
// `presence_state` (docs/protocol.md#presence-pages): followPresence() builds it
// (page 1 starts it, later pages of the same `sync` are merged, diffs meanwhile
// are applied to it) and reports it like a `presence_state` once `more` is false.
//
// A channel in counts mode (docs/presence.md#presence-modes) sends no member list:
// `presence_count` messages (after `subscribed`, then at most one per interval when
// the count changed), and a full channel that passes its member limit sends one
// `presence_mode` ({"mode": "counts", "count": n}): followCount() drops the list
// then, so a page never shows a stale member list.

const FIELDS = ["connections", "state", "meta"];

/** The `presence_page` format this client reads (its `v` field). */
export const PAGE_VERSION = 1;

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
      // a merged diff may name a field that changed back, or that this client has already
      const differ = changedFields(known, info);
      const changed = hints[user] ? hints[user].filter((f) => differ.includes(f)) : differ;
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

/** Leaves, then joins, applied in place to a list being built from pages. */
function applyDiffInPlace(members, msg) {
  for (const user of Object.keys(msg.leaves || {})) delete members[user];
  Object.assign(members, msg.joins || {});
}

/**
 * Apply any presence message (`presence_state`, `presence_diff`, `presence_page`)
 * to a channel: `members` is its complete list (or null) and `build` the list
 * arriving in pages (or null). Returns {members, build, change}: the channel's
 * list, the build still in progress (null when none), and `change` (what
 * applyPresence() returns) when the complete list changed, else null. While pages
 * arrive, `members` stays the previous list and diffs go into the build.
 */
export function followPresence(members, build, msg) {
  if (msg.type === "presence_page") {
    if (msg.v !== PAGE_VERSION) return { members, build: null, change: null };  // unknown format
    if (msg.page === 1) build = { sync: msg.sync, next: 1, members: {} };
    else if (!build || build.sync !== msg.sync || build.next !== msg.page) {
      return { members, build, change: null };  // a straggler of a list given up
    }
    Object.assign(build.members, msg.members || {});
    build.next += 1;
    if (msg.more) return { members, build, change: null };
    const change = applyPresence(members, { type: "presence_state", channel: msg.channel,
      members: build.members });
    return { members: change.members, build: null, change };
  }
  if (build && msg.type === "presence_diff") {
    applyDiffInPlace(build.members, msg);
    return { members, build, change: null };
  }
  const change = applyPresence(members, msg);
  return { members: change.members, build: null, change };
}

/** Whether `msg` is a count-mode message (`presence_count`, `presence_mode`). */
export function isCountMessage(msg) {
  return msg.type === "presence_count" || msg.type === "presence_mode";
}

/**
 * Apply a `presence_count` or `presence_mode` to a channel whose list is `members`
 * (or null). Returns {count, mode, left}: the member count, the new mode (a
 * `presence_mode`; else null) and, when the list is dropped (`presence_mode`), every
 * user it had with reason null, as the Python client's `PresenceView.apply()`.
 */
export function followCount(members, msg) {
  const left = {};
  if (msg.type === "presence_mode") for (const user of Object.keys(members || {})) left[user] = null;
  return { count: msg.count, mode: msg.type === "presence_mode" ? msg.mode : null, left };
}
