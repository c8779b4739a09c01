"""The Lua scripts that make budget and rate-limit updates atomic in Redis.

Each script's name carries a version (`budget_reserve_v1`) and starts its source, so its SHA
changes with the version: during a rolling deploy old and new replicas each run their own
version and never each other's. A change of behaviour gets a new version, never an edit in place.

Times come from Redis `TIME` (scripts replicate their effects, so this is allowed), so every
replica sees the same clock for lease expiry and bucket refill.

The budget scripts are idempotent per lease id: a script whose reply was lost (a timeout after
Redis ran it) is sent again, by redis-py's retry or by the ledger's settle queue, and the second
run must change nothing. A budget hash holds, per lease, `h:<id>` (the live hold) or, once the
lease has run out, `x:<id>` (the hold was released; a late settle may still record the cost).
A reserve that finds either field was already granted; a settle that finds neither was already
applied. `x:` markers are forgotten a day after the lease ran out.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BUDGET_RENEW", "BUDGET_RESERVE", "BUDGET_SETTLE", "BUDGET_USAGE", "RATE_TAKE", "Lua"]


@dataclass(frozen=True, slots=True)
class Lua:
    name: str
    source: str


def _script(name: str, body: str) -> Lua:
    return Lua(name, f"-- {name}\n{_PRELUDE}\n{body}")


_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local FORGET_MS = 24 * 3600 * 1000

-- Releases the holds of leases that ran out (a replica died or stalled), leaving an `x:`
-- marker that the lease zset forgets a day later. Bounded per call so no script runs long;
-- the next call continues.
local function release_expired(budget, leases, now)
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 256)
  if #expired == 0 then return end
  local freed = 0
  for _, id in ipairs(expired) do
    local held = redis.call('HGET', budget, 'h:' .. id)
    if held then
      freed = freed + tonumber(held)
      redis.call('HDEL', budget, 'h:' .. id)
      redis.call('HSET', budget, 'x:' .. id, 1)
      redis.call('ZADD', leases, now + FORGET_MS, id)
    else
      redis.call('HDEL', budget, 'x:' .. id)
      redis.call('ZREM', leases, id)
    end
  end
  if freed > 0 then redis.call('HINCRBY', budget, 'reserved', -freed) end
end

-- The limit in force: the Admin override when set, else the configured default (-1: none).
local function limit_in_force(limits, default_limit, default_soft)
  local v = redis.call('HMGET', limits, 'limit', 'soft')
  if v[1] then return tonumber(v[1]), v[2], 1 end
  return tonumber(default_limit), default_soft, 0
end

local function counters(budget)
  local v = redis.call('HMGET', budget, 'spent', 'reserved')
  return tonumber(v[1] or '0'), tonumber(v[2] or '0')
end
"""

# KEYS: budget hash, lease zset, limit hash.
# ARGV: lease id, amount, lease ms, default limit (-1: none), default soft threshold, expire-at.
# Returns {granted, spent, reserved, limit, soft, overridden}. A lease id already known was
# granted by an earlier run of this same reserve: granted again, nothing changes.
BUDGET_RESERVE = _script(
    "budget_reserve_v2",
    """
local now = now_ms()
release_expired(KEYS[1], KEYS[2], now)
local limit, soft, overridden = limit_in_force(KEYS[3], ARGV[4], ARGV[5])
local v = redis.call('HMGET', KEYS[1], 'spent', 'reserved', 'h:' .. ARGV[1], 'x:' .. ARGV[1])
local spent, reserved = tonumber(v[1] or '0'), tonumber(v[2] or '0')
if v[3] or v[4] then
  return {1, spent, reserved, limit, soft, overridden}
end
local amount = tonumber(ARGV[2])
if limit >= 0 and spent + reserved + amount > limit then
  return {0, spent, reserved, limit, soft, overridden}
end
redis.call('HSET', KEYS[1], 'h:' .. ARGV[1], amount)
reserved = redis.call('HINCRBY', KEYS[1], 'reserved', amount)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
-- Expiry is set when a key is created: the hash has neither counter before its first hold, and
-- the lease zset may have been (re)created only when no other hold was live.
if not v[1] and not v[2] then redis.call('EXPIREAT', KEYS[1], ARGV[6]) end
if reserved == amount then redis.call('EXPIREAT', KEYS[2], ARGV[6]) end
return {1, spent, reserved, limit, soft, overridden}
""",
)

# KEYS: budget hash, lease zset, limit hash.
# ARGV: lease id, actual cost, default limit, default soft threshold.
# Returns {outcome, spent, reserved, limit, soft, overridden, crossed_soft}; outcome 1: settled
# against its hold, 0: the lease had run out (the cost is recorded all the same), 2: this lease
# was settled before (a replay: nothing changes).
# Other leases' expiry is left to the next reserve: a hold whose lease ran out but is still
# recorded settles as held, which is as exact. The keys exist, with their expiry, since the
# reserve (nothing is written when they do not: outcome 2).
BUDGET_SETTLE = _script(
    "budget_settle_v2",
    """
local v = redis.call('HMGET', KEYS[1], 'spent', 'reserved', 'h:' .. ARGV[1], 'x:' .. ARGV[1])
local spent, reserved = tonumber(v[1] or '0'), tonumber(v[2] or '0')
local limit, soft, overridden = limit_in_force(KEYS[3], ARGV[3], ARGV[4])
local outcome = 2
if v[3] then
  outcome = 1
  redis.call('HDEL', KEYS[1], 'h:' .. ARGV[1])
  reserved = redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(v[3]))
elseif v[4] then
  outcome = 0
  redis.call('HDEL', KEYS[1], 'x:' .. ARGV[1])
else
  return {2, spent, reserved, limit, soft, overridden, 0}
end
redis.call('ZREM', KEYS[2], ARGV[1])
spent = redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
local crossed = 0
if limit > 0 and spent >= limit * tonumber(soft) then
  crossed = redis.call('HSETNX', KEYS[1], 'soft_alerted', 1)
end
return {outcome, spent, reserved, limit, soft, overridden, crossed}
""",
)

# KEYS: budget hash, lease zset. ARGV: lease ms, lease ids...
# Extends the leases still held; returns the ids of those no longer held.
BUDGET_RENEW = _script(
    "budget_renew_v2",
    """
local now = now_ms()
release_expired(KEYS[1], KEYS[2], now)
local expiry = now + tonumber(ARGV[1])
local gone = {}
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[1], 'h:' .. ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[2], expiry, ARGV[i])
  else
    table.insert(gone, ARGV[i])
  end
end
return gone
""",
)

# KEYS: budget hash, lease zset, limit hash. ARGV: default limit, default soft threshold.
# Returns {spent, reserved, limit, soft, overridden}.
BUDGET_USAGE = _script(
    "budget_usage_v2",
    """
release_expired(KEYS[1], KEYS[2], now_ms())
local spent, reserved = counters(KEYS[1])
local limit, soft, overridden = limit_in_force(KEYS[3], ARGV[1], ARGV[2])
return {spent, reserved, limit, soft, overridden}
""",
)

# Two token buckets per app, each refilling evenly to its per-minute capacity. A limit of 0
# leaves its bucket untouched (an app without that limit, or a charge of the other kind).
# KEYS: rate hash. ARGV: requests/min, tokens/min (0: none), requests, tokens, force (1/0).
# Returns {allowed, limited_by, retry_after_ms}.
RATE_TAKE = _script(
    "ratelimit_take_v1",
    """
local now = now_ms()
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local need_r, need_t = tonumber(ARGV[3]), tonumber(ARGV[4])
local s = redis.call('HMGET', KEYS[1], 'r', 'r_at', 't', 't_at')
local function level(stored, at, cap)
  if cap <= 0 then return 0 end
  local elapsed = math.max(0, now - (tonumber(at) or now))
  return math.min(cap, (tonumber(stored) or cap) + elapsed * cap / 60000)
end
local r, t = level(s[1], s[2], rpm), level(s[3], s[4], tpm)
if ARGV[5] ~= '1' then
  if rpm > 0 and r < need_r then
    return {0, 'requests', math.ceil((need_r - r) * 60000 / rpm)}
  end
  local wanted = math.min(need_t, tpm)
  if tpm > 0 and t < wanted then
    return {0, 'tokens', math.ceil((wanted - t) * 60000 / tpm)}
  end
end
if rpm > 0 then
  redis.call('HSET', KEYS[1], 'r', string.format('%.4f', r - need_r), 'r_at', now)
end
if tpm > 0 then
  redis.call('HSET', KEYS[1], 't', string.format('%.4f', math.max(t - need_t, -tpm)), 't_at', now)
end
redis.call('PEXPIRE', KEYS[1], 120000)
return {1, '', 0}
""",
)
