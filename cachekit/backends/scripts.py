"""The Lua scripts of the Redis stores, each documented with its KEYS, ARGV and reply."""

from __future__ import annotations

from typing import Final

# KEYS[1]: a key; ARGV[1]: the value it must still hold. Deletes the key only if it does.
# Returns 1 when deleted, else 0. Used for lock release and for damaged entries, so a value
# written by someone else in the meantime is never removed.
COMPARE_AND_DELETE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# Shared by STORE and PENDING: the variant cap. Expects `set_key` (the variant set of the
# base), `suffix` (this variant, '' for a base key), `cap`, `live(member)` (whether a
# recorded variant still has an entry) and `keep` (ms). Returns false when the base already
# has `cap` live variants and this one is new; variants whose entries are gone are trimmed
# first. Records the variant and extends the set's lifetime to cover it.
_VARIANT_CAP: Final = """
local function room_for_variant(set_key, suffix, cap, live, keep)
    if suffix == '' then
        return true
    end
    if redis.call('SISMEMBER', set_key, suffix) == 0 then
        if redis.call('SCARD', set_key) >= cap then
            for _, member in ipairs(redis.call('SMEMBERS', set_key)) do
                if not live(member) then
                    redis.call('SREM', set_key, member)
                end
            end
            if redis.call('SCARD', set_key) >= cap then
                return false
            end
        end
        redis.call('SADD', set_key, suffix)
    end
    if redis.call('PTTL', set_key) < keep then
        redis.call('PEXPIRE', set_key, keep)
    end
    return true
end
"""

# Shared by STORE and TAG_ADD: index `member` under the tag set `tag_key` (a sorted set
# scored by the member's expiry in server ms), keep the set as long as its longest member,
# and trim at most `limit` members that expired more than `slack` ms ago. Scores (rather
# than "does the entry still exist?") make trimming race-free: a fill that stores the entry
# again re-scores the member first, so a live entry's member is never trimmed.
_TAG_INDEX: Final = """
local function server_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function index_tag(tag_key, member, keep, now, slack, limit)
    redis.call('ZADD', tag_key, now + keep, member)
    redis.call('PEXPIRE', tag_key, keep, 'GT')
    redis.call('PEXPIRE', tag_key, keep, 'NX')
    local expired = redis.call('ZRANGEBYSCORE', tag_key, '-inf', now - slack, 'LIMIT', 0, limit)
    if #expired > 0 then
        redis.call('ZREM', tag_key, unpack(expired))
    end
end
"""

# The whole fill in one atomic step (one server: standalone or Sentinel-managed primary).
# KEYS[1]: the entry key; KEYS[2]: the variant set of its base key;
# KEYS[3], KEYS[4], ...: pairs of (tag index, tag purge marker), one pair per tag.
# ARGV[1]: encoded entry; ARGV[2]: lifetime in ms; ARGV[3]: the variant suffix ('' for a
# base key); ARGV[4]: most variants per base; ARGV[5]: the entry-key prefix of the base;
# ARGV[6]: the logical key (the tag index member); ARGV[7]: purges later than this (ms,
# the fill start minus the clock-skew margin) void the fill, '' to skip that check;
# ARGV[8]: trim slack in ms; ARGV[9]: most expired index members trimmed per tag.
# Returns 1 when stored, 0 when the variant cap refused it, -1 when one of its tags was
# purged after the fill began (nothing is written then).
STORE: Final = (
    _VARIANT_CAP
    + _TAG_INDEX
    + """
if ARGV[7] ~= '' then
    local since = tonumber(ARGV[7])
    for i = 4, #KEYS, 2 do
        local purged = redis.call('GET', KEYS[i])
        if purged and tonumber(purged) > since then
            return -1
        end
    end
end
local keep = tonumber(ARGV[2])
local function live(member)
    return redis.call('EXISTS', ARGV[5] .. member) == 1
end
if not room_for_variant(KEYS[2], ARGV[3], tonumber(ARGV[4]), live, keep) then
    return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', keep)
if #KEYS > 2 then
    local now = server_ms()
    for i = 3, #KEYS, 2 do
        index_tag(KEYS[i], ARGV[6], keep, now, tonumber(ARGV[8]), tonumber(ARGV[9]))
    end
end
return 1
"""
)

# Cluster fill, step 1 of 3 (the entry's slot): park the encoded entry under a pending key
# that readers never look at, so it cannot be served before its tags are checked.
# KEYS[1]: the pending key; KEYS[2]: the variant set of the base key.
# ARGV[1]: fill token followed by the encoded entry; ARGV[2]: pending lifetime in ms;
# ARGV[3]: variant suffix ('' for a base key); ARGV[4]: most variants per base;
# ARGV[5]: entry-key prefix of the base; ARGV[6]: pending-key prefix of the base;
# ARGV[7]: the entry's lifetime in ms.
# Returns 1 when parked, 0 when the variant cap refused it. A variant counts as live while
# its entry or a pending fill of it exists.
PENDING: Final = (
    _VARIANT_CAP
    + """
local function live(member)
    return redis.call('EXISTS', ARGV[5] .. member, ARGV[6] .. member) > 0
end
if not room_for_variant(KEYS[2], ARGV[3], tonumber(ARGV[4]), live, tonumber(ARGV[7])) then
    return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
)

# Cluster fill, step 2 of 3 (one call per tag, in the tag's slot): check the tag's purge
# marker and index the entry, atomically.
# KEYS[1]: the tag index; KEYS[2]: the tag's purge marker (same hash tag, same slot).
# ARGV[1]: the logical key; ARGV[2]: the entry's lifetime in ms; ARGV[3]: purges later than
# this (ms) void the fill, '' to skip that check; ARGV[4]: trim slack in ms; ARGV[5]: trim
# limit. Returns 1 when indexed, 0 when the tag was purged after the fill began.
TAG_ADD: Final = (
    _TAG_INDEX
    + """
if ARGV[3] ~= '' then
    local purged = redis.call('GET', KEYS[2])
    if purged and tonumber(purged) > tonumber(ARGV[3]) then
        return 0
    end
end
index_tag(KEYS[1], ARGV[1], tonumber(ARGV[2]), server_ms(), tonumber(ARGV[4]), tonumber(ARGV[5]))
return 1
"""
)

# Cluster fill, step 3 of 3 (the entry's slot): publish the parked entry if the pending key
# still holds this fill's token, or just drop it. A purge that found the entry in a tag
# index deletes the pending key too, so a fill it overtook cannot publish afterwards.
# KEYS[1]: the pending key; KEYS[2]: the entry key. ARGV[1]: the fill token;
# ARGV[2]: the entry's lifetime in ms; ARGV[3]: '1' to publish, '0' to drop.
# Returns 1 when published, 0 when dropped, gone, or parked by another fill (untouched).
PROMOTE: Final = """
local parked = redis.call('GET', KEYS[1])
if not parked or string.sub(parked, 1, #ARGV[1]) ~= ARGV[1] then
    return 0
end
redis.call('DEL', KEYS[1])
if ARGV[3] ~= '1' then
    return 0
end
redis.call('SET', KEYS[2], string.sub(parked, #ARGV[1] + 1), 'PX', ARGV[2])
return 1
"""
