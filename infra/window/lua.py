"""The Lua scripts of the monitor windows (infra/window/store.py): one atomic apply of a language's batch and one
consistent snapshot read. ``LUA_OLDER`` (byte order of version strings) is shared with the codebook pointer."""

# KEYS: window, counts, offsets, recent, meta, quality, ids
# ARGV: version, window_size, n_buckets, recent_max, recent_ttl_s, n_items, lineage, then the items packed into
#       six strings (a few long arguments instead of 5 per item: redis-py packs each argument in Python):
#       positions ("topic:partition", "\n"-joined), per item: position index (1-based), offset, bucket
#       (","-joined each), recent entries (JSON, "\n"-joined; JSON never holds a raw newline), quality
#       (","-joined repr of the float, "-" for none); then QUALITY_MAX, the dedup horizon (ms, 0 = off), now (ms)
#       and the ids (a JSON array; "" when the horizon is 0), then the sampling rate the batch was kept at ("": not
#       recorded; compass/sampling.py), stored in meta ``sampling_rate`` when the batch applied something
# Version strings compared in Lua, as bytes: shared by the window script and the codebook pointer script.
LUA_OLDER = r"""
-- byte order, not Lua's `<` (strcoll: redis-server sets LC_COLLATE from its environment)
local function older(a, b)  -- a sorts before b
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
"""

# Returns {applied, duplicates, evicted, reset} or {-1, window_version} when the lineage is older.
APPLY_LUA = LUA_OLDER + r"""
local version, wsize, nb = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local rmax, rttl, n, lineage = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local function split(s, pattern)
  local t = {}
  for x in string.gmatch(s, pattern) do t[#t + 1] = x end
  return t
end
local positions = split(ARGV[8], '[^\n]+')
local pidx, offs, buckets = split(ARGV[9], '[^,]+'), split(ARGV[10], '[^,]+'), split(ARGV[11], '[^,]+')
local ents = split(ARGV[12], '[^\n]+')
local quals, qmax = split(ARGV[13], '[^,]+'), tonumber(ARGV[14])
local horizon, now = tonumber(ARGV[15]), tonumber(ARGV[16])
local ids = {}
if horizon > 0 then ids = cjson.decode(ARGV[17]) end
if #pidx ~= n or #offs ~= n or #buckets ~= n or #ents ~= n or #quals ~= n or (horizon > 0 and #ids ~= n) then
  return redis.error_reply('malformed item arguments: expected ' .. n .. ' items')
end


local meta = redis.call('HMGET', KEYS[5], 'codebook_version', 'lineage', 'n_buckets')
local stored, stored_lineage, stored_nb = meta[1], meta[2], meta[3]
if stored_lineage and older(lineage, stored_lineage) then
  return {-1, stored}
end
if stored_lineage == lineage and tonumber(stored_nb) ~= nb then
  return redis.error_reply('codebook lineage ' .. lineage .. ' has n_buckets ' .. stored_nb ..
    ' in the window but ' .. nb .. ' was given; all revisions of a codebook must keep its bucket count')
end
local reset = (stored_lineage ~= lineage)

-- last applied offset per partition: strings kept verbatim (Lua prints large numbers in %.14g)
local last_num, last_str, changed = {}, {}, {}
if #positions > 0 then
  local got = redis.call('HMGET', KEYS[3], unpack(positions))
  for j, p in ipairs(positions) do
    if got[j] then last_num[p] = tonumber(got[j]); last_str[p] = got[j] end
  end
end

local new, entries, scores, dups, resent, fresh, batch_ids = {}, {}, {}, 0, 0, {}, {}
local function seen_recently(id)
  if batch_ids[id] then return true end
  local t = redis.call('ZSCORE', KEYS[7], id)
  return t and tonumber(t) > now - horizon
end
for i = 1, n do
  local p, off_s = positions[tonumber(pidx[i])], offs[i]
  local off = tonumber(off_s)
  if last_num[p] and off <= last_num[p] then
    dups = dups + 1
  elseif horizon > 0 and seen_recently(ids[i]) then
    -- the same event sent again at a new offset: skipped, but its offset is consumed
    dups = dups + 1; resent = resent + 1
    last_num[p] = off; last_str[p] = off_s; changed[p] = true
  else
    if horizon > 0 then batch_ids[ids[i]] = true; fresh[#fresh + 1] = ids[i] end
    last_num[p] = off; last_str[p] = off_s; changed[p] = true
    new[#new + 1] = buckets[i]
    entries[#entries + 1] = ents[i]
    if quals[i] ~= '-' then scores[#scores + 1] = quals[i] end
  end
end

-- the evicted are the first `excess` of (old window ++ new)
local oldlen = 0
if not reset then oldlen = redis.call('LLEN', KEYS[1]) end
local excess = oldlen + #new - wsize
local delta = {}
for _, b in ipairs(new) do delta[b] = (delta[b] or 0) + 1 end
local evicted = 0
if excess > 0 then
  evicted = excess
  local from_old = math.min(excess, oldlen)
  if from_old > 0 then
    for _, b in ipairs(redis.call('LRANGE', KEYS[1], 0, from_old - 1)) do delta[b] = (delta[b] or 0) - 1 end
  end
  for i = 1, excess - from_old do delta[new[i]] = delta[new[i]] - 1 end
end
if not reset then
  for b, d in pairs(delta) do
    if d < 0 and (tonumber(redis.call('HGET', KEYS[2], b)) or 0) + d < 0 then
      return redis.error_reply('counts of bucket ' .. b .. ' disagree with the window list in ' .. KEYS[2] ..
        '; the state was changed outside compass: reset the language and rebuild (compass consume --rebuild)')
    end
  end
end

-- validated: write
if reset then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[5], 'codebook_version', version, 'lineage', lineage, 'n_buckets', nb)
elseif older(stored, version) then
  redis.call('HSET', KEYS[5], 'codebook_version', version)
end
for i = 1, #new, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(new, i, math.min(i + 999, #new)))
end
if excess > 0 then redis.call('LTRIM', KEYS[1], excess, -1) end
for b, d in pairs(delta) do
  if d ~= 0 and redis.call('HINCRBY', KEYS[2], b, d) == 0 then redis.call('HDEL', KEYS[2], b) end
end
for p, _ in pairs(changed) do redis.call('HSET', KEYS[3], p, last_str[p]) end
redis.call('HSET', KEYS[5], 'window_size', wsize)
if #new > 0 then
  -- a window written before `seen` existed: its items count as seen, so that seen >= LLEN holds from now on
  if redis.call('HEXISTS', KEYS[5], 'seen') == 0 then redis.call('HSET', KEYS[5], 'seen', oldlen) end
  redis.call('HINCRBY', KEYS[5], 'seen', #new)
  if ARGV[18] ~= '' then redis.call('HSET', KEYS[5], 'sampling_rate', ARGV[18]) end
end
if #entries > 0 then
  for i = 1, #entries, 1000 do
    redis.call('RPUSH', KEYS[4], unpack(entries, i, math.min(i + 999, #entries)))
  end
  redis.call('LTRIM', KEYS[4], -rmax, -1)
  redis.call('EXPIRE', KEYS[4], rttl)
end
if #scores > 0 then  -- only first deliveries: a re-delivered event's score is not fed to the detector twice
  for i = 1, #scores, 1000 do
    redis.call('RPUSH', KEYS[6], unpack(scores, i, math.min(i + 999, #scores)))
  end
  redis.call('LTRIM', KEYS[6], -qmax, -1)
end
if horizon > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', '(' .. (now - horizon))
  for i = 1, #fresh, 500 do
    local args = {}
    for j = i, math.min(i + 499, #fresh) do args[#args + 1] = now; args[#args + 1] = fresh[j] end
    redis.call('ZADD', KEYS[7], unpack(args))
  end
  if redis.call('EXISTS', KEYS[7]) == 1 then redis.call('PEXPIRE', KEYS[7], horizon) end
end
local r = 0
if reset then r = 1 end
return {#new, dups, evicted, r, resent}
"""

# KEYS: window, counts, offsets, meta; ARGV: since (the reader's cursor, or -1: no tail). One consistent read of a
# language: meta, counts, LLEN, offsets, seen, the tail (bucket ids applied after `since`, oldest first).
SNAPSHOT_LUA = r"""
local size, since = redis.call('LLEN', KEYS[1]), tonumber(ARGV[1])
local seen = tonumber(redis.call('HGET', KEYS[4], 'seen')) or size  -- no `seen` yet: a window of older code
local tail = {}
if since >= 0 then
  local k = seen - since
  if k < 0 or k > size then k = size end  -- a cursor past `seen`: the language was reset, all of it is new
  if k > 0 then tail = redis.call('LRANGE', KEYS[1], -k, -1) end
end
return {redis.call('HGETALL', KEYS[4]), redis.call('HGETALL', KEYS[2]), size, redis.call('HGETALL', KEYS[3]),
        seen, tail}
"""
