"""No overlap across a fleet: a lease in Redis beside the local flock, and one run per slot.

With a lock URL, ``jobwrap run --lock`` takes the local lock (:mod:`jobwrap.store.lock`) and
then a **lease** on ``jobwrap:lock:{NAME}`` in Redis, atomically (one Lua script, the
equivalent of ``SET key value NX PX lease``).  The value says who holds it (host, pid, run id,
since when) and carries a random token, so only the holder renews or deletes it:

* a daemon thread renews the lease every third of it by compare-and-extend; a failed renewal,
  or a key found gone or taken, is one warning and ``lost`` (the job is not killed).  A key
  found gone -- Redis restarted without persistence -- is taken back if still free;
* release is compare-and-delete, never a blind DEL; a holder that dies without releasing
  (``kill -9``, a host crash) frees the lock when its lease ends.

With ``--schedule``, the same script also claims the run's **slot** (its fire time, see
:meth:`jobwrap.schedule.Schedule.slot_at`) as ``jobwrap:lock:{NAME}:<fire time>``, kept for one
schedule interval and never released: a host that comes to a slot another host already ran
is skipped, however short that run was.

Redis unreachable is :class:`FleetUnavailable`; the caller fails closed (skips) unless told to
run unlocked.  Connecting and each command time out within :data:`TIMEOUT_S`, with no retries,
so a slow Redis costs a run at most a couple of seconds.

The only module that imports ``redis`` (the optional ``redis`` extra, installed from the
source tree: ``pip install '.[redis]'``), and only when a lock URL is set.
Passwords are never shown: :func:`mask_url`.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from jobwrap.errors import ConfigError, StateError, UsageError
from jobwrap.store.lock import JobLock

Unavailable = Literal["skip", "run"]
UNAVAILABLE_POLICIES: tuple[Unavailable, ...] = ("skip", "run")
DEFAULT_LEASE_S = 30.0
TIMEOUT_S = 1.0  # connect, and each command: a lock is asked for before the job, not at leisure
KEY_PREFIX = "jobwrap:lock:"
SCHEMES = ("redis", "rediss", "unix")

# KEYS: lease[, slot]; ARGV: value, lease ms[, slot ms].  Returns {verdict, holder's value,
# Redis's TIME seconds}.  The slot is claimed only together with the lease, in one step.
_ACQUIRE = """
local now = redis.call('TIME')[1]
local held = redis.call('GET', KEYS[1])
if held then return {'held', held, now} end
if #KEYS > 1 then
  local ran = redis.call('GET', KEYS[2])
  if ran then return {'ran', ran, now} end
end
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
if #KEYS > 1 then redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[3]) end
return {'ok', ARGV[1], now}
"""
# 1: extended; 2: the key was gone and is ours again; 0: someone else holds it.
_EXTEND = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not held then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class FleetUnavailable(StateError):
    """Redis could not be asked (down, slow, refused the password); the message names it."""


@dataclass(frozen=True)
class FleetSettings:
    """Where the fleet's locks live and how a run uses them."""

    url: str
    password: str | None = None
    lease_s: float = DEFAULT_LEASE_S
    unavailable: Unavailable = "skip"
    host: str = ""  # this host's name in holder records

    def masked_url(self) -> str:
        return mask_url(self.url)


@dataclass(frozen=True)
class Slot:
    """The fire time a run claims and how long the claim lasts (one schedule interval)."""

    fire_time: datetime
    keep_s: float

    @property
    def label(self) -> str:
        return self.fire_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def argument(self) -> str:
        """``FIRE_TIME/SECONDS``: how ``jobwrap cron`` tells a line's ``jobwrap run`` its slot."""
        return f"{self.fire_time.astimezone(UTC).isoformat()}/{self.keep_s:g}"

    @classmethod
    def parse(cls, text: str) -> Slot:
        """The inverse of :meth:`argument`; UsageError (one line) for anything else."""
        fire, _, keep = text.partition("/")
        try:
            when, seconds = datetime.fromisoformat(fire), float(keep)
        except ValueError:
            when, seconds = None, 0.0
        if when is None or when.tzinfo is None or not 0 < seconds < 1e9:
            raise UsageError(f"bad slot {text!r}: expected FIRE_TIME/SECONDS, e.g. "
                             "2030-01-01T00:05:00+00:00/300")
        return cls(when, seconds)


@dataclass(frozen=True)
class Holder:
    """Who holds a fleet lock, or ran a slot (fields may be unknown)."""

    host: str | None = None
    pid: int | None = None
    run_id: str | None = None
    since: str | None = None

    def describe(self) -> str:
        """``host web2 (pid 123, run 0a1b…, since 2024-05-01T02:30:00+00:00)``."""
        details = [f"{k} {v}" for k, v in
                   (("pid", self.pid), ("run", self.run_id), ("since", self.since)) if v]
        who = f"host {self.host}" if self.host else "another run"
        return f"{who} ({', '.join(details)})" if details else who


@dataclass(frozen=True)
class Refused:
    """Why the fleet lock was not had: held now, or the slot already ran."""

    message: str
    holder: Holder


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``****`` (user names stay: they are not secret)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:****@{host}"))


def check_url(url: str) -> str:
    """``url`` if it is a Redis URL; ConfigError (the password never shown) otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in SCHEMES or not (parts.hostname or parts.scheme == "unix"):
        raise ConfigError(f"bad lock URL {mask_url(url)!r}: use redis://HOST[:PORT][/DB], "
                          "rediss:// (TLS) or unix:///PATH")
    return url


def require_client() -> None:
    """ConfigError, one line, when the optional ``redis`` client is not installed."""
    try:
        import redis  # noqa: F401
    except ImportError:
        raise ConfigError("a lock URL needs the Redis client: pip install 'redis>=5' "
                          "(jobwrap's redis extra)") from None


def connect(settings: FleetSettings) -> Any:
    """A client with short timeouts and no retries (nothing is sent yet)."""
    require_client()
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        settings.url,
        password=settings.password or None,
        socket_connect_timeout=TIMEOUT_S,
        socket_timeout=TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        decode_responses=False,
    )


def _unavailable(settings: FleetSettings, exc: BaseException) -> FleetUnavailable:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if settings.password:
        detail = detail.replace(settings.password, "****")
    return FleetUnavailable(f"Redis at {settings.masked_url()} unavailable: {detail}")


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError)


def lease_key(name: str) -> bytes:
    # The braces are a Redis Cluster hash tag: a lock's lease and slots share one node.
    return (KEY_PREFIX + "{" + name + "}").encode("utf-8", "surrogateescape")


def slot_key(name: str, slot: Slot) -> bytes:
    return lease_key(name) + b":" + slot.label.encode("ascii")


def parse_holder(raw: bytes | str | None) -> Holder | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return Holder()
    if not isinstance(data, dict):
        return Holder()

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) and value else None

    pid = data.get("pid")
    return Holder(text("host"), pid if isinstance(pid, int) else None, text("run_id"),
                  text("since"))


Warn = Callable[[str], None]


class Lease:
    """A fleet lease held by this process, renewed by a daemon thread until released."""

    def __init__(self, client: Any, settings: FleetSettings, name: str, value: bytes,
                 warn: Warn) -> None:
        self.client = client
        self.settings = settings
        self.name = name
        self.key = lease_key(name)
        self.value = value
        self.warn = warn
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name="jobwrap-lease",
                                        daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.settings.lease_s / 3):
            self.renew()

    def renew(self) -> None:
        """Extend the lease if it is still ours (take it back if it is gone); else lost."""
        try:
            outcome = self.client.eval(_EXTEND, 1, self.key, self.value,
                                       int(self.settings.lease_s * 1000))
        except _redis_errors() as exc:
            self._lose(f"cannot renew it: {_unavailable(self.settings, exc)}")
            return
        if outcome == 2:
            self._lose("its key was gone from Redis (restarted?); taken back")
        elif outcome == 0:
            try:
                holder = parse_holder(self.client.get(self.key)) or Holder()
            except _redis_errors():
                holder = Holder()
            self._lose(f"now held by {holder.describe()}")

    def _lose(self, why: str) -> None:
        if not self.lost:  # one warning per run, however long the trouble lasts
            self.lost = True
            self.warn(f"warning: fleet lock {self.name!r} lost ({why}); the job keeps running")

    def release(self) -> None:
        """Stop renewing and delete the key if it is still ours; never raises."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=2 * TIMEOUT_S)
        try:
            self.client.eval(_RELEASE, 1, self.key, self.value)
        except _redis_errors():
            pass  # the lease ends by itself
        finally:
            self.client.close()


class FleetLock:
    """The local lock (if it could be taken) and the fleet lease, released together."""

    def __init__(self, local: JobLock | None, lease: Lease, run_id: str) -> None:
        self.local = local
        self.lease = lease
        self.run_id = run_id  # the run the lease names

    @property
    def fd(self) -> int | None:
        return self.local.fd if self.local is not None else None

    @property
    def lost(self) -> bool:
        return self.lease.lost

    def release(self) -> None:
        self.lease.release()
        if self.local is not None:
            self.local.release()


def acquire(settings: FleetSettings, name: str, *, run_id: str, warn: Warn,
            slot: Slot | None = None, now: Callable[[], datetime] | None = None,
            ) -> Lease | Refused:
    """Take the lease on ``name`` (and claim ``slot``); Refused when held or already run.

    FleetUnavailable when Redis cannot be asked within the timeouts.
    """
    since = (now or (lambda: datetime.now(UTC)))().astimezone(UTC)
    value = json.dumps({
        "host": settings.host, "pid": os.getpid(), "run_id": run_id,
        "since": since.isoformat(timespec="seconds"), "token": secrets.token_hex(8),
    }).encode()
    keys = [lease_key(name)]
    args: list[object] = [value, int(settings.lease_s * 1000)]
    if slot is not None:
        keys.append(slot_key(name, slot))
        args.append(max(1, int(slot.keep_s * 1000)))
    client = connect(settings)
    try:
        verdict, raw, _time = client.eval(_ACQUIRE, len(keys), *keys, *args)
    except _redis_errors() as exc:
        client.close()
        raise _unavailable(settings, exc) from None
    if verdict == b"ok":
        return Lease(client, settings, name, value, warn)
    client.close()
    holder = parse_holder(raw) or Holder()
    if verdict == b"ran" and slot is not None:
        return Refused(f"skipped: slot {slot.label} of lock {name!r} already ran on "
                       f"{holder.describe()}", holder)
    return Refused(f"skipped: lock {name!r} is held by {holder.describe()}", holder)


@dataclass(frozen=True)
class Probe:
    """What ``status``/``doctor`` learn from the lock backend."""

    url: str  # masked
    error: str | None = None
    version: str | None = None
    offset_s: float | None = None  # this host's clock minus Redis's TIME
    holders: tuple[tuple[str, Holder | None], ...] = ()


def probe(settings: FleetSettings, names: list[str],
          now: Callable[[], datetime] | None = None) -> Probe:
    """Ask Redis whether it answers, its TIME against ours, and who holds ``names``."""
    try:
        client = connect(settings)
    except ConfigError as exc:
        return Probe(settings.masked_url(), error=str(exc))
    try:
        info = client.info("server")
        seconds, micros = client.time()
        local = (now or (lambda: datetime.now(UTC)))().timestamp()
        offset = local - (seconds + micros / 1e6)
        holders = tuple((n, parse_holder(client.get(lease_key(n)))) for n in names)
    except _redis_errors() as exc:
        return Probe(settings.masked_url(), error=str(_unavailable(settings, exc)))
    finally:
        client.close()
    return Probe(settings.masked_url(), None, str(info.get("redis_version", "?")), offset,
                 holders)
