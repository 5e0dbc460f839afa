"""API Gateway WebSocket provider: connections and subscriptions in DynamoDB.

Fan-out posts to each connection through the management API's ``@connections`` resource on
the signed HTTP path of :mod:`.delivery` (many requests in flight, retried like botocore's
standard mode); everything else (DynamoDB, ``delete_connection``, a connection's first
frame) goes through boto3.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ValidationError

from milequest.services.errors import ServiceError
from milequest.services.health import HealthState
from milequest.services.metrics import MetricsSink

from . import protocol, webhooks
from .delivery import (
    ConnectionPoster,
    Failure,
    ShardJob,
    ShardQueue,
    ShardQueueError,
    management_region,
    remainder_jobs,
    shard_jobs,
)
from .errors import WebSocketError
from .models import (
    BatchEvent,
    ChannelInfo,
    ChannelUser,
    PresenceUser,
    ShardReport,
    SubscriptionResult,
    TriggerResult,
    WebhookEvent,
)
from .protocol import is_presence
from .service import ConnectionService, _brief, merge_results

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger("milequest.services.websocket")

# Single-table design. Items:
#   connection       pk=CONN#<id>      sk=META          user_id?, connected_at
#   subscription     pk=CHAN#<channel> sk=CONN#<id>     user_id?, user_info? (presence)
#   presence member  pk=CHAN#<channel> sk=USER#<user>   connections (count), user_info
#   occupancy        pk=CHAN#<channel> sk=COUNT         subscriptions (count), channel_list
#   client-event rate pk=CONN#<id>     sk=RATE#<second>  events (count)
# Connection and subscription items carry ``connection_id`` (the by-connection index finds a
# connection's subscriptions on disconnect). The two counter items are updated atomically
# (ADD), so "first/last connection of a user" and "channel occupied/vacated" are exact even
# when clients subscribe concurrently. Every item has ``expires_at`` (TTL: about connect time
# + 2 h, because $disconnect is best effort). Occupancy items carry ``channel_list`` (one
# constant value), so the ``channels`` index lists occupied channels by prefix with a Query;
# it is keys-only, so counter updates do not write to it (only occupy/vacate do).
# ``#server-to-user-<id>`` channels (a signed-in user's connections) have subscription items
# but no counters: they are never listed, counted or reported in webhooks.
PARTITION_KEY = "pk"
SORT_KEY = "sk"
CONNECTION_INDEX = "by_connection"
TTL_ATTRIBUTE = "expires_at"
CONNECTION_ATTRIBUTE = "connection_id"
CHANNELS_INDEX = "channels"
CHANNEL_LIST_ATTRIBUTE = "channel_list"
_OCCUPIED = "OCCUPIED"
# TTL deletion lags expiry (up to days): expired items are ignored when counting.
_NOT_EXPIRED = "#exp > :now"


def table_definition() -> dict[str, Any]:
    """``CreateTable`` keyword arguments (all but ``TableName``) for the connections table.

    The CDK app and the local stack both build the table from this; TTL is set separately
    on ``TTL_ATTRIBUTE`` (``UpdateTimeToLive`` is not part of ``CreateTable``).
    """
    return {
        "AttributeDefinitions": [
            {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": SORT_KEY, "AttributeType": "S"},
            {"AttributeName": CONNECTION_ATTRIBUTE, "AttributeType": "S"},
            {"AttributeName": CHANNEL_LIST_ATTRIBUTE, "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": CONNECTION_INDEX,
                "KeySchema": [
                    {"AttributeName": CONNECTION_ATTRIBUTE, "KeyType": "HASH"},
                    {"AttributeName": PARTITION_KEY, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": CHANNELS_INDEX,
                "KeySchema": [
                    {"AttributeName": CHANNEL_LIST_ATTRIBUTE, "KeyType": "HASH"},
                    {"AttributeName": PARTITION_KEY, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            },
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }


def _conn_pk(connection_id: str) -> str:
    return f"CONN#{connection_id}"


def _chan_pk(channel: str) -> str:
    return f"CHAN#{channel}"


@dataclass
class _Members:
    """A channel's connection ids as the Query pages them, and how many were excluded."""

    ids: Iterator[str] = field(default_factory=lambda: iter(()))
    excluded: int = 0


@dataclass(frozen=True)
class _Route:
    """How one channel is delivered: to ``connections`` inline, or in ``shards``."""

    connections: list[str]
    excluded: int
    shards: int = 0
    queued: int = 0


@dataclass(frozen=True)
class _Plan:
    """A trigger's inline (connection, frame) targets and what went to shards."""

    targets: list[tuple[str, bytes]]
    excluded: int
    shards: int
    queued: int


def _merged(results: Sequence[TriggerResult]) -> TriggerResult:
    """:func:`merge_results`, with the shards of every part."""
    return merge_results(results).model_copy(
        update={"shards": sum(r.shards for r in results), "queued": sum(r.queued for r in results)}
    )


def _requeue_delay(attempt: int) -> int:
    """Seconds before a shard's remainder is tried again: full jitter, doubling (SQS's
    ``DelaySeconds`` is whole seconds, at most 900)."""
    return random.randint(1, min(900, 2**attempt))


def _http_status(exc: Exception) -> int:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return 0
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class ApiGatewayWebSocketService(ConnectionService):
    """The ``apigateway`` provider (API Gateway WebSocket API + DynamoDB)."""

    provider_name: ClassVar[str] = "apigateway"

    def __init__(
        self,
        *,
        table_name: str,
        management_endpoint: str,
        app_key: str | None,
        app_secret: str | None,
        max_payload_bytes: int = 128 * 1024,
        encryption_master_key: bytes | None = None,
        concurrency: int = 256,
        post_timeout: float = 5.0,
        fanout_queue_url: str | None = None,
        fanout_threshold: int = 2000,
        fanout_shard_size: int = 500,
        fanout_shard_retries: int = 3,
        connection_ttl_seconds: int = 2 * 3600 + 600,
        client_event_rate: int = 10,
        announce_timeout_seconds: float = 10.0,
        webhook_url: str | None = None,
        max_attempts: int = 5,
        retry_mode: str = "standard",
        metrics: MetricsSink | None = None,
    ) -> None:
        super().__init__(
            app_key=app_key,
            app_secret=app_secret,
            max_payload_bytes=max_payload_bytes,
            encryption_master_key=encryption_master_key,
            metrics=metrics,
        )
        self.table_name = table_name
        self.management_endpoint = management_endpoint
        self.concurrency = concurrency
        self.post_timeout = post_timeout
        self.fanout_queue_url = fanout_queue_url
        self.fanout_threshold = fanout_threshold
        self.fanout_shard_size = fanout_shard_size
        self.fanout_shard_retries = fanout_shard_retries
        self.connection_ttl_seconds = connection_ttl_seconds
        self.client_event_rate = client_event_rate
        self.announce_timeout_seconds = announce_timeout_seconds
        self.webhook_url = webhook_url
        self._max_attempts = max_attempts
        self._retry_mode = retry_mode
        self._lock = threading.Lock()
        self._ddb: DynamoDBClient | None = None
        self._mgmt: ApiGatewayManagementApiClient | None = None
        self._poster_instance: ConnectionPoster | None = None
        self._sqs: SQSClient | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._cleanup_pool: ThreadPoolExecutor | None = None

    # -- clients -----------------------------------------------------------------------------

    def _clients(self) -> tuple[DynamoDBClient, ApiGatewayManagementApiClient]:
        ddb, mgmt = self._ddb, self._mgmt
        if ddb is not None and mgmt is not None:  # every post comes here: no lock once made
            return ddb, mgmt
        with self._lock:
            if self._ddb is None or self._mgmt is None:
                import boto3
                from botocore.config import Config

                retries: Any = {
                    "mode": self._retry_mode,
                    "total_max_attempts": self._max_attempts,  # the first call included
                }
                self._ddb = boto3.client(
                    "dynamodb",
                    config=Config(retries=retries, max_pool_connections=self.concurrency),
                )
                self._mgmt = boto3.client(
                    "apigatewaymanagementapi",
                    endpoint_url=self.management_endpoint,
                    config=Config(
                        retries=retries,
                        connect_timeout=self.post_timeout,
                        read_timeout=self.post_timeout,
                        tcp_keepalive=True,
                    ),
                )
            return self._ddb, self._mgmt

    def _poster(self) -> ConnectionPoster:
        poster = self._poster_instance
        if poster is not None:
            return poster
        with self._lock:
            if self._poster_instance is None:
                import boto3

                # The process's default session, which the boto3 clients use: one credential
                # chain, resolved and refreshed once for both.
                if boto3.DEFAULT_SESSION is None:
                    boto3.setup_default_session()
                session = boto3.DEFAULT_SESSION
                assert session is not None
                credentials = session.get_credentials()
                if credentials is None:
                    raise self._error(
                        "CONFIGURATION", "no AWS credentials to sign management API calls with"
                    )
                region = management_region(self.management_endpoint, session.region_name)
                if region is None:
                    raise self._error(
                        "CONFIGURATION",
                        "no region to sign management API calls for: set AWS_REGION",
                    )
                self._poster_instance = ConnectionPoster(
                    self.management_endpoint,
                    region=region,
                    credentials=credentials,
                    concurrency=self.concurrency,
                    max_attempts=self._max_attempts,
                    retry_mode=self._retry_mode,
                    timeout=self.post_timeout,
                )
            return self._poster_instance

    def _sqs_client(self) -> SQSClient:
        with self._lock:
            if self._sqs is None:
                import boto3
                from botocore.config import Config

                retries: Any = {"mode": self._retry_mode, "total_max_attempts": self._max_attempts}
                self._sqs = boto3.client("sqs", config=Config(retries=retries))
            return self._sqs

    def _shard_queue(self) -> ShardQueue | None:
        """Where large channels' shards go; None: every channel is delivered inline."""
        if not self.fanout_queue_url:
            return None
        return ShardQueue(self._sqs_client, self.fanout_queue_url)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.concurrency, thread_name_prefix="ws-fanout"
                )
            return self._pool

    def _cleaner(self) -> ThreadPoolExecutor:
        # Separate from the fan-out pool: a cleanup may fan out presence notices on that
        # pool, and waiting on a pool from inside it could deadlock.
        with self._lock:
            if self._cleanup_pool is None:
                self._cleanup_pool = ThreadPoolExecutor(
                    max_workers=min(8, self.concurrency), thread_name_prefix="ws-cleanup"
                )
            return self._cleanup_pool

    def close(self) -> None:
        """Stop the worker threads and close pooled connections (both come back on use)."""
        with self._lock:
            pools, self._pool, self._cleanup_pool = (self._pool, self._cleanup_pool), None, None
            poster, self._poster_instance = self._poster_instance, None
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True)
        if poster is not None:
            poster.close()

    # -- table access ------------------------------------------------------------------------

    def _expiry(self) -> str:
        return str(int(time.time()) + self.connection_ttl_seconds)

    def _pages(self, **kwargs: Any) -> Iterator[Any]:
        ddb, _ = self._clients()
        yield from ddb.get_paginator("query").paginate(TableName=self.table_name, **kwargs)

    def _query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        for page in self._pages(**kwargs):
            yield from page.get("Items", [])

    @staticmethod
    def _in_channel(channel: str, prefix: str, *, live: bool = False) -> dict[str, Any]:
        """Query arguments for the items of ``channel`` whose sort key starts with ``prefix``.

        ``live``: only unexpired items, read consistently (for counts and member lists).
        """
        values = {":pk": {"S": _chan_pk(channel)}, ":prefix": {"S": prefix}}
        query: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": values,
        }
        if live:
            values[":now"] = {"N": str(int(time.time()))}
            query.update(
                FilterExpression=_NOT_EXPIRED,
                ExpressionAttributeNames={"#exp": TTL_ATTRIBUTE},
                ConsistentRead=True,
            )
        return query

    def _subscriptions(self, channel: str) -> Iterator[dict[str, Any]]:
        """The channel's subscription items (connection id and, on presence, user id)."""
        yield from self._query(
            **self._in_channel(channel, "CONN#"),
            ProjectionExpression=f"{CONNECTION_ATTRIBUTE}, user_id",
        )

    def _members(self, channel: str) -> dict[str, dict[str, Any] | None]:
        members: dict[str, dict[str, Any] | None] = {}
        for item in self._query(**self._in_channel(channel, "USER#", live=True)):
            info = item.get("user_info", {}).get("S")
            members[item["sk"]["S"][len("USER#") :]] = json.loads(info) if info else None
        return members

    def _count(self, channel: str, prefix: str) -> int:
        query = self._in_channel(channel, prefix, live=True)
        return sum(page.get("Count", 0) for page in self._pages(**query, Select="COUNT"))

    def _add(
        self,
        key: dict[str, Any],
        attribute: str,
        delta: int,
        *,
        expires: str | None = None,
        initial: dict[str, str] | None = None,
        **extra: str,
    ) -> int:
        """Atomically add ``delta`` to a counter item; returns the new value.

        ``extra`` attributes are set on every call, ``initial`` ones only when absent.
        """
        ddb, _ = self._clients()
        initial = initial or {}
        sets = [f"{TTL_ATTRIBUTE} = :exp"] + [f"{name} = :{name}" for name in extra]
        sets += [f"{name} = if_not_exists({name}, :{name})" for name in initial]
        values: dict[str, Any] = {":d": {"N": str(delta)}, ":exp": {"N": expires or self._expiry()}}
        values.update({f":{name}": {"S": value} for name, value in {**extra, **initial}.items()})
        out = ddb.update_item(
            TableName=self.table_name,
            Key=key,
            UpdateExpression=f"ADD {attribute} :d SET " + ", ".join(sets),
            ExpressionAttributeValues=values,
            ReturnValues="UPDATED_NEW",
        )
        return int(out["Attributes"][attribute]["N"])

    def _add_to_channel(
        self,
        channel: str,
        sk: str,
        attribute: str,
        delta: int,
        initial: dict[str, str] | None = None,
        **extra: str,
    ) -> int:
        key = {"pk": {"S": _chan_pk(channel)}, "sk": {"S": sk}}
        return self._add(key, attribute, delta, initial=initial, **extra)

    def _drop_counter(self, channel: str, sk: str, attribute: str) -> None:
        """Delete a counter item that reached zero (unless someone bumped it meanwhile)."""
        ddb, _ = self._clients()
        with contextlib.suppress(ddb.exceptions.ConditionalCheckFailedException):
            ddb.delete_item(
                TableName=self.table_name,
                Key={"pk": {"S": _chan_pk(channel)}, "sk": {"S": sk}},
                ConditionExpression=f"{attribute} <= :zero",
                ExpressionAttributeValues={":zero": {"N": "0"}},
            )

    # -- fan-out -----------------------------------------------------------------------------

    def _fanout(self, targets: list[tuple[str, bytes]]) -> tuple[int, list[str], int]:
        """Post every (connection, data); returns delivered, gone connection ids, failed.

        Each connection gets its messages in order. Raises the mapped error when nothing
        could be delivered and no connection was found gone (the endpoint is down, say).
        """
        grouped: dict[str, list[bytes]] = {}
        for connection_id, data in targets:
            grouped.setdefault(connection_id, []).append(data)
        if not grouped:
            return 0, [], 0
        outcomes = self._poster().post_many(list(grouped.items()))
        delivered = sum(o.delivered for o in outcomes)
        gone = [o.connection_id for o in outcomes if o.gone]
        missed = [o for o in outcomes if not o.gone and o.delivered < len(grouped[o.connection_id])]
        failed = sum(len(grouped[o.connection_id]) - o.delivered for o in missed)
        if missed:
            first = next((o.failure for o in missed if o.failure is not None), None)
            logger.warning("%d connection(s) not reached; first failure: %s", len(missed), first)
            if not delivered and not gone:
                raise self._failure_error(first)
        return delivered, gone, failed

    def _failure_error(self, failure: Failure | None) -> ServiceError:
        if failure is None:
            return self._error("PROVIDER_UNAVAILABLE", "no delivery was attempted", retryable=True)
        code = {
            "throttled": "RATE_LIMITED",
            "unavailable": "PROVIDER_UNAVAILABLE",
            "unreachable": "PROVIDER_UNAVAILABLE",
            "forbidden": "CONFIGURATION",
        }.get(failure.kind, "PROVIDER_ERROR")
        return self._error(code, failure.message, retryable=failure.retryable)

    def _deliver(self, plan: _Plan, channels: list[str]) -> TriggerResult:
        delivered, gone, failed = self._fanout(plan.targets)
        self._clean_up(gone)
        self.record_metric("Deliveries", delivered)
        self.record_metric("GoneConnections", len(gone))
        self.record_metric("FailedDeliveries", failed)
        if plan.shards:
            self.record_metric("ShardsQueued", plan.shards)
        return TriggerResult(
            channels=channels,
            delivered=delivered,
            gone=len(gone),
            failed=failed,
            excluded=plan.excluded,
            shards=plan.shards,
            queued=plan.queued,
        )

    def _clean_up(self, gone: list[str]) -> None:
        if len(gone) == 1:
            self._forget(gone)
        elif gone:
            list(self._cleaner().map(lambda cid: self._forget([cid]), gone))

    def _channel_connections(self, channel: str, exclude: str | None) -> _Members:
        """The channel's connection ids (a small projection, page by page), minus ``exclude``."""
        members = _Members()

        def ids() -> Iterator[str]:
            for item in self._query(
                **self._in_channel(channel, "CONN#"), ProjectionExpression=CONNECTION_ATTRIBUTE
            ):
                connection_id = item[CONNECTION_ATTRIBUTE]["S"]
                if connection_id == exclude:
                    members.excluded += 1
                else:
                    yield connection_id

        members.ids = ids()
        return members

    def _route(self, channel: str, frames: list[str], exclude: str | None) -> _Route:
        """Inline for a small channel; above the threshold (with a queue), fan-out shards.

        The first ``fanout_threshold + 1`` ids decide; a large channel's ids then go
        straight from the Query's pages into shards, never all held at once.
        """
        members = self._channel_connections(channel, exclude)
        head = list(itertools.islice(members.ids, self.fanout_threshold + 1))
        queue = self._shard_queue()
        if queue is None or len(head) <= self.fanout_threshold:
            return _Route(head + list(members.ids), members.excluded)
        jobs = shard_jobs(
            channel, frames, itertools.chain(head, members.ids), self.fanout_shard_size
        )
        try:
            shards, queued = queue.send(jobs)
        except ShardQueueError as exc:
            raise self._error("PROVIDER_UNAVAILABLE", str(exc), retryable=True) from None
        logger.info("channel %s: %d connections in %d shards", channel, queued, shards)
        return _Route([], members.excluded, shards, queued)

    def _plan(self, wanted: list[tuple[str, str, str | None]]) -> _Plan:
        """Where each (channel, frame, excluded connection) goes: targets or shards.

        Each channel is read once (its Queries run on the fan-out pool); inline targets
        keep the order of ``wanted``, so each connection gets its messages in that order,
        and a sharded channel's frames travel together in its shards.
        """
        keys = list(dict.fromkeys((channel, exclude) for channel, _, exclude in wanted))
        frames = {key: [f for c, f, x in wanted if (c, x) == key] for key in keys}
        if len(keys) == 1:
            routes = {keys[0]: self._route(keys[0][0], frames[keys[0]], keys[0][1])}
        else:
            found = self._executor().map(lambda k: self._route(k[0], frames[k], k[1]), keys)
            routes = dict(zip(keys, found, strict=True))
        targets = [
            (connection_id, frame.encode())
            for channel, frame, exclude in wanted
            for connection_id in routes[channel, exclude].connections
        ]
        return _Plan(
            targets,
            excluded=sum(routes[channel, exclude].excluded for channel, _, exclude in wanted),
            shards=sum(r.shards for r in routes.values()),
            queued=sum(r.queued for r in routes.values()),
        )

    def _excluded(self, socket_id: str | None) -> str | None:
        return self._connection_of(socket_id) if socket_id is not None else None

    # -- fan-out workers ---------------------------------------------------------------------

    def deliver_shard(
        self, job: ShardJob | Mapping[str, Any] | str | bytes, *, deadline: float | None = None
    ) -> ShardReport:
        """Deliver one fan-out shard (what :mod:`milequest.handlers.fanout` calls per record).

        Gone connections are cleaned up. What could not be delivered is queued again as a
        new shard holding only those connections, from the message each one missed, after
        a jittered delay; once the shard has been retried ``fanout_shard_retries`` times
        its failures are counted (``FailedDeliveries``) instead. Connections not started by
        ``deadline`` (``time.monotonic()``) are queued again at once. Raises
        ``INVALID_MESSAGE`` for a malformed job and ``PROVIDER_UNAVAILABLE`` when the
        remainder could not be queued (the whole shard must then be retried).
        """
        return self._run("deliver_shard", self._deliver_shard, self._shard_job(job), deadline)

    def _shard_job(self, job: object) -> ShardJob:
        try:
            if isinstance(job, ShardJob):
                return job
            if isinstance(job, str | bytes):
                return ShardJob.model_validate_json(job)
            return ShardJob.model_validate(job)
        except ValidationError as exc:
            raise self._error("INVALID_MESSAGE", f"not a fan-out shard: {_brief(exc)}") from None

    def _deliver_shard(self, job: ShardJob, deadline: float | None) -> ShardReport:
        frames = [frame.encode() for frame in job.messages]
        outcomes = self._poster().post_many(
            [(cid, frames) for cid in job.connections], deadline=deadline
        )
        delivered = sum(o.delivered for o in outcomes)
        gone = [o.connection_id for o in outcomes if o.gone]
        try:
            self._clean_up(gone)
        except Exception as exc:  # the records expire anyway (TTL); the deliveries stand
            logger.warning("could not clean up %d gone connection(s): %s", len(gone), exc)
        again = remainder_jobs(job, outcomes)
        retry = [j for j in again if j.attempt <= self.fanout_shard_retries]
        given_up = [j for j in again if j.attempt > self.fanout_shard_retries]
        failed = sum(len(j.messages) * len(j.connections) for j in given_up)
        if given_up:
            first = next((o.failure for o in outcomes if o.failure is not None), None)
            logger.error(
                "shard of %s: %d connection(s) given up after %d attempts; last failure: %s",
                job.channel,
                sum(len(j.connections) for j in given_up),
                job.attempt + 1,
                first,
            )
        self.record_metric("Deliveries", delivered)
        self.record_metric("GoneConnections", len(gone))
        self.record_metric("FailedDeliveries", failed)
        self._requeue(job, retry)
        return ShardReport(
            channel=job.channel,
            connections=len(job.connections),
            delivered=delivered,
            gone=len(gone),
            requeued=sum(len(j.connections) for j in retry),
            failed=failed,
        )

    def _requeue(self, job: ShardJob, remainders: list[ShardJob]) -> None:
        """Queue what a shard missed: at once when it was never tried, else after a delay."""
        if not remainders:
            return
        queue = self._shard_queue()
        if queue is None:
            raise self._error(
                "CONFIGURATION", "no fan-out queue (WEBSOCKET_FANOUT_QUEUE_URL) to retry into"
            )
        try:
            for remainder in remainders:
                tried = remainder.attempt > job.attempt
                delay = _requeue_delay(remainder.attempt) if tried else 0
                queue.send([remainder], delay_seconds=delay)
        except ShardQueueError as exc:
            raise self._error("PROVIDER_UNAVAILABLE", str(exc), retryable=True) from None

    # -- WebSocketService hooks --------------------------------------------------------------

    def _payload_size(self, channel: str, event: str, data: str) -> int:
        return len(protocol.event(event, channel, data).encode())

    def _trigger(
        self, channels: list[str], event: str, data: str, socket_id: str | None
    ) -> TriggerResult:
        exclude = self._excluded(socket_id)
        plan = self._plan([(c, protocol.event(event, c, data), exclude) for c in channels])
        return self._deliver(plan, channels)

    def _trigger_batch(self, events: list[BatchEvent]) -> TriggerResult:
        plan = self._plan(
            [
                (e.channel, protocol.event(e.name, e.channel, e.data), self._excluded(e.socket_id))
                for e in events
            ]
        )
        result = self._deliver(plan, list(dict.fromkeys(e.channel for e in events)))
        return result.model_copy(update={"events": len(events)})

    def _trigger_chunks(
        self, chunks: list[list[str]], event: str, data: str, socket_id: str | None
    ) -> TriggerResult:
        return _merged([self._trigger(c, event, data, socket_id) for c in chunks])

    def _trigger_batch_chunks(self, chunks: list[list[BatchEvent]]) -> TriggerResult:
        return _merged([self._trigger_batch(c) for c in chunks])

    def _channel_info(self, channel: str, attributes: tuple[str, ...]) -> ChannelInfo:
        subscriptions = self._count(channel, "CONN#")
        users = self._count(channel, "USER#") if "user_count" in attributes else None
        return ChannelInfo(
            channel=channel,
            occupied=subscriptions > 0,
            subscription_count=subscriptions if "subscription_count" in attributes else None,
            user_count=users,
        )

    def _channels(self, prefix: str, attributes: tuple[str, ...]) -> dict[str, ChannelInfo]:
        items = self._query(
            IndexName=CHANNELS_INDEX,
            KeyConditionExpression=f"{CHANNEL_LIST_ATTRIBUTE} = :o AND begins_with(pk, :p)",
            ExpressionAttributeValues={
                ":o": {"S": _OCCUPIED},
                ":p": {"S": _chan_pk(prefix)},
            },
        )
        names = [item["pk"]["S"][len("CHAN#") :] for item in items]
        return {
            name: ChannelInfo(
                channel=name,
                occupied=True,
                user_count=self._count(name, "USER#") if "user_count" in attributes else None,
            )
            for name in names
        }

    def _channel_users(self, channel: str) -> list[ChannelUser]:
        return [ChannelUser(id=uid, user_info=info) for uid, info in self._members(channel).items()]

    def _terminate_user(self, user_id: str) -> int:
        """Tell each of the user's connections why (4009), then close it."""
        channel = protocol.server_to_user_channel(user_id)
        connection_ids = [item[CONNECTION_ATTRIBUTE]["S"] for item in self._subscriptions(channel)]
        notice = protocol.error("Connection terminated by the application", 4009).encode()
        self._fanout_quietly([(cid, notice) for cid in connection_ids])
        _, mgmt = self._clients()
        for connection_id in connection_ids:
            with contextlib.suppress(mgmt.exceptions.GoneException):
                mgmt.delete_connection(ConnectionId=connection_id)
        if connection_ids:
            self._forget(connection_ids)
        return len(connection_ids)

    def _probe(self) -> tuple[HealthState, dict[str, Any]]:
        ddb, _ = self._clients()
        ddb.query(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": "HEALTH#probe"}},
            Limit=1,
        )
        return HealthState.HEALTHY, {
            "table": self.table_name,
            "management_endpoint": self.management_endpoint,
        }

    # -- connection lifecycle ----------------------------------------------------------------

    def _connect(self, connection_id: str, user_id: str | None) -> None:
        ddb, _ = self._clients()
        item: dict[str, Any] = {
            "pk": {"S": _conn_pk(connection_id)},
            "sk": {"S": "META"},
            CONNECTION_ATTRIBUTE: {"S": connection_id},
            "connected_at": {"N": str(int(time.time()))},
            TTL_ATTRIBUTE: {"N": self._expiry()},
        }
        if user_id:
            item["user_id"] = {"S": user_id}
        ddb.put_item(TableName=self.table_name, Item=item)

    def _announce(self, connection_id: str, frame: bytes, close: bool) -> bool:
        # API Gateway answers 410 until the $connect integration has returned and the
        # connection is established; retry with growing pauses within the deadline.
        _, mgmt = self._clients()
        deadline = time.monotonic() + self.announce_timeout_seconds
        pause = 0.01
        while True:
            try:
                mgmt.post_to_connection(ConnectionId=connection_id, Data=frame)
                break
            except Exception as exc:
                gone = isinstance(exc, mgmt.exceptions.GoneException) or _http_status(exc) == 410
                if not gone:
                    raise
            if time.monotonic() + pause > deadline:
                logger.warning("connection %s never became reachable", connection_id)
                self._forget([connection_id])
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
        if close:
            with contextlib.suppress(mgmt.exceptions.GoneException):
                mgmt.delete_connection(ConnectionId=connection_id)
            self._forget([connection_id])
        return True

    def _connection(self, connection_id: str) -> dict[str, Any] | None:
        ddb, _ = self._clients()
        out = ddb.get_item(
            TableName=self.table_name,
            Key={"pk": {"S": _conn_pk(connection_id)}, "sk": {"S": "META"}},
            ConsistentRead=True,
        )
        return out.get("Item")

    def _known_connection(self, connection_id: str) -> dict[str, Any]:
        connection = self._connection(connection_id)
        if connection is None:
            raise self._error("CONNECTION_GONE", f"unknown connection {connection_id!r}")
        return connection

    def _put_subscription(
        self, connection: dict[str, Any], channel: str, member: PresenceUser | None
    ) -> bool:
        """Store the subscription item; False when it already existed."""
        ddb, _ = self._clients()
        connection_id = connection[CONNECTION_ATTRIBUTE]["S"]
        item: dict[str, Any] = {
            "pk": {"S": _chan_pk(channel)},
            "sk": {"S": _conn_pk(connection_id)},
            CONNECTION_ATTRIBUTE: {"S": connection_id},
            TTL_ATTRIBUTE: connection.get(TTL_ATTRIBUTE, {"N": self._expiry()}),
        }
        if member is not None:
            item["user_id"] = {"S": member.user_id}
            item["user_info"] = {"S": json.dumps(member.user_info)}
        try:
            ddb.put_item(
                TableName=self.table_name,
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _subscribe(
        self, connection_id: str, channel: str, member: PresenceUser | None
    ) -> SubscriptionResult:
        connection = self._known_connection(connection_id)
        if not self._put_subscription(connection, channel, member):
            members = self._members(channel) if member is not None else None
            return SubscriptionResult(channel=channel, members=members, already_subscribed=True)
        hooks: list[WebhookEvent] = []
        occupancy = self._add_to_channel(
            channel, "COUNT", "subscriptions", 1, initial={CHANNEL_LIST_ATTRIBUTE: _OCCUPIED}
        )
        if occupancy == 1:
            hooks.append(WebhookEvent(name="channel_occupied", channel=channel))
        members = None
        if member is not None:
            info = json.dumps(member.user_info)
            first = self._add_to_channel(
                channel, f"USER#{member.user_id}", "connections", 1, user_info=info
            )
            if first == 1:
                hooks.append(
                    WebhookEvent(name="member_added", channel=channel, user_id=member.user_id)
                )
                notice = protocol.member_added(channel, member.user_id, member.user_info)
                self._broadcast(channel, notice, exclude_user=member.user_id)
            members = self._members(channel)
        self._send_webhooks(hooks)
        return SubscriptionResult(channel=channel, members=members)

    def _subscribe_user_channel(self, connection_id: str, user_id: str) -> SubscriptionResult:
        connection = self._known_connection(connection_id)
        if connection.get("user_id", {}).get("S") != user_id:
            raise self._error("UNAUTHORIZED", "sign in as this user to join its channel")
        channel = protocol.server_to_user_channel(user_id)
        fresh = self._put_subscription(connection, channel, None)
        return SubscriptionResult(channel=channel, already_subscribed=not fresh)

    def _signin(self, connection_id: str, user_id: str) -> None:
        ddb, _ = self._clients()
        try:
            out = ddb.update_item(
                TableName=self.table_name,
                Key={"pk": {"S": _conn_pk(connection_id)}, "sk": {"S": "META"}},
                UpdateExpression="SET user_id = :u",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":u": {"S": user_id}},
                ReturnValues="ALL_NEW",
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            raise self._error("CONNECTION_GONE", f"unknown connection {connection_id!r}") from None
        self._put_subscription(out["Attributes"], protocol.server_to_user_channel(user_id), None)

    def _unsubscribe(self, connection_id: str, channel: str) -> bool:
        existed, gone = self._remove_subscription(connection_id, channel)
        if gone:
            self._forget(gone)
        return existed

    def _remove_subscription(self, connection_id: str, channel: str) -> tuple[bool, list[str]]:
        """Delete one subscription and its counters; whether it existed, connections gone."""
        ddb, _ = self._clients()
        out = ddb.delete_item(
            TableName=self.table_name,
            Key={"pk": {"S": _chan_pk(channel)}, "sk": {"S": _conn_pk(connection_id)}},
            ReturnValues="ALL_OLD",
        )
        old = out.get("Attributes")
        if not old:
            return False, []
        if protocol.server_to_user_id(channel) is not None:
            return True, []
        hooks: list[WebhookEvent] = []
        gone: list[str] = []
        user_id = old.get("user_id", {}).get("S")
        if is_presence(channel) and user_id:
            left = self._add_to_channel(channel, f"USER#{user_id}", "connections", -1)
            if left <= 0:
                self._drop_counter(channel, f"USER#{user_id}", "connections")
                hooks.append(WebhookEvent(name="member_removed", channel=channel, user_id=user_id))
                notice = protocol.member_removed(channel, user_id)
                gone = self._broadcast(channel, notice, exclude_user=user_id)
        if self._add_to_channel(channel, "COUNT", "subscriptions", -1) <= 0:
            self._drop_counter(channel, "COUNT", "subscriptions")
            hooks.append(WebhookEvent(name="channel_vacated", channel=channel))
        self._send_webhooks(hooks)
        return True, gone

    def _disconnect(self, connection_id: str) -> None:
        self._forget([connection_id])

    def _forget(self, connection_ids: list[str]) -> None:
        """Delete connections and their subscriptions; connections found gone meanwhile too."""
        ddb, _ = self._clients()
        queue, seen = list(connection_ids), set(connection_ids)
        while queue:
            connection_id = queue.pop()
            items = self._query(
                IndexName=CONNECTION_INDEX,
                KeyConditionExpression=f"{CONNECTION_ATTRIBUTE} = :c",
                ExpressionAttributeValues={":c": {"S": connection_id}},
            )
            channels = [
                item["pk"]["S"][len("CHAN#") :]
                for item in items
                if item["pk"]["S"].startswith("CHAN#")
            ]
            for channel in channels:
                for other in self._remove_subscription(connection_id, channel)[1]:
                    if other not in seen:
                        seen.add(other)
                        queue.append(other)
            ddb.delete_item(
                TableName=self.table_name,
                Key={"pk": {"S": _conn_pk(connection_id)}, "sk": {"S": "META"}},
            )

    def _broadcast(self, channel: str, message: str, *, exclude_user: str) -> list[str]:
        """Send a presence notice to the channel's members other than ``exclude_user``."""
        data = message.encode()
        targets = [
            (item[CONNECTION_ATTRIBUTE]["S"], data)
            for item in self._subscriptions(channel)
            if item.get("user_id", {}).get("S") != exclude_user
        ]
        _, gone, _ = self._fanout_quietly(targets)
        return gone

    def _fanout_quietly(self, targets: list[tuple[str, bytes]]) -> tuple[int, list[str], int]:
        # Presence notices are a side effect of someone else's call: never fail that call.
        try:
            return self._fanout(targets)
        except WebSocketError as exc:
            logger.warning("presence notice failed: %s", exc)
            return 0, [], len(targets)

    def _consume_client_event(self, connection_id: str) -> None:
        """Count one client event in this second's window; RATE_LIMITED past the limit."""
        second = int(time.time())
        key = {"pk": {"S": _conn_pk(connection_id)}, "sk": {"S": f"RATE#{second}"}}
        if self._add(key, "events", 1, expires=str(second + 60)) > self.client_event_rate:
            raise self._error(
                "RATE_LIMITED",
                f"more than {self.client_event_rate} client events per second",
            )

    def _client_event(
        self, connection_id: str, channel: str, event: str, data: str
    ) -> TriggerResult:
        ddb, _ = self._clients()
        subscription = ddb.get_item(
            TableName=self.table_name,
            Key={"pk": {"S": _chan_pk(channel)}, "sk": {"S": _conn_pk(connection_id)}},
            ConsistentRead=True,
        ).get("Item")
        if subscription is None:
            raise self._error("FORBIDDEN", f"connection has not joined {channel!r}")
        self._consume_client_event(connection_id)
        user_id = subscription.get("user_id", {}).get("S")
        message = protocol.event(event, channel, data, user_id=user_id)
        result = self._deliver(self._plan([(channel, message, connection_id)]), [channel])
        hook = WebhookEvent(
            name="client_event",
            channel=channel,
            event=event,
            data=data,
            socket_id=protocol.encode_socket_id(connection_id),
            user_id=user_id,
        )
        self._send_webhooks([hook])
        return result

    def _send_webhooks(self, events: list[WebhookEvent]) -> None:
        if not events or not self.webhook_url or not self._app_key or not self._app_secret:
            return
        webhooks.send_webhook(self.webhook_url, self._app_key, self._app_secret, events)
