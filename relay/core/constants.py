"""Defaults and fixed names shared by the receiver and the workers, each with the reason for it."""

from __future__ import annotations

#: Redis key prefix for everything relay stores besides RQ's own keys.
KEY_PREFIX = "relay"

#: The one RQ queue the receiver fills and the workers listen to. One queue on purpose: RQ uses
#: its crash-safe LMOVE hand-off only when a worker listens to exactly one queue.
QUEUE_NAME = "relay"

#: aiohttp's own default; providers send small JSON or form bodies.
DEFAULT_BODY_LIMIT = 1024 * 1024

#: DigitalChalk fails an attempt after 5 s; answering 503 after 3 s leaves room for the network.
DEFAULT_INTAKE_TIMEOUT = 3.0

#: A request body must arrive whole within this many seconds (408 after), so a client trickling
#: bytes cannot hold a handler: 1 MiB in 10 s is 100 KiB/s, far below any provider's uplink.
DEFAULT_READ_TIMEOUT = 10.0

#: Idle keep-alive connections, and connections that never finish their headers, are closed
#: after this long. aiohttp's run_app default, above the 60 s idle timeout of common load
#: balancers (AWS ALB), so that the balancer, not relay, closes an idle connection first.
DEFAULT_KEEPALIVE_TIMEOUT = 75.0

#: With RELAY_ACK_REPLICAS=all, a replica whose last acknowledgement to the primary (INFO
#: replication's `lag`, whole seconds) is older than this is not waited for. Replicas acknowledge
#: every second, so a healthy one shows 0 or 1; 3 leaves room for a loaded host while giving up a
#: frozen or cut-off replica within about 4 s, not at the primary's `repl-timeout` (60 s).
DEFAULT_ACK_MAX_LAG = 3.0

#: Largest number of events committed in one Redis transaction (and carried by one RQ job).
MAX_BATCH = 64

#: One ASP.NET WebHooks post is split into an event per notification, each body the post's text
#: with only its own notification: at most this many events, and this many bytes of them in
#: all (413 beyond). A post is committed in one script call, and its split bodies repeat the
#: rest of the post: without a bound, one small post of many notifications beside a large field
#: would cost the receiver and Redis many times its size.
MAX_SPLIT_EVENTS = 1000
MAX_SPLIT_BYTES = 8 * 1024 * 1024

#: Event bodies, delivery logs and dead letters are kept this long (seconds): 7 days.
DEFAULT_RETENTION = 7 * 24 * 3600

#: Per-target defaults, close to the Standard Webhooks (Svix) schedule: about a day in all.
DEFAULT_TIMEOUT = 10.0
DEFAULT_ATTEMPTS = 10
DEFAULT_FIRST_DELAY = 5.0
DEFAULT_MAX_DELAY = 10 * 3600.0

#: A Retry-After larger than this is capped: a target cannot park a delivery for days.
MAX_RETRY_AFTER = 6 * 3600.0

#: How much of a target's response body an attempt record keeps.
RESPONSE_SNIPPET = 2048

#: The Redis-outage spool (relay.receiver.spool.spool) refuses new events (503) beyond this many
#: bytes on disk: about 250,000 typical 1 KiB events, hours of an outage for a busy source.
DEFAULT_SPOOL_MAX = 256 * 1024 * 1024

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_ROUTES_PATH = "./routes.toml"
DEFAULT_PORT = 8000
#: The admin listener (management API and console): its own port, never the intake's.
DEFAULT_ADMIN_PORT = 8001
