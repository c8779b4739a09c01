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
applied. `x:` markers are forgotten a day after the lease ran out. Spend a replica settled on
its local store during an outage is added once per charge id, marked `c:<id>`.

The request path sends two scripts per call: `ADMIT` at the request's arrival (its rate-limit
take and its budget hold, both or neither) and `BUDGET_SETTLE_CHARGE` after it (the settle and
the output tokens charged to the token bucket). The budget and bucket logic they share with the
single-purpose scripts lives in the prelude, once.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ADMIT",
    "BUDGET_ADD_SPENT",
    "BUDGET_RENEW",
    "BUDGET_RESERVE",
    "BUDGET_SETTLE",
    "BUDGET_SETTLE_CHARGE",
    "BUDGET_SHRINK",
    "BUDGET_USAGE",
    "RATE_TAKE",
    "Lua",
]


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

-- Whether a hold of `amount` under lease `id` may be granted. Returns a table: known (the
-- lease was granted before: grant it again, change nothing), fits, the counters and the limit
-- in force, and fresh (the budget hash has no counters yet).
local function check_hold(budget, leases, limits, id, amount, default_limit, default_soft, now)
  release_expired(budget, leases, now)
  local c = {}
  c.limit, c.soft, c.overridden = limit_in_force(limits, default_limit, default_soft)
  local v = redis.call('HMGET', budget, 'spent', 'reserved', 'h:' .. id, 'x:' .. id)
  c.spent, c.reserved = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  c.known = (v[3] or v[4]) and true or false
  c.fits = c.known or c.limit < 0 or c.spent + c.reserved + amount <= c.limit
  c.fresh = not v[1] and not v[2]
  return c
end

-- Takes a hold checked by `check_hold`; returns the reserved total after it.
local function take_hold(budget, leases, c, id, amount, lease_ms, expire_at, now)
  redis.call('HSET', budget, 'h:' .. id, amount)
  local reserved = redis.call('HINCRBY', budget, 'reserved', amount)
  redis.call('ZADD', leases, now + tonumber(lease_ms), id)
  -- Expiry is set when a key is created: the hash has neither counter before its first hold,
  -- and the lease zset may have been (re)created only when no other hold was live.
  if c.fresh then redis.call('EXPIREAT', budget, expire_at) end
  if reserved == amount then redis.call('EXPIREAT', leases, expire_at) end
  return reserved
end

-- Releases the lease's hold and adds the actual cost to the spend. Returns {outcome, spent,
-- reserved, limit, soft, overridden, crossed_soft}; outcome 1: settled against its hold, 0: the
-- lease had run out (the cost is recorded all the same), 2: this lease was settled before (a
-- replay: nothing changes). Other leases' expiry is left to the next reserve: a hold whose lease
-- ran out but is still recorded settles as held, which is as exact. The keys exist, with their
-- expiry, since the reserve (nothing is written when they do not: outcome 2).
local function settle_hold(budget, leases, limits, id, actual, default_limit, default_soft)
  local v = redis.call('HMGET', budget, 'spent', 'reserved', 'h:' .. id, 'x:' .. id)
  local spent, reserved = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  local limit, soft, overridden = limit_in_force(limits, default_limit, default_soft)
  local outcome = 2
  if v[3] then
    outcome = 1
    redis.call('HDEL', budget, 'h:' .. id)
    reserved = redis.call('HINCRBY', budget, 'reserved', -tonumber(v[3]))
  elseif v[4] then
    outcome = 0
    redis.call('HDEL', budget, 'x:' .. id)
  else
    return {2, spent, reserved, limit, soft, overridden, 0}
  end
  redis.call('ZREM', leases, id)
  spent = redis.call('HINCRBY', budget, 'spent', actual)
  local crossed = 0
  if limit > 0 and spent >= limit * tonumber(soft) then
    crossed = redis.call('HSETNX', budget, 'soft_alerted', 1)
  end
  return {outcome, spent, reserved, limit, soft, overridden, crossed}
end

-- Two token buckets per app (rate limits), each refilling evenly to its per-minute capacity.
-- A limit of 0 leaves its bucket untouched (an app without that limit, or a charge of the
-- other kind). Returns the levels of the request and token buckets now.
local function bucket_levels(rate, rpm, tpm, now)
  if rpm <= 0 and tpm <= 0 then return 0, 0 end
  local s = redis.call('HMGET', rate, 'r', 'r_at', 't', 't_at')
  local function level(stored, at, cap)
    if cap <= 0 then return 0 end
    local elapsed = math.max(0, now - (tonumber(at) or now))
    return math.min(cap, (tonumber(stored) or cap) + elapsed * cap / 60000)
  end
  return level(s[1], s[2], rpm), level(s[3], s[4], tpm)
end

-- nil when the buckets hold what is needed, else {'requests' or 'tokens', retry-after ms}. A
-- request larger than the whole token bucket passes when the bucket is full.
local function rate_refusal(r, t, rpm, tpm, need_r, need_t)
  if rpm > 0 and r < need_r then
    return {'requests', math.ceil((need_r - r) * 60000 / rpm)}
  end
  local wanted = math.min(need_t, tpm)
  if tpm > 0 and t < wanted then
    return {'tokens', math.ceil((wanted - t) * 60000 / tpm)}
  end
  return nil
end

-- Takes from buckets at levels `r` and `t`; the token bucket goes at most a minute into debt.
local function take_buckets(rate, r, t, rpm, tpm, need_r, need_t, now)
  if rpm > 0 then
    redis.call('HSET', rate, 'r', string.format('%.4f', r - need_r), 'r_at', now)
  end
  if tpm > 0 then
    redis.call('HSET', rate, 't', string.format('%.4f', math.max(t - need_t, -tpm)), 't_at', now)
  end
  if rpm > 0 or tpm > 0 then redis.call('PEXPIRE', rate, 120000) end
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
local amount = tonumber(ARGV[2])
local c = check_hold(KEYS[1], KEYS[2], KEYS[3], ARGV[1], amount, ARGV[4], ARGV[5], now)
local reserved = c.reserved
if c.fits and not c.known then
  reserved = take_hold(KEYS[1], KEYS[2], c, ARGV[1], amount, ARGV[3], ARGV[6], now)
end
return {c.fits and 1 or 0, c.spent, reserved, c.limit, c.soft, c.overridden}
""",
)

# A request's admission: its rate-limit take and its budget hold, both or neither.
# KEYS: budget hash, lease zset, limit hash, rate hash.
# ARGV: lease id, amount, lease ms, default limit (-1: none), default soft threshold, expire-at,
# requests/min, tokens/min (0: none), requests, tokens.
# Returns {fits, spent, reserved, limit, soft, overridden, allowed, limited_by, retry_after_ms}.
# A lease id already known was granted (and its rate allowance taken) by an earlier run of this
# same script: granted again, nothing changes.
ADMIT = _script(
    "admit_v1",
    """
local now = now_ms()
local amount = tonumber(ARGV[2])
local c = check_hold(KEYS[1], KEYS[2], KEYS[3], ARGV[1], amount, ARGV[4], ARGV[5], now)
if c.known then
  return {1, c.spent, c.reserved, c.limit, c.soft, c.overridden, 1, '', 0}
end
local rpm, tpm = tonumber(ARGV[7]), tonumber(ARGV[8])
local need_r, need_t = tonumber(ARGV[9]), tonumber(ARGV[10])
local r, t = bucket_levels(KEYS[4], rpm, tpm, now)
local refused = rate_refusal(r, t, rpm, tpm, need_r, need_t)
if refused or not c.fits then
  local allowed, limited_by, retry_ms = 1, '', 0
  if refused then allowed, limited_by, retry_ms = 0, refused[1], refused[2] end
  return {c.fits and 1 or 0, c.spent, c.reserved, c.limit, c.soft, c.overridden,
          allowed, limited_by, retry_ms}
end
take_buckets(KEYS[4], r, t, rpm, tpm, need_r, need_t, now)
local reserved = take_hold(KEYS[1], KEYS[2], c, ARGV[1], amount, ARGV[3], ARGV[6], now)
return {1, c.spent, reserved, c.limit, c.soft, c.overridden, 1, '', 0}
""",
)

# KEYS: budget hash, lease zset, limit hash.
# ARGV: lease id, actual cost, default limit, default soft threshold.
# Returns what `settle_hold` returns.
BUDGET_SETTLE = _script(
    "budget_settle_v2",
    """
return settle_hold(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
""",
)

# A call's settle and its output tokens charged to the token bucket (into debt if need be);
# a replayed settle charges nothing.
# KEYS: budget hash, lease zset, limit hash, rate hash.
# ARGV: lease id, actual cost, default limit, default soft threshold, tokens/min, tokens.
# Returns what `settle_hold` returns.
BUDGET_SETTLE_CHARGE = _script(
    "budget_settle_charge_v1",
    """
local settled = settle_hold(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
if settled[1] ~= 2 then
  local now = now_ms()
  local tpm, tokens = tonumber(ARGV[5]), tonumber(ARGV[6])
  local _, t = bucket_levels(KEYS[4], 0, tpm, now)
  take_buckets(KEYS[4], 0, t, 0, tpm, 0, tokens, now)
end
return settled
""",
)

# Lowers a live hold to `amount` (a hold taken at an upper bound, once the call's own worst
# case is known). A hold already at or below it, settled or run out: nothing changes.
# KEYS: budget hash. ARGV: lease id, amount. Returns the amount freed.
BUDGET_SHRINK = _script(
    "budget_shrink_v1",
    """
local held = redis.call('HGET', KEYS[1], 'h:' .. ARGV[1])
local amount = tonumber(ARGV[2])
if not held or tonumber(held) <= amount then return 0 end
local freed = tonumber(held) - amount
redis.call('HSET', KEYS[1], 'h:' .. ARGV[1], amount)
redis.call('HINCRBY', KEYS[1], 'reserved', -freed)
return freed
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
# Spend settled elsewhere, added to the period's spend once per charge id: what a replica's
# calls cost on its local store while Redis was unreachable (`fail_open`), counted here once
# Redis is back. The `c:<id>` marker lives as long as the budget hash (to the end of its
# period).
# KEYS: budget hash, limit hash.
# ARGV: charge id, amount, default limit, default soft threshold, expire_at.
# Returns {added (1; 0: a repeat, nothing changed), spent, reserved, limit, soft, overridden}.
BUDGET_ADD_SPENT = _script(
    "budget_add_spent_v1",
    """
local budget = KEYS[1]
local fresh = redis.call('EXISTS', budget) == 0
local added = redis.call('HSETNX', budget, 'c:' .. ARGV[1], 1)
if added == 1 then
  redis.call('HINCRBY', budget, 'spent', tonumber(ARGV[2]))
  if fresh then redis.call('EXPIREAT', budget, ARGV[5]) end
end
local spent, reserved = counters(budget)
local limit, soft, overridden = limit_in_force(KEYS[2], ARGV[3], ARGV[4])
return {added, spent, reserved, limit, soft, overridden}
""",
)

BUDGET_USAGE = _script(
    "budget_usage_v2",
    """
release_expired(KEYS[1], KEYS[2], now_ms())
local spent, reserved = counters(KEYS[1])
local limit, soft, overridden = limit_in_force(KEYS[3], ARGV[1], ARGV[2])
return {spent, reserved, limit, soft, overridden}
""",
)

# KEYS: rate hash. ARGV: requests/min, tokens/min (0: none), requests, tokens, force (1/0).
# Returns {allowed, limited_by, retry_after_ms}.
RATE_TAKE = _script(
    "ratelimit_take_v1",
    """
local now = now_ms()
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local need_r, need_t = tonumber(ARGV[3]), tonumber(ARGV[4])
local r, t = bucket_levels(KEYS[1], rpm, tpm, now)
if ARGV[5] ~= '1' then
  local refused = rate_refusal(r, t, rpm, tpm, need_r, need_t)
  if refused then return {0, refused[1], refused[2]} end
end
take_buckets(KEYS[1], r, t, rpm, tpm, need_r, need_t, now)
return {1, '', 0}
""",
)
