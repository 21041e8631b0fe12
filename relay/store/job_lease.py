"""The lease on a bulk replay job: `relay:lock:job:{id}`, held by the one admin process running it.

Taken with SET NX PX and a random token, so only its holder extends or releases it (a
compare-and-set script each). The runner extends it before each chunk and again before writing
the chunk's progress: a holder that stopped (SIGKILL, a lost host) frees it within LEASE_TTL, and
a holder that finds it gone or someone else's writes nothing more, so two processes never both
record progress for one job. A chunk takes milliseconds, far inside the TTL.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from redis import Redis

from relay.store import keys

#: How long a lease outlives a holder that stopped extending it (seconds): a job whose process
#: died is resumed by another admin process after about this long (as STALE_AFTER, the read side's
#: "abandoned", in relay.store.jobs).
LEASE_TTL = 60.0

#: Extends the lease only if this holder still has it.
_EXTEND = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
)
#: Releases the lease only if this holder still has it.
_RELEASE = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)


@dataclass(frozen=True)
class JobLease:
    """One holder's claim on a job; `acquire()` first, then `extend()` while running."""

    conn: Redis
    job_id: str
    ttl: float = LEASE_TTL
    token: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def key(self) -> str:
        return keys.job_lock_key(self.job_id)

    def acquire(self) -> bool:
        """Take the lease; False when another process holds it."""
        return bool(self.conn.set(self.key, self.token, nx=True, px=self._ttl_ms))

    def extend(self) -> bool:
        """Renew the lease; False when it is no longer this holder's (expired, taken over)."""
        return bool(self.conn.eval(_EXTEND, 1, self.key, self.token, str(self._ttl_ms)))

    def release(self) -> None:
        """Free the lease if it is still this holder's."""
        self.conn.eval(_RELEASE, 1, self.key, self.token)

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))
