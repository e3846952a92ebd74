"""Enqueue OmniQ tasks from Python, by the wire format of docs/wire-format.md (version 1).

A producer only: it stores tasks that OmniQ workers (Rust) claim and run. It needs
`msgpack` (or nothing, for JSON payloads), and `redis` or `psycopg` (3) for its store.

    import redis
    from omniq_producer import RedisProducer

    producer = RedisProducer(redis.Redis(), prefix="omniq")
    task_id = producer.enqueue("resize", {"path": "a.png", "width": 640}, priority=5)

The Redis producer runs OmniQ's own enqueue script (`common.lua` then `enqueue.lua` from
crates/omniq-redis/src/scripts, joined by a newline), so unique keys, delays and wake-ups
behave exactly as for a Rust producer. The PostgreSQL producer runs the documented INSERT
and NOTIFY on the tables OmniQ's migrations made.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import operator
import os
import uuid
from dataclasses import dataclass
from typing import Any, Mapping, Optional

ENVELOPE_MAGIC = 0xC7
ENVELOPE_VERSION = 1
FORMAT_MSGPACK = 1
FORMAT_JSON = 2

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 3

# Fields per task in the enqueue script's arguments (omniq-redis ENQUEUE_FIELDS).
_ENQUEUE_FIELDS = 15
_LIVE_STATES = ("blocked", "scheduled", "queued", "running")


def envelope(value: Any, codec: str = "msgpack") -> bytes:
    """`value` as an OmniQ payload: the three header bytes, then the body."""
    if codec == "msgpack":
        import msgpack

        body = msgpack.packb(value, use_bin_type=True)
        return bytes([ENVELOPE_MAGIC, ENVELOPE_VERSION, FORMAT_MSGPACK]) + body
    if codec == "json":
        body = json.dumps(value, separators=(",", ":")).encode()
        return bytes([ENVELOPE_MAGIC, ENVELOPE_VERSION, FORMAT_JSON]) + body
    raise ValueError(f"unknown codec {codec!r} (expected 'msgpack' or 'json')")


def duration(seconds: float) -> dict:
    """A duration as OmniQ's options JSON spells it (Rust's `std::time::Duration`)."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"a duration must be a finite number of seconds >= 0, not {seconds!r}")
    secs, nanos = divmod(round(seconds * 1_000_000_000), 1_000_000_000)
    return {"secs": int(secs), "nanos": int(nanos)}


def fixed_backoff(seconds: float) -> dict:
    """The same delay before every retry."""
    return {"type": "fixed", "delay": duration(seconds)}


def exponential_backoff(base: float, max_delay: float, jitter: float = 0.2) -> dict:
    """`base * 2^(attempt-1)`, capped at `max_delay`, with up to `jitter` of it randomised."""
    if not 0 < base <= max_delay:
        raise ValueError("the backoff needs 0 < base <= max_delay")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError("the jitter is a fraction in 0..=1")
    return {
        "type": "exponential",
        "base": duration(base),
        "max": duration(max_delay),
        "jitter": jitter,
    }


@dataclass(frozen=True)
class Enqueued:
    """What an enqueue did: the task `id` is stored (`created`: by this call or an earlier
    send of the same id), or another task, `id`, holds the unique key (`created` false)."""

    id: str
    created: bool
    state: Optional[str] = None


@dataclass
class _Task:
    id: str
    name: str
    queue: str
    payload: bytes
    priority: int
    run_at: _dt.datetime
    expires_at: Optional[_dt.datetime]
    max_attempts: int
    unique_key: Optional[str]
    unique_for: Optional[float]
    created_at: _dt.datetime
    options: str


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _micros(at: _dt.datetime) -> int:
    epoch = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
    delta = at - epoch
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _task(
    name: str,
    payload: Any,
    *,
    queue: str,
    priority: int,
    delay: float,
    run_at: Optional[_dt.datetime],
    ttl: Optional[float],
    max_attempts: int,
    unique_key: Optional[str],
    unique_for: Optional[float],
    backoff: Optional[dict],
    timeout: Optional[float],
    metadata: Optional[Mapping[str, str]],
    codec: str,
    task_id: Optional[str],
) -> _Task:
    # The rules of OmniQ's TaskSpec::validate: a worker dead-letters a task that breaks them.
    _text("name", name)
    _text("queue", queue)
    if unique_key is not None:
        _text("unique_key", unique_key, may_be_empty=True)
    for key, value in (metadata or {}).items():
        _text("a metadata key", key, may_be_empty=True)
        _text("a metadata value", value, may_be_empty=True)
    priority = operator.index(priority)
    if not -(2**31) <= priority < 2**31:
        raise ValueError("priority must fit in 32 bits")
    max_attempts = operator.index(max_attempts)
    if not 1 <= max_attempts < 2**32:
        raise ValueError("max_attempts must be in 1..=4294967295")
    if unique_for is not None and unique_key is None:
        raise ValueError("unique_for needs a unique_key")
    for label, seconds in (("timeout", timeout), ("unique_for", unique_for)):
        if seconds is not None and duration(seconds) == duration(0):
            raise ValueError(f"{label} must be longer than zero")
    duration(delay)  # finite and not negative, as is a TTL
    if ttl is not None:
        duration(ttl)
    if run_at is not None and run_at.utcoffset() is None:
        raise ValueError("run_at must be an aware datetime (with a time zone)")
    now = _utc_now()
    options: dict = {}
    if backoff is not None:
        options["backoff"] = backoff
    if timeout is not None:
        options["timeout"] = duration(timeout)
    if metadata:
        options["metadata"] = dict(metadata)
    if unique_for is not None:
        options["unique_for"] = duration(unique_for)
    return _Task(
        # Workers write ids back in this form: any other, and the task is never completed.
        id=str(uuid.UUID(str(task_id))) if task_id else str(_uuid7()),
        name=name,
        queue=queue,
        payload=payload if isinstance(payload, bytes) else envelope(payload, codec),
        priority=priority,
        run_at=run_at or now + _dt.timedelta(seconds=delay),
        expires_at=None if ttl is None else now + _dt.timedelta(seconds=ttl),
        max_attempts=max_attempts,
        unique_key=unique_key,
        unique_for=unique_for,
        created_at=now,
        options=json.dumps(options, separators=(",", ":")),
    )


def _text(label: str, value: str, may_be_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{label} must be text")
    if not value and not may_be_empty:
        raise ValueError(f"{label} is empty")
    if "\0" in value:
        raise ValueError(f"{label} contains a NUL character")


def _decoded(value) -> str:
    """A reply value as text, whether the client decodes replies or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _uuid7() -> uuid.UUID:
    """A version 7 UUID (time-ordered), as OmniQ makes task ids; any UUID is accepted."""
    millis = _micros(_utc_now()) // 1000
    rand_a = int.from_bytes(os.urandom(2), "big") & 0xFFF
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


class _Producer:
    def enqueue(
        self,
        name: str,
        payload: Any,
        *,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        delay: float = 0.0,
        run_at: Optional[_dt.datetime] = None,
        ttl: Optional[float] = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        unique_key: Optional[str] = None,
        unique_for: Optional[float] = None,
        backoff: Optional[dict] = None,
        timeout: Optional[float] = None,
        metadata: Optional[Mapping[str, str]] = None,
        codec: str = "msgpack",
        task_id: Optional[str] = None,
    ) -> Enqueued:
        """Enqueues one task; `payload` is encoded in an envelope unless it is `bytes`.

        Delays, TTLs, windows and timeouts are in seconds. Higher priorities run first.
        """
        task = _task(
            name,
            payload,
            queue=queue,
            priority=priority,
            delay=delay,
            run_at=run_at,
            ttl=ttl,
            max_attempts=max_attempts,
            unique_key=unique_key,
            unique_for=unique_for,
            backoff=backoff,
            timeout=timeout,
            metadata=metadata,
            codec=codec,
            task_id=task_id,
        )
        return self._store(task)

    def _store(self, task: _Task) -> Enqueued:
        raise NotImplementedError


class RedisProducer(_Producer):
    """Enqueues into the Redis stores under `prefix` (OmniQ's `?prefix=`, default `omniq`)."""

    def __init__(self, client, prefix: str = "omniq", scripts_dir: Optional[str] = None):
        here = os.path.dirname(os.path.abspath(__file__))
        scripts_dir = scripts_dir or os.path.join(
            here, "..", "..", "crates", "omniq-redis", "src", "scripts"
        )
        with open(os.path.join(scripts_dir, "common.lua")) as common, open(
            os.path.join(scripts_dir, "enqueue.lua")
        ) as body:
            source = common.read() + "\n" + body.read()
        self._base = "{" + prefix + "}"
        # EVALSHA, loading the script again when the server lost it.
        self._script = client.register_script(source)

    def _arguments(self, task: _Task) -> tuple:
        """The script's KEYS and ARGV for `task`."""
        now = _utc_now()
        b = self._base
        keys = [f"{b}:leases", f"{b}:expiry", f"{b}:seq", f"{b}:queues"]
        args = [
            b,
            _micros(now),
            now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            1,
            _ENQUEUE_FIELDS,
            task.id,
            task.queue,
            task.name,
            task.payload,
            task.priority,
            _micros(task.run_at),
            "" if task.expires_at is None else _micros(task.expires_at),
            task.max_attempts,
            "0" if task.unique_key is None else "1",
            task.unique_key or "",
            "" if task.unique_for is None else round(task.unique_for * 1_000_000),
            "",  # parents: none
            "parents_succeeded",
            _micros(task.created_at),
            task.options,
        ]
        return keys, args

    def _store(self, task: _Task) -> Enqueued:
        keys, args = self._arguments(task)
        tag, body = self._script(keys=keys, args=args)
        if _decoded(tag) != "ok":
            raise ValueError(f"enqueue.lua refused the task: {_decoded(tag)} {_decoded(body)}")
        outcome = body[0]
        kind, task_id = _decoded(outcome[0]), _decoded(outcome[1])
        if kind == "created":
            return Enqueued(task_id, True, _decoded(outcome[2]))
        # The same id sent again (a retry after a lost reply) finds the task it stored.
        return Enqueued(task_id, task_id == task.id)


class PostgresProducer(_Producer):
    """Enqueues into the PostgreSQL tables of `schema` (OmniQ's `?schema=`), or of the
    connection's search_path when None. `conn` is a psycopg 3 connection. On an autocommit
    connection each enqueue commits; inside a transaction of the caller's (`with
    conn.transaction():`, or one a non-autocommit connection opened implicitly) it is part
    of that transaction and commits with it.
    """

    def __init__(self, conn, schema: Optional[str] = None):
        self._conn = conn
        if schema is None:
            self._tasks, self._channel = "omniq_tasks", "omniq_tasks"
        else:
            self._tasks = '"' + schema.replace('"', '""') + '".omniq_tasks'
            self._channel = "omniq_tasks." + schema

    def _store(self, task: _Task) -> Enqueued:
        # A conflict whose holder finished before it could be read is tried again: the key
        # is free by then, or held by another task whose id is then answered.
        for _ in range(3):
            with self._conn.transaction():
                outcome = self._insert(task)
            if outcome is not None:
                return outcome
        raise RuntimeError(f"the unique key {task.unique_key!r} kept changing hands")

    def _insert(self, task: _Task) -> Optional[Enqueued]:
        with self._conn.cursor() as cur:
            if task.unique_for is not None:
                cur.execute(
                    f"SELECT id FROM {self._tasks} WHERE unique_key = %s "
                    "AND created_at > now() - make_interval(secs => %s) "
                    "ORDER BY created_at DESC, seq DESC LIMIT 1",
                    (task.unique_key, task.unique_for),
                )
                row = cur.fetchone()
                if row is not None:
                    return Enqueued(str(row[0]), str(row[0]) == task.id)
            cur.execute(
                f"INSERT INTO {self._tasks} (id, name, queue, state, priority, run_at, "
                "expires_at, max_attempts, unique_key, payload, options, created_at, "
                "updated_at, run_when) "
                "VALUES (%(id)s, %(name)s, %(queue)s, "
                "CASE WHEN %(run_at)s > now() THEN 'scheduled' ELSE 'queued' END, "
                "%(priority)s, %(run_at)s, %(expires_at)s, %(max_attempts)s, "
                "%(unique_key)s, %(payload)s, %(options)s::jsonb, %(created_at)s, now(), "
                "'parents_succeeded') "
                "ON CONFLICT DO NOTHING RETURNING state",
                {
                    "id": task.id,
                    "name": task.name,
                    "queue": task.queue,
                    "run_at": task.run_at,
                    "priority": task.priority,
                    "expires_at": task.expires_at,
                    "max_attempts": task.max_attempts,
                    "unique_key": task.unique_key,
                    "payload": task.payload,
                    "options": task.options,
                    "created_at": task.created_at,
                },
            )
            row = cur.fetchone()
            if row is not None:
                if row[0] == "queued":
                    # Delivered on commit: waiting workers claim at once.
                    cur.execute("SELECT pg_notify(%s, %s)", (self._channel, task.queue))
                return Enqueued(task.id, True, row[0])
            # The same id stored before (a retry after a lost reply)...
            cur.execute(f"SELECT 1 FROM {self._tasks} WHERE id = %s", (task.id,))
            if cur.fetchone() is not None:
                return Enqueued(task.id, True)
            # ...or a live task holds the key.
            cur.execute(
                f"SELECT id FROM {self._tasks} WHERE unique_key = %s "
                "AND state IN ('blocked', 'scheduled', 'queued', 'running')",
                (task.unique_key,),
            )
            held = cur.fetchone()
            return Enqueued(str(held[0]), False) if held is not None else None
