"""The Lua scripts that make budget and rate-limit updates atomic in Redis.

Each script's name carries a version (`budget_reserve_v1`) and starts its source, so its SHA
changes with the version: during a rolling deploy old and new replicas each run their own
version and never each other's. A change of behaviour gets a new version, never an edit in place.

Times come from Redis `TIME` (scripts replicate their effects, so this is allowed), so every
replica sees the same clock for lease expiry and bucket refill.
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

-- Releases the holds of leases that ran out (a replica died or stalled). Bounded per call so
-- no script runs long; the next call continues.
local function release_expired(budget, leases, now)
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 256)
  if #expired == 0 then return end
  local freed = 0
  for _, id in ipairs(expired) do
    local field = 'h:' .. id
    freed = freed + tonumber(redis.call('HGET', budget, field) or '0')
    redis.call('HDEL', budget, field)
  end
  redis.call('ZREM', leases, unpack(expired))
  redis.call('HINCRBY', budget, 'reserved', -freed)
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
# Returns {granted, spent, reserved, limit, soft, overridden}.
BUDGET_RESERVE = _script(
    "budget_reserve_v1",
    """
local now = now_ms()
release_expired(KEYS[1], KEYS[2], now)
local limit, soft, overridden = limit_in_force(KEYS[3], ARGV[4], ARGV[5])
local spent, reserved = counters(KEYS[1])
local amount = tonumber(ARGV[2])
if limit >= 0 and spent + reserved + amount > limit then
  return {0, spent, reserved, limit, soft, overridden}
end
redis.call('HSET', KEYS[1], 'h:' .. ARGV[1], amount)
reserved = redis.call('HINCRBY', KEYS[1], 'reserved', amount)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[6])
redis.call('EXPIREAT', KEYS[2], ARGV[6])
return {1, spent, reserved, limit, soft, overridden}
""",
)

# KEYS: budget hash, lease zset, limit hash.
# ARGV: lease id, actual cost, default limit, default soft threshold, expire-at.
# Returns {lease_found, spent, reserved, limit, soft, overridden, crossed_soft}.
BUDGET_SETTLE = _script(
    "budget_settle_v1",
    """
local now = now_ms()
release_expired(KEYS[1], KEYS[2], now)
local field = 'h:' .. ARGV[1]
local held = redis.call('HGET', KEYS[1], field)
if held then
  redis.call('HDEL', KEYS[1], field)
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(held))
end
redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
local spent, reserved = counters(KEYS[1])
local limit, soft, overridden = limit_in_force(KEYS[3], ARGV[3], ARGV[4])
local crossed = 0
if limit > 0 and spent >= limit * tonumber(soft) then
  crossed = redis.call('HSETNX', KEYS[1], 'soft_alerted', 1)
end
redis.call('EXPIREAT', KEYS[1], ARGV[5])
redis.call('EXPIREAT', KEYS[2], ARGV[5])
return {held and 1 or 0, spent, reserved, limit, soft, overridden, crossed}
""",
)

# KEYS: budget hash, lease zset. ARGV: lease ms, lease ids...
# Extends the leases still held; returns the ids of those no longer held.
BUDGET_RENEW = _script(
    "budget_renew_v1",
    """
local now = now_ms()
release_expired(KEYS[1], KEYS[2], now)
local expiry = now + tonumber(ARGV[1])
local gone = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[2], ARGV[i]) then
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
    "budget_usage_v1",
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
