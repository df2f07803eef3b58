"""The Lua scripts of ``RedisSpendGate``: one per operation, each atomic in Redis.

Per budget window three keys: ``bu:<budget>:<window>`` (a hash: ``s`` spent, ``r`` reserved),
``bz:...`` (a sorted set of the hold ids held there, by expiry) and ``ba:...`` (a hash of their
amounts). Per hold a hash ``bh:<id>`` (``st`` status, ``a`` amount, ``w`` windows as JSON, ``e``
expiry, ``sf`` soft budgets as indices into ``w``) and its id in the sorted set ``bexp``, by
expiry. KEYS are the hold's hash then the three keys of each window, in order.

A script that finds a window's counters missing (a new window, a restarted or flushed Redis)
answers ``seed`` with their indices and changes nothing: the gate seeds them from the store and
runs the script again. Numbers go back as strings (Lua numbers would be truncated to integers).
"""

from __future__ import annotations

__all__ = ["COMMIT", "RESERVE", "SEED", "SETTLE"]

_MISSING = """
local n = (#KEYS - 1) / 3
local missing = {}
for i = 1, n do
  if redis.call('EXISTS', KEYS[3 * i - 1]) == 0 then missing[#missing + 1] = tostring(i) end
end
if #missing > 0 then
  table.insert(missing, 1, 'seed')
  return missing
end
"""

_TOUCH = """
local function touch(i, ttl)
  for j = 3 * i - 1, 3 * i + 1 do redis.call('EXPIRE', KEYS[j], ttl) end
end
local function give_back(i, id)
  local amt = redis.call('HGET', KEYS[3 * i + 1], id)
  if amt then
    redis.call('HINCRBYFLOAT', KEYS[3 * i - 1], 'r', -tonumber(amt))
    redis.call('HDEL', KEYS[3 * i + 1], id)
    -- nothing held any more: exactly zero (no rounding residue left behind)
    if redis.call('HLEN', KEYS[3 * i + 1]) == 0 then
      redis.call('HSET', KEYS[3 * i - 1], 'r', '0')
    end
  end
  redis.call('ZREM', KEYS[3 * i], id)
end
"""

RESERVE = (
    """
-- ARGV: id, amount, now, expires_at, hold_ttl, counter_ttl, windows_json, key_prefix,
--       then limit_i, hard_i for each window
local hk, id, amount = KEYS[1], ARGV[1], tonumber(ARGV[2])
if redis.call('EXISTS', hk) == 1 then
  local v = redis.call('HMGET', hk, 'a', 'w', 'e', 'sf')
  return {'dup', v[1], v[2], v[3], v[4] or ''}
end
"""
    + _MISSING
    + _TOUCH
    + """
for i = 1, n do
  local old = redis.call('ZRANGEBYSCORE', KEYS[3 * i], '-inf', '(' .. ARGV[3])
  for _, hid in ipairs(old) do
    give_back(i, hid)
    local rk = ARGV[8] .. 'bh:' .. hid
    if redis.call('HGET', rk, 'st') == 'held' then redis.call('HSET', rk, 'st', 'expired') end
  end
end
local soft = {}
for i = 1, n do
  local v = redis.call('HMGET', KEYS[3 * i - 1], 's', 'r')
  local s, r = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  if s + r + amount > tonumber(ARGV[7 + 2 * i]) + 1e-9 then
    if ARGV[8 + 2 * i] == '1' then
      return {'over', tostring(i), tostring(s), tostring(math.max(r, 0))}
    end
    soft[#soft + 1] = tostring(i)
  end
end
for i = 1, n do
  redis.call('HINCRBYFLOAT', KEYS[3 * i - 1], 'r', ARGV[2])
  redis.call('ZADD', KEYS[3 * i], ARGV[4], id)
  redis.call('HSET', KEYS[3 * i + 1], id, ARGV[2])
  touch(i, ARGV[6])
end
local sf = table.concat(soft, ',')
redis.call('HSET', hk, 'st', 'held', 'a', ARGV[2], 'w', ARGV[7], 'e', ARGV[4], 'sf', sf)
redis.call('EXPIRE', hk, ARGV[5])
redis.call('ZADD', ARGV[8] .. 'bexp', ARGV[4], id)
return {'ok', sf}
"""
)

COMMIT = (
    """
-- ARGV: id, cost, hold_ttl, counter_ttl, windows_json, amount, expires_at, key_prefix, and
-- for a call served from a lease (``_leases``) the lease's id: then the call has no hold of its
-- own, and the lease shrinks by the cost instead (what it no longer needs to cover).
local hk, id, lease = KEYS[1], ARGV[1], ARGV[9]
local st = redis.call('HGET', hk, 'st')
if st == 'committed' or st == 'released' then return {'noop'} end
"""
    + _MISSING
    + _TOUCH
    + """
local out = {'ok', st or 'missing'}
for i = 1, n do
  if lease then
    local left = redis.call('HGET', KEYS[3 * i + 1], lease)
    if left then
      local take = math.min(tonumber(left), tonumber(ARGV[2]))
      redis.call('HINCRBYFLOAT', KEYS[3 * i - 1], 'r', -take)
      redis.call('HINCRBYFLOAT', KEYS[3 * i + 1], lease, -take)
    end
  else
    give_back(i, id)
  end
  local before = redis.call('HGET', KEYS[3 * i - 1], 's') or '0'
  local after = redis.call('HINCRBYFLOAT', KEYS[3 * i - 1], 's', ARGV[2])
  out[#out + 1] = before
  out[#out + 1] = after
  touch(i, ARGV[4])
end
redis.call('HSET', hk, 'st', 'committed', 'c', ARGV[2], 'a', ARGV[6], 'w', ARGV[5], 'e', ARGV[7])
redis.call('EXPIRE', hk, ARGV[3])
redis.call('ZREM', ARGV[8] .. 'bexp', id)
return out
"""
)

SETTLE = (
    """
-- Release (ARGV[2] = 'released') or expire (ARGV[2] = 'expired', only if past ARGV[3]) a
-- held hold. ARGV: id, status, now, hold_ttl, key_prefix
local hk, id = KEYS[1], ARGV[1]
local v = redis.call('HMGET', hk, 'st', 'e')
if v[1] ~= 'held' then
  if not v[1] and ARGV[2] == 'released' then
    redis.call('HSET', hk, 'st', 'released')
    redis.call('EXPIRE', hk, ARGV[4])
  end
  redis.call('ZREM', ARGV[5] .. 'bexp', id)
  return {'noop'}
end
if ARGV[2] == 'expired' and tonumber(v[2]) >= tonumber(ARGV[3]) then return {'noop'} end
"""
    + _TOUCH.replace("local function touch", "local function _touch")
    + """
local n = (#KEYS - 1) / 3
for i = 1, n do give_back(i, id) end
redis.call('HSET', hk, 'st', ARGV[2])
redis.call('ZREM', ARGV[5] .. 'bexp', id)
return {'ok'}
"""
)

SEED = """
-- ARGV: counter_ttl, then spent_i for each usage hash in KEYS
for i = 1, #KEYS do
  redis.call('HSETNX', KEYS[i], 's', ARGV[i + 1])
  redis.call('HSETNX', KEYS[i], 'r', '0')
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return 'ok'
"""
