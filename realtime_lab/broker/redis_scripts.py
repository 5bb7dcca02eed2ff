"""The Lua scripts of the Redis broker (realtime_lab/broker/redis.py; docs/scaling.md).

Each runs atomically in Redis: presence changes (``CHANGE``), a node's resync
(``SYNC``, answering the live nodes), heartbeat and reaping (``BEAT``, answering
whether this node was still alive, how many it reaped and the live nodes), a
clean withdrawal (``WITHDRAW``),
and a history channel's publish (``HPUB``) and read (``HREAD``).
"""

_CHANGE_FN = """
local function change(ns, node, ch, user, delta, origin, info, reason, changed)
  local pn = ns .. ':pn:' .. node
  local f = ch .. '\\n' .. user
  local pc = ns .. ':pc:' .. ch
  local pi = ns .. ':pi:' .. ch
  local cur = tonumber(redis.call('HGET', pn, f) or '0')
  local new = cur + delta
  if new < 0 then new = 0 end
  local eff = new - cur
  local before, after
  if eff == 0 then
    if delta ~= 0 or info == nil or info == '' then return 0 end
    before = tonumber(redis.call('HGET', pc, user) or '0')
    if before <= 0 or redis.call('HGET', pi, user) == info then return 0 end
    redis.call('HSET', pi, user, info)
    after = before
  else
    if new > 0 then redis.call('HSET', pn, f, new) else redis.call('HDEL', pn, f) end
    before = tonumber(redis.call('HGET', pc, user) or '0')
    after = before + eff
    if after > 0 then
      redis.call('HSET', pc, user, after)
      redis.call('SADD', ns .. ':chans', ch)
      if info ~= nil and info ~= '' then redis.call('HSET', pi, user, info) end
    else
      after = 0
      redis.call('HDEL', pc, user)
      redis.call('HDEL', pi, user)
      if redis.call('EXISTS', pc) == 0 then redis.call('SREM', ns .. ':chans', ch) end
    end
  end
  local v = redis.call('INCR', ns .. ':pv:' .. ch)
  local e = 'count'
  if before <= 0 and after > 0 then e = 'join' elseif before > 0 and after <= 0 then e = 'leave'
  elseif before == after then e = 'update' end
  local ev = {u = user, n = after, v = v, e = e}
  if after > 0 then
    local have = redis.call('HGET', pi, user)
    if have then ev['i'] = have end
  end
  if reason ~= nil and reason ~= '' then ev['r'] = reason end
  if e == 'update' and changed ~= nil and changed ~= '' then ev['c'] = changed end
  local head = origin .. '\\n0\\np\\n' .. ch .. '\\n'
  redis.call('PUBLISH', ns .. ':ch:' .. ch, head .. cjson.encode(ev))
  return 1
end

local function withdraw(ns, node)
  local have = redis.call('HGETALL', ns .. ':pn:' .. node)
  for i = 1, #have, 2 do
    local f = have[i]
    local sep = string.find(f, '\\n', 1, true)
    local n = -tonumber(have[i + 1])
    change(ns, node, string.sub(f, 1, sep - 1), string.sub(f, sep + 1), n, node)
  end
  redis.call('DEL', ns .. ':pn:' .. node)
  redis.call('SREM', ns .. ':nodes', node)
end

local function live(ns)
  local out = {}
  for _, node in ipairs(redis.call('SMEMBERS', ns .. ':nodes')) do
    if redis.call('EXISTS', ns .. ':node:' .. node) == 1 then out[#out + 1] = node end
  end
  return out
end
"""

CHANGE = _CHANGE_FN + """
return change(ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[2], ARGV[6], ARGV[7],
              ARGV[8])
"""

SYNC = _CHANGE_FN + """
local ns, node, ttl = ARGV[1], ARGV[2], ARGV[3]
local want = {}
for i = 4, #ARGV, 4 do
  want[ARGV[i] .. '\\n' .. ARGV[i + 1]] = {ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]),
                                          ARGV[i + 3]}
end
local pn = ns .. ':pn:' .. node
local have = redis.call('HGETALL', pn)
for i = 1, #have, 2 do
  local f = have[i]
  if not want[f] then
    local sep = string.find(f, '\\n', 1, true)
    local n = -tonumber(have[i + 1])
    change(ns, node, string.sub(f, 1, sep - 1), string.sub(f, sep + 1), n, node)
  end
end
for f, w in pairs(want) do
  local cur = tonumber(redis.call('HGET', pn, f) or '0')
  if cur ~= w[3] then change(ns, node, w[1], w[2], w[3] - cur, node, w[4]) end
  if w[4] ~= '' and redis.call('HEXISTS', ns .. ':pi:' .. w[1], w[2]) == 0 then
    redis.call('HSET', ns .. ':pi:' .. w[1], w[2], w[4])  -- Redis came back without it
  end
end
redis.call('SET', ns .. ':node:' .. node, '1', 'PX', ttl)
redis.call('SADD', ns .. ':nodes', node)
return live(ns)
"""

BEAT = _CHANGE_FN + """
local ns, node, ttl = ARGV[1], ARGV[2], ARGV[3]
local alive = redis.call('EXISTS', ns .. ':node:' .. node)
redis.call('SET', ns .. ':node:' .. node, '1', 'PX', ttl)
redis.call('SADD', ns .. ':nodes', node)
local reaped = 0
for _, other in ipairs(redis.call('SMEMBERS', ns .. ':nodes')) do
  if redis.call('EXISTS', ns .. ':node:' .. other) == 0 then
    withdraw(ns, other)
    reaped = reaped + 1
  end
end
return {alive, reaped, live(ns)}
"""

WITHDRAW = _CHANGE_FN + """
withdraw(ARGV[1], ARGV[2])
redis.call('DEL', ARGV[1] .. ':node:' .. ARGV[2])
return 1
"""

HPUB = """
local ns, node, ch, text = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local size, ttl, cand, excl = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8]
local meta = ns .. ':hm:' .. ch
redis.call('HSETNX', meta, 'e', cand)
local e = redis.call('HGET', meta, 'e')
local o = redis.call('HINCRBY', meta, 'o', 1)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local full = string.sub(text, 1, -2) .. ',"offset":' .. o .. ',"epoch":"' .. e .. '"}'
local lk = ns .. ':hl:' .. ch
redis.call('RPUSH', lk, string.format('%d', now) .. '\\n' .. full)
redis.call('LTRIM', lk, -size, -1)
if ttl > 0 then redis.call('PEXPIRE', lk, ttl) end
redis.call('PUBLISH', ns .. ':ch:' .. ch,
           node .. '\\n' .. o .. '\\nh\\n' .. ch .. '\\n' .. e .. '\\n' .. excl .. '\\n' .. full)
return o
"""

HREAD = """
local ns, ch, since, cand = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local meta = ns .. ':hm:' .. ch
redis.call('HSETNX', meta, 'e', cand)
local e = redis.call('HGET', meta, 'e')
local o = tonumber(redis.call('HGET', meta, 'o') or '0')
local lk = ns .. ':hl:' .. ch
local len = redis.call('LLEN', lk)
local first = o - len + 1
local items = {}
if since >= 0 then
  local start = since + 1 - first
  if start < 0 then start = 0 end
  if start < len then items = redis.call('LRANGE', lk, start, -1) end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {e, o, first, now, items}
"""
