"""relay.ops.pages: cursors round-trip, and a walk from a cursor goes on exactly after it."""

from __future__ import annotations

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from relay.ops.pages import IndexWalk, Position

KEY = "test:index"


@given(
    score=st.floats(allow_nan=False, allow_infinity=False),
    member=st.text(min_size=1, max_size=60).filter(lambda m: "\x00" not in m),
)
def test_a_cursor_gives_back_its_position(score: float, member: str) -> None:
    position = Position(score, member)
    cursor = position.to_cursor()
    assert cursor.isascii()
    assert Position.from_cursor(cursor) == position


@pytest.mark.parametrize(
    "cursor", ["", "garbage!", "x" * 513, Position(1.0, "a").to_cursor()[:-2] + "@@", "bmFu"]
)
def test_anything_else_is_not_a_cursor(cursor: str) -> None:
    with pytest.raises(ValueError, match="not a cursor"):
        Position.from_cursor(cursor)


def walk_all(conn: redis.Redis, **kwargs: object) -> list[str]:
    """Every member, walking pages of 3 and restarting from the last position each time."""
    seen: list[str] = []
    start = None
    for _ in range(100):
        walk = IndexWalk(conn, KEY, page_size=3, max_scan=4, start=start, **kwargs)  # type: ignore[arg-type]
        for page in walk.pages():
            seen += [p.member for p in page]
        if walk.exhausted:
            return seen
        start = walk.last
    raise AssertionError("the walk never ended")


@pytest.mark.needs_redis_server
def test_walks_resumed_from_their_last_position_see_every_member_once(
    redis_client: redis.Redis,
) -> None:
    # Many equal scores (ties are ordered by member, descending), then distinct ones.
    redis_client.zadd(KEY, {f"tie-{n:02d}": 100.0 for n in range(10)})
    redis_client.zadd(KEY, {f"late-{n}": 200.0 + n for n in range(5)})
    redis_client.zadd(KEY, {"early": 50.0})
    expected = [m.decode() for m in redis_client.zrevrange(KEY, 0, -1)]
    assert walk_all(redis_client) == expected
    assert walk_all(redis_client, low=100.0, high=201.0) == [
        m.decode() for m in redis_client.zrevrangebyscore(KEY, 201.0, 100.0)
    ]


@pytest.mark.needs_redis_server
def test_a_walk_stops_at_its_scan_bound_and_says_so(redis_client: redis.Redis) -> None:
    redis_client.zadd(KEY, {f"m{n:02d}": float(n) for n in range(20)})
    walk = IndexWalk(redis_client, KEY, page_size=4, max_scan=10)
    read = [p.member for page in walk.pages() for p in page]
    assert read == [f"m{n:02d}" for n in range(19, 9, -1)]
    assert (walk.scanned, walk.exhausted, walk.last) == (10, False, Position(10.0, "m10"))
    rest = IndexWalk(redis_client, KEY, page_size=4, max_scan=None, start=walk.last)
    assert [p.member for page in rest.pages() for p in page] == [
        f"m{n:02d}" for n in range(9, -1, -1)
    ]
    assert rest.exhausted


@pytest.mark.needs_redis_server
def test_a_walk_goes_on_after_a_start_that_left_the_index(redis_client: redis.Redis) -> None:
    redis_client.zadd(KEY, {f"tie-{n:02d}": 100.0 for n in range(10)})
    redis_client.zrem(KEY, "tie-06")  # e.g. its event expired between two pages
    walk = IndexWalk(redis_client, KEY, page_size=3, max_scan=3, start=Position(100.0, "tie-06"))
    read = [p.member for page in walk.pages() for p in page]
    assert read == ["tie-05", "tie-04", "tie-03"]


@pytest.mark.needs_redis_server
def test_a_walk_past_its_deadline_stops_after_its_first_page(redis_client: redis.Redis) -> None:
    redis_client.zadd(KEY, {f"m{n:02d}": float(n) for n in range(20)})
    walk = IndexWalk(redis_client, KEY, page_size=4, deadline=0.0)  # long past
    assert [p.member for page in walk.pages() for p in page] == ["m19", "m18", "m17", "m16"]
    assert (walk.scanned, walk.exhausted, walk.last) == (4, False, Position(16.0, "m16"))
