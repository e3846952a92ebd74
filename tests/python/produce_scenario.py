"""The Python producer test's enqueues (tests/tests/foreign_producer.rs runs this).

    python produce_scenario.py redis    <redis url>    <key prefix> first|again
    python produce_scenario.py postgres <postgres url> <schema>     first|again

`first` enqueues `python.add` tasks by the documented wire format; `again`, once an OmniQ
worker has run those, sends their two unique keys again. Each prints, as one JSON object,
what the Rust side checks.
"""

import json
import sys

import omniq_producer
from omniq_producer import PostgresProducer, RedisProducer, fixed_backoff

QUEUE = "python"
PLAIN = 20


def scenario(producer):
    out = {}
    # Plain tasks in MessagePack (the default codec).
    out["plain"] = [
        producer.enqueue("python.add", {"a": i, "b": 10 * i}, queue=QUEUE).id
        for i in range(PLAIN)
    ]
    # A JSON payload, with metadata, a timeout and a TTL.
    out["json"] = producer.enqueue(
        "python.add",
        {"a": 1000, "b": 1},
        queue=QUEUE,
        codec="json",
        metadata={"source": "python"},
        timeout=30.0,
        ttl=3600.0,
    ).id
    # Fails its first attempt: two attempts and a fixed backoff of 50 ms from the options.
    out["retried"] = producer.enqueue(
        "python.add",
        {"a": 7, "b": 7, "fail_first": True},
        queue=QUEUE,
        max_attempts=2,
        backoff=fixed_backoff(0.05),
    ).id
    # Due in two seconds.
    delayed = producer.enqueue(
        "python.add", {"a": 2, "b": 2}, queue=QUEUE, delay=2.0
    )
    out["delayed"] = delayed.id
    out["delayed_state"] = delayed.state
    # A unique key, sent twice: the second finds the first.
    first = producer.enqueue(
        "python.add", {"a": 5, "b": 5}, queue=QUEUE, unique_key="python-once"
    )
    again = producer.enqueue(
        "python.add", {"a": 6, "b": 6}, queue=QUEUE, unique_key="python-once"
    )
    out["unique"] = first.id
    out["unique_again"] = {"id": again.id, "created": again.created}
    # A key with a dedupe window, sent twice.
    windowed = producer.enqueue(
        "python.add",
        {"a": 8, "b": 8},
        queue=QUEUE,
        unique_key="python-window",
        unique_for=60.0,
    )
    windowed_again = producer.enqueue(
        "python.add",
        {"a": 9, "b": 9},
        queue=QUEUE,
        unique_key="python-window",
        unique_for=60.0,
    )
    out["windowed"] = windowed.id
    out["windowed_again"] = {"id": windowed_again.id, "created": windowed_again.created}
    # Enqueued last, with the highest priority: a worker of one slot runs it first.
    out["urgent"] = producer.enqueue(
        "python.add", {"a": 100, "b": 0}, queue=QUEUE, priority=10
    ).id
    return out


def again(producer):
    """The unique keys once their tasks have finished: a plain key is free again, a key
    with a dedupe window still answers the task created inside the window."""
    once = producer.enqueue(
        "python.add", {"a": 50, "b": 5}, queue=QUEUE, unique_key="python-once"
    )
    windowed = producer.enqueue(
        "python.add",
        {"a": 60, "b": 6},
        queue=QUEUE,
        unique_key="python-window",
        unique_for=60.0,
    )
    return {
        "once": {"id": once.id, "created": once.created},
        "windowed": {"id": windowed.id, "created": windowed.created},
    }


def garbage(producer, client, prefix):
    """What the script refuses, storing nothing: an id in another form, an empty queue, a
    priority that is not an integer, no attempt, an unknown run_when, options that are not
    JSON. Answers the refusals, and whether anything was stored."""
    refused, stored = [], False
    for field, value in (
        (5, "0192F2A4-0000-7000-8000-000000000000"),
        (6, ""),
        (9, "5.0"),
        (12, "0"),
        (17, "whenever"),
        (19, "not json"),
    ):
        task = omniq_producer._task(
            "python.add", {"a": 1, "b": 1}, queue=QUEUE, priority=0, delay=0.0,
            run_at=None, ttl=None, max_attempts=3, unique_key=None, unique_for=None,
            backoff=None, timeout=None, metadata=None, codec="msgpack", task_id=None,
        )
        keys, args = producer._arguments(task)
        args[field] = value
        tag, why = producer._script(keys=keys, args=args)
        refused.append(f"{tag.decode()}: {why.decode()}")
        for candidate in (task.id, value):
            stored = stored or client.exists(f"{{{prefix}}}:task:{candidate}") > 0
    return {"refused": refused, "stored": stored}


def main():
    backend, url, place, phase = sys.argv[1:5]
    if backend == "redis":
        import redis

        client = redis.Redis.from_url(url)
        producer = RedisProducer(client, prefix=place)
        if phase == "first":
            out = scenario(producer)
            out["garbage"] = garbage(producer, client, place)
        else:
            out = again(producer)
        client.close()
    elif backend == "postgres":
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            producer = PostgresProducer(conn, schema=place)
            out = scenario(producer) if phase == "first" else again(producer)
    else:
        raise SystemExit(f"unknown backend {backend!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
