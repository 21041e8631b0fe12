"""Reads and writes of delivery state in Redis (the contract is relay.store.keys' docstring).

Taking work is one Lua script (`claim`): the deliveries due now in each target's due set are
moved to the end of their lease in the same set, so two workers never take the same one, and
one whose worker dies becomes due again when its lease ends. Recording an attempt is another
(`Store.record`), so the check "is this attempt still the current one?" and the writes (state,
attempt log, counters, dead-letter entry, the next due time or removal from the due set) are
atomic: a stale duplicate can never overwrite a newer outcome.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis import Redis

from relay.store import keys
from relay.store.event import Event

#: States after which nothing more happens to a delivery.
DONE_STATES = keys.FINAL_STATES | {keys.DUPLICATE}

#: Seconds a lease outlives the attempt's own timeout (clock skew, slow recording).
LEASE_MARGIN = 10.0


@dataclass(frozen=True)
class Delivery:
    """The state of one (event, target) delivery as stored in the event hash."""

    state: str
    attempts: int  # n: attempts made in all rounds
    base: int  # b: attempts made before the latest replay

    @property
    def done(self) -> bool:
        """Whether the delivery is over (delivered, dead, gone or a duplicate)."""
        return self.state in DONE_STATES

    @property
    def round_attempts(self) -> int:
        """Attempts made in the current round (since the latest replay)."""
        return self.attempts - self.base


@dataclass(frozen=True)
class StoredEvent:
    """An event and the delivery state of each of its targets."""

    event: Event
    deliveries: Mapping[str, Delivery]


def _int(data: Mapping[bytes, bytes], field: str) -> int:
    raw = data.get(field.encode())
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0


def parse_stored(event_id: str, data: Mapping[bytes, bytes]) -> StoredEvent | None:
    """A StoredEvent from an HGETALL result, or None when the hash is gone (expired)."""
    if not data:
        return None
    event = Event.from_redis(event_id, data)
    deliveries = {}
    for target in event.targets:
        raw_state = data.get(keys.state_field(target).encode(), b"")
        deliveries[target] = Delivery(
            state=raw_state.decode() or keys.PENDING,
            attempts=_int(data, keys.attempts_field(target)),
            base=_int(data, keys.base_field(target)),
        )
    return StoredEvent(event=event, deliveries=deliveries)


def load_events(conn: Redis, event_ids: Sequence[str]) -> dict[str, StoredEvent | None]:
    """Every event of a batch with its delivery states, in one round trip."""
    with conn.pipeline(transaction=False) as pipe:
        for event_id in event_ids:
            pipe.hgetall(keys.event_key(event_id))
        results: list[Any] = pipe.execute()
    return {eid: parse_stored(eid, data) for eid, data in zip(event_ids, results, strict=True)}


def duplicates(conn: Redis, events: Iterable[Event]) -> set[str]:
    """Ids of events whose dedupe key names another event: inbound duplicates."""
    candidates = [e for e in events if e.dedupe_key]
    if not candidates:
        return set()
    values = conn.mget([e.dedupe_key for e in candidates])
    # A missing key (window over) is not a duplicate: the first event may be long delivered.
    return {
        e.id
        for e, v in zip(candidates, values, strict=True)
        if v is not None and v != e.id.encode()
    }


def mark_duplicate(conn: Redis, event: Event, retention: float) -> None:
    """Mark every target of an inbound duplicate as such and take it off the due sets.

    Not counted here: the receiver counted it when it took it in (relay.receiver.intake).
    """
    fields = {keys.state_field(t): keys.DUPLICATE for t in event.targets}
    fields.update({keys.reason_field(t): "inbound duplicate (dedupe)" for t in event.targets})
    with conn.pipeline(transaction=True) as pipe:
        if fields:
            pipe.hset(keys.event_key(event.id), mapping=fields)  # type: ignore[arg-type]
        for target in event.targets:
            pipe.zrem(keys.due_key(target), event.id)
        pipe.expire(keys.event_key(event.id), int(retention))
        pipe.execute()


def drop_due(conn: Redis, pairs: Iterable[tuple[str, str]]) -> None:
    """Take (event id, target) deliveries off their due sets: nothing is left to do for them."""
    with conn.pipeline(transaction=False) as pipe:
        for event_id, target in pairs:
            pipe.zrem(keys.due_key(target), event_id)
        pipe.execute()


def due_again(conn: Redis, pairs: Iterable[tuple[str, str]], at: float) -> None:
    """Make claimed deliveries due again at `at` (they could not be started now)."""
    with conn.pipeline(transaction=False) as pipe:
        for event_id, target in pairs:
            pipe.zadd(keys.due_key(target), {event_id: at}, xx=True)
        pipe.execute()


# KEYS: the due set of each target; ARGV: now, total limit, then per target: limit, lease end
_CLAIM = """
local now = ARGV[1]
local left = tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  local limit = math.min(tonumber(ARGV[2 * i + 1]), left)
  local ids = {}
  if limit > 0 then
    ids = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, limit)
    local lease = ARGV[2 * i + 2]
    for _, id in ipairs(ids) do redis.call('ZADD', key, lease, id) end
    left = left - #ids
  end
  out[i] = ids
end
return out
"""

# KEYS: the due set of each target; ARGV: now. Returns the first target index with work due.
_PROBE = """
for i, key in ipairs(KEYS) do
  if #redis.call('ZRANGEBYSCORE', key, '-inf', ARGV[1], 'LIMIT', 0, 1) > 0 then return i end
end
return 0
"""


# KEYS: event hash, attempt log, target stats, dead-letter zset, the target's due set
# ARGV: target, attempt, state, reason, record JSON ("" for none), retention s, now,
#       dead member, counter ("" for none), failed ("1"/"0"), counts as attempt ("1"/"0"),
#       next due time ("" when the delivery is over)
_RECORD = """
local t = ARGV[1]
local attempt = tonumber(ARGV[2])
local id = ARGV[8]:sub(1, #ARGV[8] - #t - 1)
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[5], id)
  return -1
end
local s = redis.call('HGET', KEYS[1], 's:' .. t)
if s == 'delivered' or s == 'dead' or s == 'gone' or s == 'duplicate' then
  redis.call('ZREM', KEYS[5], id)
  return 0
end
local n = tonumber(redis.call('HGET', KEYS[1], 'n:' .. t) or '0')
if n ~= attempt - 1 then return 0 end
local retention = tonumber(ARGV[6])
if ARGV[11] == '1' then
  redis.call('HSET', KEYS[1], 'n:' .. t, attempt)
  redis.call('HINCRBY', KEYS[3], 'attempts', 1)
end
redis.call('HSET', KEYS[1], 's:' .. t, ARGV[3], 'r:' .. t, ARGV[4])
redis.call('EXPIRE', KEYS[1], retention)
if ARGV[5] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[5])
  redis.call('EXPIRE', KEYS[2], retention)
end
if ARGV[9] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[9], 1) end
if ARGV[10] == '1' then redis.call('HINCRBY', KEYS[3], 'failures', 1) end
if ARGV[3] == 'dead' or ARGV[3] == 'gone' then
  local now = tonumber(ARGV[7])
  redis.call('ZADD', KEYS[4], now, ARGV[8])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - retention)
end
if ARGV[12] == '' then
  redis.call('ZREM', KEYS[5], id)
else
  redis.call('ZADD', KEYS[5], ARGV[12], id)
end
return 1
"""


@dataclass(frozen=True)
class Record:
    """Everything one state change writes."""

    event_id: str
    target: str
    attempt: int
    state: str
    reason: str
    entry: Mapping[str, Any] | None  # the attempt log record, None when no request was made
    counter: str  # "delivered", "dead", "gone" or ""
    failed: bool
    counts: bool  # whether an HTTP attempt was made (n moves on)
    due_at: float | None = None  # when the next attempt is due; None: the delivery is over


class Store:
    """Delivery state writes on one Redis connection."""

    def __init__(self, conn: Redis, retention: float) -> None:
        self.conn = conn
        self.retention = int(retention)
        self._record = conn.register_script(_RECORD)
        self._claim = conn.register_script(_CLAIM)
        self._probe = conn.register_script(_PROBE)

    def claim(
        self, wanted: Sequence[tuple[str, int, float]], total: int, now: float
    ) -> dict[str, list[str]]:
        """Take deliveries due now, up to `limit` per (target, limit, lease end) and `total`.

        Targets are served in the order given; callers rotate it so none is starved.
        """
        wanted = [w for w in wanted if w[1] > 0]
        if not wanted or total <= 0:
            return {}
        args: list[Any] = [repr(now), total]
        for _, limit, lease_end in wanted:
            args += [limit, repr(lease_end)]
        result = self._claim(keys=[keys.due_key(t) for t, _, _ in wanted], args=args)
        return {
            target: [i.decode() for i in ids]
            for (target, _, _), ids in zip(wanted, result, strict=True)
            if ids
        }

    def anything_due(self, targets: Sequence[str], now: float) -> bool:
        """Whether any of those targets has a delivery due now."""
        if not targets:
            return False
        return int(self._probe(keys=[keys.due_key(t) for t in targets], args=[repr(now)])) > 0

    def due_targets(self) -> list[str]:
        """Names of every target that has a due set."""
        members: Iterable[bytes] = self.conn.smembers(keys.DUE_TARGETS)  # type: ignore[assignment]
        return sorted(t.decode() for t in members)

    def record(self, rec: Record, now: float) -> int:
        """Apply a state change if the attempt is still current: 1 applied, 0 stale, -1 no event."""
        entry = orjson.dumps(rec.entry).decode() if rec.entry is not None else ""
        result = self._record(
            keys=[
                keys.event_key(rec.event_id),
                keys.attempts_key(rec.event_id),
                keys.target_stats_key(rec.target),
                keys.DEAD,
                keys.due_key(rec.target),
            ],
            args=[
                rec.target,
                rec.attempt,
                rec.state,
                rec.reason,
                entry,
                self.retention,
                now,
                keys.dead_member(rec.event_id, rec.target),
                rec.counter,
                "1" if rec.failed else "0",
                "1" if rec.counts else "0",
                "" if rec.due_at is None else repr(rec.due_at),
            ],
        )
        return int(result)


def attempt_records(conn: Redis, event_id: str) -> list[dict[str, Any]]:
    """The attempt log of an event, oldest first."""
    return [orjson.loads(raw) for raw in conn.lrange(keys.attempts_key(event_id), 0, -1)]
