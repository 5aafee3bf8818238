//! The Lua scripts of the Redis store. Each runs atomically in Redis. Lua numbers are
//! doubles: inputs stay within [`crate::store::MAX_BALANCE`], every number written
//! goes through `string.format('%.0f')`, and `HINCRBY` gets the decimal strings the
//! server sent, so every amount is an exact integer.

/// Books usage, then grants or releases; see [`crate::store::Store::lease`]. `KEYS`:
/// the key, the lease, the bucket's live leases and its usage log (one hash tag).
/// Returns `{granted, held, credits, revoked, ended, applied}` (`applied` is absent
/// for a checkpoint seen before).
pub(super) const LEASE_LUA: &str = r#"
local key, lease, leases = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', key) == 0 then return redis.error_reply('NOKEY') end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_id, owner = ARGV[1], ARGV[2]
local seq, want, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local up, down, conns, release = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9] == '1'
local min_lease = tonumber(ARGV[10])
local function num(h, f) return tonumber(redis.call('HGET', h, f) or '0') end
local function int(n) return string.format('%.0f', n) end
local status = redis.call('HGET', lease, 'status')
local revoked = num(key, 'revoked')
if status and seq <= num(lease, 'seq') then
  return {num(lease, 'granted'), num(lease, 'amount'), num(key, 'credits'), revoked, status == 'ended' and 1 or 0}
end
local ended = status == 'ended'
local amount = 0
if status == 'live' then amount = num(lease, 'amount') end
local spent = up + down
local from_lease = math.min(spent, amount)
amount = amount - from_lease
local credits = num(key, 'credits')
local leased = num(key, 'leased') - from_lease
local rest = spent - from_lease
local charged = math.min(rest, credits)
credits = credits - charged
if rest > charged then redis.call('HINCRBY', key, 'overdraft', int(rest - charged)) end
redis.call('HINCRBY', key, 'bytes_up', ARGV[6])
redis.call('HINCRBY', key, 'bytes_down', ARGV[7])
redis.call('HINCRBY', key, 'connections', ARGV[8])
local log, max_len = ARGV[12] == '1', ARGV[13]
local minute = math.floor(now / 60000)
if log then
  for j = 14, #ARGV - 3, 4 do
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', max_len, '*', 'owner', owner, 'lease', lease_id,
      'seq', ARGV[3], 'node', ARGV[j], 'key', ARGV[11], 'minute', minute,
      'up', ARGV[j + 1], 'down', ARGV[j + 2], 'conns', ARGV[j + 3])
  end
end
local granted = 0
local new_status = 'live'
if release or ended then
  credits = credits + amount
  leased = leased - amount
  amount = 0
  new_status = 'ended'
  redis.call('ZREM', leases, lease_id)
else
  if revoked == 0 then
    granted = math.min(want, credits, math.max(math.floor(credits / 4), min_lease))
  end
  credits = credits - granted
  leased = leased + granted
  amount = amount + granted
  redis.call('ZADD', leases, now + ttl, lease_id)
end
if leased < 0 then leased = 0 end
redis.call('HSET', key, 'credits', int(credits), 'leased', int(leased))
redis.call('HSET', lease, 'key', ARGV[11], 'owner', owner, 'amount', int(amount), 'seq', int(seq),
  'granted', int(granted), 'status', new_status, 'expires', int(now + ttl))
redis.call('PEXPIRE', lease, ttl + 3600000)
return {granted, amount, credits, revoked, ended and 1 or 0, 1}
"#;

/// Ends bucket `KEYS[1]`'s live leases whose expiry passed; returns how many. The lease
/// and key hashes it derives from `ARGV[1]`, the bucket's hash-tagged prefix, share the
/// bucket's slot.
pub(super) const RECLAIM_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(ids) do
  local lease = ARGV[1] .. ':lease:' .. id
  if redis.call('HGET', lease, 'status') == 'live' then
    local amount = tonumber(redis.call('HGET', lease, 'amount') or '0')
    local key = ARGV[1] .. ':key:' .. (redis.call('HGET', lease, 'key') or '')
    if amount > 0 and redis.call('EXISTS', key) == 1 then
      redis.call('HINCRBY', key, 'credits', string.format('%.0f', amount))
      redis.call('HINCRBY', key, 'leased', string.format('%.0f', -amount))
    end
    redis.call('HSET', lease, 'amount', 0, 'status', 'ended')
  end
  redis.call('ZREM', KEYS[1], id)
end
return #ids
"#;

/// Adds `ARGV[1]` credits to an existing key unless its balance (credits + leased)
/// would pass `ARGV[2]`; returns the new credits, -1 when there is no key, -2 when the
/// balance would pass the maximum (nothing changes). `ARGV[1]` is at most the maximum,
/// so the double sum compares exactly against it.
pub(super) const TOP_UP_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local function num(f) return tonumber(redis.call('HGET', KEYS[1], f) or '0') end
if num('credits') + num('leased') + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return -2 end
return redis.call('HINCRBY', KEYS[1], 'credits', ARGV[1])
"#;

/// Adds credits once per operation: the operation is a field of the key's own hash
/// (`op:…`, so the key and its marker share a cluster slot). -1: no such key; -2: over
/// the maximum; -3: applied before.
pub(super) const TOP_UP_ONCE_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 1 then return -3 end
local function num(f) return tonumber(redis.call('HGET', KEYS[1], f) or '0') end
if num('credits') + num('leased') + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return -2 end
redis.call('HSET', KEYS[1], ARGV[3], '1')
return redis.call('HINCRBY', KEYS[1], 'credits', ARGV[1])
"#;

/// Pins a session unless another live pin exists (compare-and-set on `ARGV[3]`);
/// returns the pinned node.
pub(super) const SESSION_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[3] then return cur end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"#;

/// Sets one field of an existing node identity; -1 when the node does not exist.
pub(super) const SET_NODE_FIELD_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"#;

/// Adds `ARGV[1]` to field `bytes_carried` of node hash `KEYS[1]` if the node exists.
pub(super) const NODE_CARRIED_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HINCRBY', KEYS[1], 'bytes_carried', ARGV[1])
"#;
