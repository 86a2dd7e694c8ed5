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

# A soft purge rewrites an entry only if nobody replaced it meanwhile; its expiry stays.
COMPARE_AND_SET: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
    return 1
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

# The whole fill in one atomic step (one server: standalone or Sentinel-managed primary),
# once its tag versions are recorded in the entry (PREPARE).
# KEYS[1]: the entry key; KEYS[2]: the variant set of its base key; KEYS[3], ...: the index
# of each tag. ARGV[1]: encoded entry; ARGV[2]: lifetime in ms; ARGV[3]: the variant suffix
# ('' for a base key); ARGV[4]: most variants per base; ARGV[5]: the entry-key prefix of the
# base; ARGV[6]: the logical key (the tag index member); ARGV[7]: trim slack in ms;
# ARGV[8]: most expired index members trimmed per tag.
# Returns 1 when stored, 0 when the variant cap refused it.
STORE: Final = (
    _VARIANT_CAP
    + _TAG_INDEX
    + """
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
    for i = 3, #KEYS do
        index_tag(KEYS[i], ARGV[6], keep, now, tonumber(ARGV[7]), tonumber(ARGV[8]))
    end
end
return 1
"""
)

# Shared by PREPARE and TAG_VERSIONS: the version of the tag whose version key is `key`,
# created as `fresh` when missing, and kept at least `keep` ms (the life of the entry about
# to record it: an entry never outlives the version it recorded).
_GET_OR_CREATE_VERSION: Final = """
local function version_of(key, fresh, keep)
    local version = redis.call('GET', key)
    if not version then
        redis.call('SET', key, fresh, 'PX', keep)
        return fresh
    end
    redis.call('PEXPIRE', key, keep, 'GT')
    redis.call('PEXPIRE', key, keep, 'NX')
    return version
end
"""

# A tagged fill, before its entry is encoded (one server): is the ticket its lookup read
# still current (no purge and no clear since), and what are its tags' versions?
# KEYS[1]: the ticket key (`ns:gen`); KEYS[2], ...: the version key of each tag.
# ARGV[1]: the ticket the lookup read (`G:P`); ARGV[2]: the entry's lifetime in ms;
# ARGV[3]: a fresh ticket, written when the key is missing; ARGV[4], ...: a fresh version
# per tag, written where the version key is missing.
# Returns the versions, one per tag, or nil when the ticket changed (or was missing; it
# is created then, so that the next fill can be stored).
PREPARE: Final = (
    _GET_OR_CREATE_VERSION
    + """
local ticket = redis.call('GET', KEYS[1])
if not ticket then
    redis.call('SET', KEYS[1], ARGV[3], 'NX')
    return false
end
if ticket ~= ARGV[1] and ticket .. ':0' ~= ARGV[1] then
    return false
end
local keep = tonumber(ARGV[2])
local versions = {}
for i = 2, #KEYS do
    versions[i - 1] = version_of(KEYS[i], ARGV[i + 2], keep)
end
return versions
"""
)

# Cluster form of PREPARE's version step, one call per tag (in the tag's slot).
# KEYS[1]: the version key; ARGV[1]: a fresh version; ARGV[2]: the entry's lifetime in ms.
# Returns the version.
TAG_VERSION: Final = (
    _GET_OR_CREATE_VERSION
    + """
return version_of(KEYS[1], ARGV[1], tonumber(ARGV[2]))
"""
)

# Cluster: index one tag of a stored entry (in the tag's slot; best effort, see redis.py).
# KEYS[1]: the tag index. ARGV[1]: the logical key; ARGV[2]: the entry's lifetime in ms;
# ARGV[3]: trim slack in ms; ARGV[4]: trim limit. Returns 1.
TAG_ADD: Final = (
    _TAG_INDEX
    + """
index_tag(KEYS[1], ARGV[1], tonumber(ARGV[2]), server_ms(), tonumber(ARGV[3]), tonumber(ARGV[4]))
return 1
"""
)

# A purge's mark on the ticket: a new P (keeping G), so fills that looked up before it are
# not stored and processes drop the tag versions they kept.
# KEYS[1]: the ticket key. ARGV[1]: the new P; ARGV[2]: a G for a missing key.
BUMP_TICKET: Final = """
local ticket = redis.call('GET', KEYS[1])
local generation = ticket and string.match(ticket, '^(%d+)') or ARGV[2]
redis.call('SET', KEYS[1], generation .. ':' .. ARGV[1])
return 1
"""

# A purge of tags: a new version for each tag that has one (a missing version already
# voids every entry that recorded one). KEYS: version keys. ARGV[1]: empty for a hard purge,
# else the soft purge's time in ms; ARGV[2], ...: one new token each. A soft purge keeps the
# hard part H and writes `H~MS~TOKEN` (see tag_versions.py).
REPLACE_VERSIONS: Final = """
for i = 1, #KEYS do
    local old = redis.call('GET', KEYS[i])
    if old then
        local value = ARGV[i + 1]
        if ARGV[1] ~= '' then
            value = string.match(old, '^[^~]*') .. '~' .. ARGV[1] .. '~' .. value
        end
        redis.call('SET', KEYS[i], value, 'KEEPTTL')
    end
end
return 1
"""

# KEYS[1]: the workers index (sorted set), KEYS[2]: this worker's report. ARGV[1]: the worker
# id, ARGV[2]: its report, ARGV[3]: how long the report lives (ms), ARGV[4]: most workers
# kept in the index. Stores the report and scores the worker by Redis's own clock, so
# workers on hosts whose clocks disagree are compared on one; forgets workers silent for
# longer than a report lives, and the oldest past ARGV[4]. Returns that clock's time (ms).
REPORT_WORKER: Final = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local keep_ms = tonumber(ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', keep_ms)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - keep_ms)
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[4]) - 1)
redis.call('PEXPIRE', KEYS[1], keep_ms)
return now
"""
