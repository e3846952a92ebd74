"""The Python producer test's enqueues (tests/tests/foreign_producer.rs runs this).

    python produce_scenario.py redis    <redis url>      <key prefix>
    python produce_scenario.py postgres <postgres url>   <schema>

Enqueues `python.add` tasks by the documented wire format and prints, as one JSON object,
what the Rust side checks once an OmniQ worker has run them.
"""

import json
import sys

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
    # A JSON payload, with metadata.
    out["json"] = producer.enqueue(
        "python.add",
        {"a": 1000, "b": 1},
        queue=QUEUE,
        codec="json",
        metadata={"source": "python"},
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


def main():
    backend, url, place = sys.argv[1:4]
    if backend == "redis":
        import redis

        client = redis.Redis.from_url(url)
        out = scenario(RedisProducer(client, prefix=place))
        client.close()
    elif backend == "postgres":
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            out = scenario(PostgresProducer(conn, schema=place))
    else:
        raise SystemExit(f"unknown backend {backend!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
