"""Sharded fan-out end to end: DynamoDB and SQS on moto (server mode), the fan-out handler
consumed as Lambda's event source would, and the local ``@connections`` endpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st
from milequest.local.fanout import FanoutConsumer, FanoutQueues, create_fanout_queues
from milequest.services import register_service
from milequest.services.metrics import InMemorySink
from milequest.services.websocket import WebSocketError, WebSocketErrorCode, protocol
from milequest.services.websocket.apigateway import (
    CONNECTION_ATTRIBUTE,
    TTL_ATTRIBUTE,
    ApiGatewayWebSocketService,
)
from milequest.services.websocket.delivery import (
    MAX_SHARD_BYTES,
    Outcome,
    ShardJob,
    remainder_jobs,
    shard_jobs,
)

from .conftest import APP_KEY, APP_SECRET, new_connection_id
from .endpoints import ConnectionsState

_queues = iter(range(1, 10_000))


@pytest.fixture
def queues(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> FanoutQueues:
    """A fresh shard queue (2 s visibility, 3 receives before the DLQ) on moto."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_endpoint)
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint)
    return create_fanout_queues(
        sqs, name=f"fanout-{next(_queues)}", visibility_timeout=2, max_receive_count=3
    )


@pytest.fixture
def metrics() -> InMemorySink:
    return InMemorySink()


@pytest.fixture
def service(
    table: str,
    management_endpoint: str,
    queues: FanoutQueues,
    connections: ConnectionsState,
    metrics: InMemorySink,
) -> Iterator[ApiGatewayWebSocketService]:
    """The provider with small shards, registered for the fan-out handler."""
    svc = ApiGatewayWebSocketService(
        table_name=table,
        management_endpoint=management_endpoint,
        app_key=APP_KEY,
        app_secret=APP_SECRET,
        concurrency=32,
        max_attempts=2,
        fanout_queue_url=queues.queue_url,
        fanout_threshold=20,
        fanout_shard_size=25,
        fanout_shard_retries=1,
        metrics=metrics,
    )
    register_service("websocket", svc)
    yield svc
    svc.close()


@pytest.fixture
def consumer(moto_endpoint: str, queues: FanoutQueues) -> FanoutConsumer:
    """Lambda's SQS event source, one batch at a time (``drain``)."""
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint)
    return FanoutConsumer(sqs, queues, workers=1, batch_size=10, wait_seconds=0)


def drain(consumer: FanoutConsumer, queues: FanoutQueues, timeout: float = 60) -> int:
    """Run the handler on batches until the queue holds nothing, delayed or in flight."""
    sqs = consumer._sqs
    deadline = time.monotonic() + timeout
    batches = 0
    while time.monotonic() < deadline:
        if consumer.poll_once():
            batches += 1
            continue
        attributes = sqs.get_queue_attributes(
            QueueUrl=queues.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        if not any(int(v) for v in attributes.values()):
            return batches
        time.sleep(0.2)
    raise AssertionError("the shard queue did not drain")


def seed(
    moto_endpoint: str, table: str, channel: str, count: int, *, connections: bool = False
) -> list[str]:
    """``count`` subscriptions of ``channel`` written directly (and connection records)."""
    ddb = boto3.client("dynamodb", endpoint_url=moto_endpoint)
    ids = [new_connection_id() for _ in range(count)]
    expires = {"N": str(int(time.time()) + 7200)}
    items = []
    for cid in ids:
        common = {CONNECTION_ATTRIBUTE: {"S": cid}, TTL_ATTRIBUTE: expires}
        items.append({"pk": {"S": f"CHAN#{channel}"}, "sk": {"S": f"CONN#{cid}"}, **common})
        if connections:
            items.append({"pk": {"S": f"CONN#{cid}"}, "sk": {"S": "META"}, **common})
    for start in range(0, len(items), 25):
        ddb.batch_write_item(
            RequestItems={table: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]}
        )
    return ids


def events(connections: ConnectionsState, cid: str) -> list[Any]:
    return [f["data"] for f in connections.frames(cid) if not f["event"].startswith("pusher")]


def test_ten_thousand_subscribers_each_get_the_event_exactly_once(
    service: ApiGatewayWebSocketService,
    consumer: FanoutConsumer,
    queues: FanoutQueues,
    connections: ConnectionsState,
    moto_endpoint: str,
    table: str,
    metrics: InMemorySink,
) -> None:
    service.fanout_threshold = 2000
    service.fanout_shard_size = 500
    ids = seed(moto_endpoint, table, "stadium", 10_000)
    sender = ids[17]
    result = service.trigger("stadium", "goal", {"minute": 90}, socket_id=service.socket_id(sender))
    assert (result.delivered, result.shards, result.queued, result.excluded) == (0, 20, 9_999, 1)
    assert connections.requests == 0  # nothing inline: the workers deliver
    drain(consumer, queues, timeout=240)
    assert sorted(connections.posts) == sorted(set(ids) - {sender})
    assert all(len(posts) == 1 for posts in connections.posts.values())
    assert events(connections, ids[0]) == [{"minute": 90}]
    assert metrics.total("Deliveries") == 9_999


def test_small_channels_stay_inline(
    service: ApiGatewayWebSocketService,
    connections: ConnectionsState,
    moto_endpoint: str,
    table: str,
) -> None:
    ids = seed(moto_endpoint, table, "team", 20)  # the threshold itself: inline
    result = service.trigger("team", "ev", 1)
    assert (result.delivered, result.shards, result.queued) == (20, 0, 0)
    assert all(len(connections.posts[cid]) == 1 for cid in ids)


def test_a_batch_keeps_its_order_per_connection_and_channels_split_by_size(
    service: ApiGatewayWebSocketService,
    consumer: FanoutConsumer,
    queues: FanoutQueues,
    connections: ConnectionsState,
    moto_endpoint: str,
    table: str,
) -> None:
    crowd = seed(moto_endpoint, table, "crowd", 60)
    team = seed(moto_endpoint, table, "team", 3)
    result = service.trigger_batch(
        [
            {"channel": "crowd", "name": "a", "data": 1},
            {"channel": "team", "name": "b", "data": 2},
            {"channel": "crowd", "name": "c", "data": 3},
        ]
    )
    assert (result.events, result.delivered, result.shards, result.queued) == (3, 3, 3, 60)
    drain(consumer, queues)
    assert all(events(connections, cid) == [1, 3] for cid in crowd)
    assert all(events(connections, cid) == [2] for cid in team)


def test_a_shard_retried_after_a_partial_failure_goes_only_to_what_it_missed(
    service: ApiGatewayWebSocketService,
    consumer: FanoutConsumer,
    queues: FanoutQueues,
    connections: ConnectionsState,
    moto_endpoint: str,
    table: str,
    metrics: InMemorySink,
) -> None:
    ids = seed(moto_endpoint, table, "crowd", 50)
    flaky = set(ids[5:12])
    for cid in flaky:  # 500 for both attempts of the first pass, fine afterwards
        connections.fail[cid] = 2
    assert service.trigger("crowd", "ev", {"n": 1}).shards == 2
    drain(consumer, queues)
    assert all(len(connections.posts[cid]) == 1 for cid in ids)  # exactly once each
    assert {cid for cid in ids if connections.tries[cid] > 1} == flaky
    assert all(connections.tries[cid] == 3 for cid in flaky)  # 2 failed, then 1
    assert metrics.total("FailedDeliveries") == 0
    assert metrics.total("Deliveries") == 50


def test_a_subset_answering_500_is_retried_then_counted(
    service: ApiGatewayWebSocketService,
    consumer: FanoutConsumer,
    queues: FanoutQueues,
    connections: ConnectionsState,
    moto_endpoint: str,
    table: str,
    metrics: InMemorySink,
) -> None:
    ids = seed(moto_endpoint, table, "crowd", 40)
    broken = set(ids[::8])
    for cid in broken:
        connections.fail[cid] = 1000
    service.trigger("crowd", "ev", 1)
    drain(consumer, queues)
    healthy = set(ids) - broken
    assert set(connections.posts) == healthy
    assert all(len(connections.posts[cid]) == 1 for cid in healthy)
    # max_attempts (2) per pass, one pass and fanout_shard_retries (1) more
    assert all(connections.tries[cid] == 4 for cid in broken)
    assert metrics.total("FailedDeliveries") == len(broken)
    assert metrics.total("Deliveries") == len(healthy)


def test_connections_vanishing_mid_fanout_are_cleaned_up_not_retried(
    service: ApiGatewayWebSocketService,
    consumer: FanoutConsumer,
    queues: FanoutQueues,
    connections: ConnectionsState,
    moto_endpoint: str,
    table: str,
    metrics: InMemorySink,
) -> None:
    ids = seed(moto_endpoint, table, "crowd", 45, connections=True)
    vanished = set(ids[3:40:4])
    connections.gone.update(vanished)
    assert service.trigger("crowd", "ev", 1).queued == 45
    drain(consumer, queues)
    assert all(connections.tries[cid] == 1 for cid in vanished)
    assert set(connections.posts) == set(ids) - vanished
    assert metrics.total("GoneConnections") == len(vanished)
    assert service.get_channel_info("crowd").subscription_count == 45 - len(vanished)
    assert all(service._connection(cid) is None for cid in vanished)


def test_connections_past_the_deadline_are_queued_again_without_an_attempt(
    service: ApiGatewayWebSocketService,
    queues: FanoutQueues,
    connections: ConnectionsState,
    moto_endpoint: str,
    table: str,
) -> None:
    ids = seed(moto_endpoint, table, "crowd", 30)
    service.fanout_shard_retries = 0  # a counted attempt would be the last one

    class NoTimeLeft:
        def get_remaining_time_in_millis(self) -> int:
            return 1_000  # less than the handler's margin

    sqs = boto3.client("sqs", endpoint_url=moto_endpoint)
    late = FanoutConsumer(sqs, queues, handler=None, wait_seconds=0)
    service.trigger("crowd", "ev", 1)
    from milequest.handlers.fanout import handler

    received = sqs.receive_message(QueueUrl=queues.queue_url, MaxNumberOfMessages=10)["Messages"]
    records = [
        {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"]}
        for m in received
    ]
    assert handler({"Records": records}, NoTimeLeft()) == {"batchItemFailures": []}
    assert connections.requests == 0
    for m in received:
        sqs.delete_message(QueueUrl=queues.queue_url, ReceiptHandle=m["ReceiptHandle"])
    drain(late, queues)  # the requeued shards, now with time to spare
    assert all(len(connections.posts[cid]) == 1 for cid in ids)


def test_a_malformed_shard_ends_in_the_dead_letter_queue(
    service: ApiGatewayWebSocketService,
    connections: ConnectionsState,
    consumer: FanoutConsumer,
    queues: FanoutQueues,
    moto_endpoint: str,
) -> None:
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint)
    sqs.send_message(QueueUrl=queues.queue_url, MessageBody='{"channel": "x"}')
    good = {"channel": "c", "messages": ['{"event":"e","channel":"c","data":"1"}'],
            "connections": [new_connection_id()]}  # fmt: skip
    sqs.send_message(QueueUrl=queues.queue_url, MessageBody=json.dumps(good))
    drain(consumer, queues, timeout=30)
    dead = sqs.receive_message(QueueUrl=queues.dead_letter_queue_url, MaxNumberOfMessages=10)
    assert [m["Body"] for m in dead["Messages"]] == ['{"channel": "x"}']


def test_a_queue_that_refuses_shards_fails_the_trigger_as_retryable(
    table: str, management_endpoint: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_endpoint)
    svc = ApiGatewayWebSocketService(
        table_name=table,
        management_endpoint=management_endpoint,
        app_key=APP_KEY,
        app_secret=APP_SECRET,
        fanout_queue_url=f"{moto_endpoint}/123456789012/no-such-queue",
        fanout_threshold=2,
        max_attempts=1,
    )
    seed(moto_endpoint, table, "crowd", 5)
    with pytest.raises(WebSocketError) as err:
        svc.trigger("crowd", "ev", 1)
    assert err.value.code in (
        WebSocketErrorCode.PROVIDER_ERROR,
        WebSocketErrorCode.PROVIDER_UNAVAILABLE,
    )
    svc.close()


def test_a_crashed_worker_loses_nothing_and_duplicates_stay_in_its_shard(
    service: ApiGatewayWebSocketService,
    consumer: FanoutConsumer,
    queues: FanoutQueues,
    connections: ConnectionsState,
    management_endpoint: str,
    moto_endpoint: str,
    table: str,
) -> None:
    ids = seed(moto_endpoint, table, "crowd", 50)
    service.trigger("crowd", "ev", {"n": 1})  # two shards of 25
    connections.latency = 0.05
    # A worker process takes one shard, posting one connection at a time, and is killed
    # part of the way through.
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_WORKER],
        env={
            **os.environ,
            "TEST_TABLE": table,
            "TEST_ENDPOINT": management_endpoint,
            "TEST_QUEUE": json.dumps(
                [queues.queue_url, queues.queue_arn, queues.dead_letter_queue_url]
            ),
            "AWS_ENDPOINT_URL": moto_endpoint,
        },
    )
    try:
        deadline = time.monotonic() + 60
        while len(connections.posts) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    connections.latency = 0.0
    reached = {cid for cid, posts in connections.posts.items() if posts}
    assert 5 <= len(reached) < 25
    drain(consumer, queues)  # the other shard at once, the crashed one after its timeout
    counts = {cid: len(connections.posts[cid]) for cid in ids}
    assert all(count >= 1 for count in counts.values())  # nothing lost
    twice = {cid for cid, count in counts.items() if count == 2}
    assert twice  # what the crashed worker had reached is delivered again...
    assert twice <= reached  # ...and nothing else is
    assert max(counts.values()) <= 2


_CRASHING_WORKER = """
import json, os, boto3
from milequest.local.fanout import FanoutConsumer, FanoutQueues
from milequest.services import register_service
from milequest.services.websocket.apigateway import ApiGatewayWebSocketService

url, arn, dlq = json.loads(os.environ["TEST_QUEUE"])
service = ApiGatewayWebSocketService(
    table_name=os.environ["TEST_TABLE"], management_endpoint=os.environ["TEST_ENDPOINT"],
    app_key="k", app_secret="s", concurrency=1, fanout_queue_url=url,
)
register_service("websocket", service)
sqs = boto3.client("sqs")
FanoutConsumer(sqs, FanoutQueues(url, arn, dlq), batch_size=1, wait_seconds=5).poll_once()
"""


# -- the handler and the shard format, for any input ---------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_record = st.fixed_dictionaries(
    {},
    optional={
        "messageId": st.text(max_size=12) | _json,
        "body": st.text(max_size=60) | _json,
        "receiptHandle": st.text(max_size=8),
        "eventSource": st.just("aws:sqs"),
    },
)
_events = (
    _json
    | st.fixed_dictionaries({"Records": st.lists(_record | _json, max_size=6)})
    | st.builds(object)
)


@given(event=_events)
def test_property_the_handler_reports_every_bad_record_and_never_raises(
    service: ApiGatewayWebSocketService, connections: ConnectionsState, event: Any
) -> None:
    from milequest.handlers.fanout import handler

    out = handler(event, None)
    assert set(out) == {"batchItemFailures"}
    assert all(set(item) == {"itemIdentifier"} for item in out["batchItemFailures"])
    records = event.get("Records") if isinstance(event, dict) else None
    usable = [
        r["messageId"]
        for r in (records if isinstance(records, list) else [])
        if isinstance(r, dict) and isinstance(r.get("messageId"), str) and r["messageId"]
    ]
    # No generated body is a valid shard: every usable record is reported, nothing else.
    assert sorted(f["itemIdentifier"] for f in out["batchItemFailures"]) == sorted(usable)
    assert connections.requests == 0


def test_the_handler_fails_only_the_bad_records_of_a_batch(
    service: ApiGatewayWebSocketService, connections: ConnectionsState
) -> None:
    from milequest.handlers.fanout import handler

    cid = new_connection_id()
    job = ShardJob(channel="c", messages=[protocol.event("e", "c", "1")], connections=[cid])
    event = {
        "Records": [
            {"messageId": "good", "body": job.model_dump_json()},
            {"messageId": "bad", "body": "{}"},
            {"messageId": "no-body"},
        ]
    }
    out = handler(event, None)
    assert out == {"batchItemFailures": [{"itemIdentifier": "bad"}, {"itemIdentifier": "no-body"}]}
    assert connections.posts[cid] == [job.messages[0].encode()]


_ids = st.lists(st.from_regex(protocol.CONNECTION_ID_RE, fullmatch=True), max_size=300)
_frames = st.lists(st.text(max_size=300), min_size=1, max_size=10)


@given(ids=_ids, frames=_frames, shard_size=st.integers(1, 50))
def test_property_shards_cover_every_connection_once_within_the_limits(
    ids: list[str], frames: list[str], shard_size: int
) -> None:
    jobs = list(shard_jobs("crowd", frames, iter(ids), shard_size))
    assert [cid for job in jobs for cid in job.connections] == ids
    assert all(job.messages == frames for job in jobs)
    assert all(len(job.connections) <= shard_size for job in jobs)
    assert all(len(job.model_dump_json()) <= MAX_SHARD_BYTES for job in jobs)


def test_frames_too_big_for_one_shard_are_split_in_order() -> None:
    big = ["x" * 100_000, "y" * 100_000, "z" * 100_000]
    ids = [new_connection_id() for _ in range(30)]
    jobs = list(shard_jobs("crowd", big, ids, 500))
    assert [job.messages for job in jobs] == [big[:1], big[1:2], big[2:]]
    assert all(job.connections == ids for job in jobs)
    assert all(len(job.model_dump_json()) <= MAX_SHARD_BYTES for job in jobs)


@given(
    results=st.lists(
        st.tuples(st.integers(0, 3), st.booleans(), st.booleans()), min_size=1, max_size=40
    ),
    attempt=st.integers(0, 5),
)
def test_property_a_remainder_holds_exactly_what_was_missed(
    results: list[tuple[int, bool, bool]], attempt: int
) -> None:
    frames = ["a", "b", "c"]
    ids = [f"c{i}" for i in range(len(results))]
    job = ShardJob(channel="crowd", messages=frames, connections=ids, attempt=attempt)
    outcomes = [
        Outcome(cid, delivered=delivered, gone=gone, attempted=attempted or delivered > 0)
        for cid, (delivered, gone, attempted) in zip(ids, results, strict=True)
    ]
    again = remainder_jobs(job, outcomes)
    missed = {o.connection_id: o for o in outcomes if not o.gone and o.delivered < 3}
    assert sorted(cid for j in again for cid in j.connections) == sorted(missed)
    for remainder in again:
        for cid in remainder.connections:
            outcome = missed[cid]
            assert remainder.messages == frames[outcome.delivered :]
            assert remainder.attempt == attempt + (1 if outcome.attempted else 0)


def test_a_refusing_management_api_fails_each_shard_after_its_retries(
    service: ApiGatewayWebSocketService,
    consumer: FanoutConsumer,
    queues: FanoutQueues,
    connections: ConnectionsState,
    moto_endpoint: str,
    table: str,
    metrics: InMemorySink,
) -> None:
    seed(moto_endpoint, table, "crowd", 30)
    connections.forbid = True
    assert service.trigger("crowd", "ev", 1).shards == 2
    drain(consumer, queues)  # each shard, then its remainder once (fanout_shard_retries=1)
    assert not connections.posts
    assert metrics.total("FailedDeliveries") == 30
    assert metrics.total("Deliveries") == 0
