"""The pass lock: relay:lock:rc:{source}, held by one pass at a time across every process and host.

It is taken with SET NX PX and a random token, so only its holder extends or releases it (a
compare-and-set script each). While the pass runs, a heartbeat thread extends it every third of
its TTL: a pass longer than the TTL (a large academy, a slow API) keeps it, so no other process
starts the same pass meanwhile, and a holder that dies frees it within one TTL. A heartbeat that
finds the lock gone or someone else's marks it lost; the pass checks `held()` before it commits
anything, so a pass that lost its lock synthesizes nothing.
"""

from __future__ import annotations

import secrets
import threading
from types import TracebackType

import redis
import structlog
from redis.exceptions import RedisError

from relay.store import keys

__all__ = ["LOCK_TTL", "PassLock"]

#: How long the lock outlives its holder (seconds): a crashed pass frees it after this long.
#: The heartbeat keeps it while the pass runs, however long that is.
LOCK_TTL = 60.0

#: Extends the lock only if this holder still has it (its expiry may have handed it on).
_EXTEND = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
)
#: Releases the lock only if this holder still has it.
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end"


def _log() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("relay.reconcile")  # type: ignore[no-any-return]


class PassLock:
    """A source's pass lock; `acquire()` then `release()`, or `with` after a successful acquire."""

    def __init__(
        self, conn: redis.Redis, source: str, ttl: float = LOCK_TTL, beat: float | None = None
    ) -> None:
        self.conn = conn
        self.source = source
        self.key = keys.reconcile_lock_key(source)
        self.ttl_ms = max(1, int(ttl * 1000))
        self.beat = ttl / 3 if beat is None else beat
        self.token = secrets.token_hex(8)
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lock (False: another holds it) and start the heartbeat."""
        if not self.conn.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return False
        self._thread = threading.Thread(
            target=self._run, name=f"relay-reconcile-lock-{self.source}", daemon=True
        )
        self._thread.start()
        return True

    def held(self) -> bool:
        """Whether this holder still has the lock, extending it if so (one round trip)."""
        if self.lost:
            return False
        if not self._extend():
            self._mark_lost()
        return not self.lost

    def release(self) -> None:
        """Stop the heartbeat and free the lock if it is still this holder's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.conn.eval(_RELEASE, 1, self.key, self.token)
        except RedisError as exc:
            # It expires on its own within one TTL.
            _log().warning("reconcile: pass lock not released", source=self.source, error=str(exc))

    def __enter__(self) -> PassLock:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _extend(self) -> bool:
        return bool(self.conn.eval(_EXTEND, 1, self.key, self.token, str(self.ttl_ms)))

    def _mark_lost(self) -> None:
        if not self.lost:
            self.lost = True
            _log().error(
                "reconcile: pass lock lost; this pass will synthesize nothing",
                source=self.source,
                lock_ttl=self.ttl_ms / 1000,
            )

    def _run(self) -> None:
        while not self._stop.wait(self.beat):
            try:
                if not self._extend():
                    self._mark_lost()
                    return
            except (RedisError, OSError) as exc:
                # One missed beat is fine: the TTL spans three; the next beat tries again.
                _log().warning(
                    "reconcile: pass lock not extended", source=self.source, error=str(exc)
                )
