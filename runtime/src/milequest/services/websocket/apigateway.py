"""API Gateway WebSocket provider: connections and subscriptions in DynamoDB.

Fan-out posts to each connection through the management API (``post_to_connection``) on a
bounded thread pool whose size matches botocore's connection pool. Throttling
(``LimitExceededException`` / 429) is retried by botocore's ``standard``/``adaptive`` retry
mode, which lists that code among its throttling errors, so there is no retry loop here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

from milequest.services.health import HealthState
from milequest.services.metrics import MetricsSink

from . import webhooks
from .errors import WebSocketError
from .models import (
    BatchEvent,
    ChannelInfo,
    ChannelUser,
    PresenceUser,
    SubscriptionResult,
    TriggerResult,
    WebhookEvent,
)
from .service import APIGATEWAY_CONNECTION_ID_RE, ConnectionService, encode_data, is_presence

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient
    from mypy_boto3_dynamodb import DynamoDBClient

logger = logging.getLogger("milequest.services.websocket")

# Single-table design. Items:
#   connection       pk=CONN#<id>      sk=META          user_id?, connected_at
#   subscription     pk=CHAN#<channel> sk=CONN#<id>     user_id?, user_info? (presence)
#   presence member  pk=CHAN#<channel> sk=USER#<user>   connections (count), user_info
#   occupancy        pk=CHAN#<channel> sk=COUNT         subscriptions (count)
# Connection and subscription items carry ``connection_id`` (the by-connection index finds a
# connection's subscriptions on disconnect). The two counter items are updated atomically
# (ADD), so "first/last connection of a user" and "channel occupied/vacated" are exact even
# when clients subscribe concurrently. Every item has ``expires_at`` (TTL: about connect time
# + 2 h, because $disconnect is best effort).
PARTITION_KEY = "pk"
SORT_KEY = "sk"
CONNECTION_INDEX = "by_connection"
TTL_ATTRIBUTE = "expires_at"
CONNECTION_ATTRIBUTE = "connection_id"
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
            }
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }


def _conn_pk(connection_id: str) -> str:
    return f"CONN#{connection_id}"


def _chan_pk(channel: str) -> str:
    return f"CHAN#{channel}"


def _http_status(exc: Exception) -> int:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return 0
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def frame(event: str, channel: str, data: Any) -> bytes:
    """The message a client receives: ``{"event": E, "channel": C, "data": D}``."""
    body = {"event": event, "channel": channel, "data": data}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


class ApiGatewayWebSocketService(ConnectionService):
    """The ``apigateway`` provider (API Gateway WebSocket API + DynamoDB)."""

    provider_name: ClassVar[str] = "apigateway"
    socket_id_pattern = APIGATEWAY_CONNECTION_ID_RE

    def __init__(
        self,
        *,
        table_name: str,
        management_endpoint: str,
        app_key: str | None,
        app_secret: str | None,
        max_payload_bytes: int = 128 * 1024,
        concurrency: int = 64,
        connection_ttl_seconds: int = 2 * 3600 + 600,
        webhook_url: str | None = None,
        max_attempts: int = 5,
        retry_mode: str = "standard",
        metrics: MetricsSink | None = None,
    ) -> None:
        super().__init__(
            app_key=app_key,
            app_secret=app_secret,
            max_payload_bytes=max_payload_bytes,
            metrics=metrics,
        )
        self.table_name = table_name
        self.management_endpoint = management_endpoint
        self.concurrency = concurrency
        self.connection_ttl_seconds = connection_ttl_seconds
        self.webhook_url = webhook_url
        self._max_attempts = max_attempts
        self._retry_mode = retry_mode
        self._lock = threading.Lock()
        self._ddb: DynamoDBClient | None = None
        self._mgmt: ApiGatewayManagementApiClient | None = None
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
                    # Fan-out is CPU-bound in botocore; its parameter validation costs about
                    # a fifth of each call, and ids and payloads are validated before.
                    config=Config(
                        retries=retries,
                        max_pool_connections=self.concurrency,
                        parameter_validation=False,
                        connect_timeout=5,
                        read_timeout=10,
                        tcp_keepalive=True,
                    ),
                )
            return self._ddb, self._mgmt

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
        """Stop the worker threads (they start again if the service is used)."""
        with self._lock:
            pools, self._pool, self._cleanup_pool = (self._pool, self._cleanup_pool), None, None
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True)

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

    def _subscribers(self, channel: str) -> list[str]:
        items = self._query(
            **self._in_channel(channel, "CONN#"), ProjectionExpression=CONNECTION_ATTRIBUTE
        )
        return [item[CONNECTION_ATTRIBUTE]["S"] for item in items]

    def _members(self, channel: str) -> dict[str, dict[str, Any] | None]:
        members: dict[str, dict[str, Any] | None] = {}
        for item in self._query(**self._in_channel(channel, "USER#", live=True)):
            info = item.get("user_info", {}).get("S")
            members[item["sk"]["S"][len("USER#") :]] = json.loads(info) if info else None
        return members

    def _count(self, channel: str, prefix: str) -> int:
        query = self._in_channel(channel, prefix, live=True)
        return sum(page.get("Count", 0) for page in self._pages(**query, Select="COUNT"))

    def _add(self, channel: str, sk: str, attribute: str, delta: int, **extra: str) -> int:
        """Atomically add ``delta`` to a counter item; returns the new value."""
        ddb, _ = self._clients()
        sets = [f"{TTL_ATTRIBUTE} = :exp"] + [f"{name} = :{name}" for name in extra]
        values: dict[str, Any] = {":d": {"N": str(delta)}, ":exp": {"N": self._expiry()}}
        values.update({f":{name}": {"S": value} for name, value in extra.items()})
        out = ddb.update_item(
            TableName=self.table_name,
            Key={"pk": {"S": _chan_pk(channel)}, "sk": {"S": sk}},
            UpdateExpression=f"ADD {attribute} :d SET " + ", ".join(sets),
            ExpressionAttributeValues=values,
            ReturnValues="UPDATED_NEW",
        )
        return int(out["Attributes"][attribute]["N"])

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

    def _post(self, target: tuple[str, list[bytes]]) -> tuple[int, bool, list[Exception]]:
        """Post one connection's messages in order; stops at a 410 (the connection is gone)."""
        connection_id, messages = target
        _, mgmt = self._clients()
        delivered, errors = 0, list[Exception]()
        for data in messages:
            try:
                mgmt.post_to_connection(ConnectionId=connection_id, Data=data)
            except mgmt.exceptions.GoneException:
                return delivered, True, errors
            except Exception as exc:
                if _http_status(exc) == 410:  # a gateway that names no error type
                    return delivered, True, errors
                logger.warning("post_to_connection %s failed: %s", connection_id, exc)
                errors.append(exc)
            else:
                delivered += 1
        return delivered, False, errors

    def _fanout(self, targets: list[tuple[str, bytes]]) -> tuple[int, list[str], int]:
        """Post every (connection, data); returns delivered, gone connection ids, failed.

        One task per connection keeps each connection's messages in order. Raises the
        mapped error when every post failed (the endpoint is down, say).
        """
        grouped: dict[str, list[bytes]] = {}
        for connection_id, data in targets:
            grouped.setdefault(connection_id, []).append(data)
        work = list(grouped.items())
        if not work:
            return 0, [], 0
        if len(work) == 1:
            outcomes = [self._post(work[0])]
        else:
            outcomes = list(self._executor().map(self._post, work))
        gone = [cid for (cid, _), (_, is_gone, _) in zip(work, outcomes, strict=True) if is_gone]
        delivered = sum(d for d, _, _ in outcomes)
        errors = [e for _, _, errs in outcomes for e in errs]
        if errors and not delivered and not gone:
            raise self._map_error(errors[0])
        return delivered, gone, len(errors)

    def _deliver(
        self, targets: list[tuple[str, bytes]], excluded: int, channels: list[str]
    ) -> TriggerResult:
        delivered, gone, failed = self._fanout(targets)
        if len(gone) == 1:
            self._forget(gone)
        elif gone:
            list(self._cleaner().map(lambda cid: self._forget([cid]), gone))
        self.record_metric("Deliveries", delivered)
        self.record_metric("GoneConnections", len(gone))
        return TriggerResult(
            channels=channels,
            delivered=delivered,
            gone=len(gone),
            failed=failed,
            excluded=excluded,
        )

    def _targets(
        self, channel: str, event: str, data: Any, exclude: str | None
    ) -> tuple[list[tuple[str, bytes]], int]:
        message = frame(event, channel, data)
        targets, excluded = [], 0
        for connection_id in self._subscribers(channel):
            if connection_id == exclude:
                excluded += 1
            else:
                targets.append((connection_id, message))
        return targets, excluded

    # -- WebSocketService hooks --------------------------------------------------------------

    def _payload_size(self, channel: str, event: str, data: Any) -> int:
        return len(frame(event, channel, data))

    def _collect(
        self, wanted: list[tuple[str, str, Any, str | None]]
    ) -> tuple[list[tuple[str, bytes]], int]:
        """Targets of several (channel, event, data, excluded socket) at once.

        The channels' Queries run on the fan-out pool; the order of ``wanted`` is kept, so
        each connection gets its messages in that order.
        """
        if len(wanted) == 1:
            found = [self._targets(*wanted[0])]
        else:
            found = list(self._executor().map(lambda w: self._targets(*w), wanted))
        targets = [t for part, _ in found for t in part]
        return targets, sum(skipped for _, skipped in found)

    def _trigger(
        self, channels: list[str], event: str, data: Any, socket_id: str | None
    ) -> TriggerResult:
        targets, excluded = self._collect([(c, event, data, socket_id) for c in channels])
        return self._deliver(targets, excluded, channels)

    def _trigger_batch(self, events: list[BatchEvent]) -> TriggerResult:
        targets, excluded = self._collect(
            [(e.channel, e.name, e.data, e.socket_id) for e in events]
        )
        result = self._deliver(targets, excluded, list(dict.fromkeys(e.channel for e in events)))
        return result.model_copy(update={"events": len(events)})

    def _channel_info(self, channel: str, attributes: tuple[str, ...]) -> ChannelInfo:
        subscriptions = self._count(channel, "CONN#")
        users = self._count(channel, "USER#") if "user_count" in attributes else None
        return ChannelInfo(
            channel=channel,
            occupied=subscriptions > 0,
            subscription_count=subscriptions if "subscription_count" in attributes else None,
            user_count=users,
        )

    def _channel_users(self, channel: str) -> list[ChannelUser]:
        return [ChannelUser(id=uid, user_info=info) for uid, info in self._members(channel).items()]

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

    def _connection(self, connection_id: str) -> dict[str, Any] | None:
        ddb, _ = self._clients()
        out = ddb.get_item(
            TableName=self.table_name,
            Key={"pk": {"S": _conn_pk(connection_id)}, "sk": {"S": "META"}},
            ConsistentRead=True,
        )
        return out.get("Item")

    def _subscribe(
        self, connection_id: str, channel: str, member: PresenceUser | None
    ) -> SubscriptionResult:
        ddb, _ = self._clients()
        connection = self._connection(connection_id)
        if connection is None:
            raise self._error("CONNECTION_GONE", f"unknown connection {connection_id!r}")
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
            members = self._members(channel) if member is not None else None
            return SubscriptionResult(channel=channel, members=members, already_subscribed=True)
        hooks: list[WebhookEvent] = []
        if self._add(channel, "COUNT", "subscriptions", 1) == 1:
            hooks.append(WebhookEvent(name="channel_occupied", channel=channel))
        members = None
        if member is not None:
            info = json.dumps(member.user_info)
            first = self._add(channel, f"USER#{member.user_id}", "connections", 1, user_info=info)
            if first == 1:
                hooks.append(
                    WebhookEvent(name="member_added", channel=channel, user_id=member.user_id)
                )
                data = {"user_id": member.user_id, "user_info": member.user_info}
                self._broadcast(channel, "member_added", data, exclude_user=member.user_id)
            members = self._members(channel)
        self._send_webhooks(hooks)
        return SubscriptionResult(channel=channel, members=members)

    def _unsubscribe(self, connection_id: str, channel: str) -> None:
        gone = self._remove_subscription(connection_id, channel)
        if gone:
            self._forget(gone)

    def _remove_subscription(self, connection_id: str, channel: str) -> list[str]:
        """Delete one subscription and its counters; returns connections found gone."""
        ddb, _ = self._clients()
        out = ddb.delete_item(
            TableName=self.table_name,
            Key={"pk": {"S": _chan_pk(channel)}, "sk": {"S": _conn_pk(connection_id)}},
            ReturnValues="ALL_OLD",
        )
        old = out.get("Attributes")
        if not old:
            return []
        hooks: list[WebhookEvent] = []
        gone: list[str] = []
        user_id = old.get("user_id", {}).get("S")
        if is_presence(channel) and user_id:
            left = self._add(channel, f"USER#{user_id}", "connections", -1)
            if left <= 0:
                self._drop_counter(channel, f"USER#{user_id}", "connections")
                hooks.append(WebhookEvent(name="member_removed", channel=channel, user_id=user_id))
                data = {"user_id": user_id}
                gone = self._broadcast(channel, "member_removed", data, exclude_user=user_id)
        if self._add(channel, "COUNT", "subscriptions", -1) <= 0:
            self._drop_counter(channel, "COUNT", "subscriptions")
            hooks.append(WebhookEvent(name="channel_vacated", channel=channel))
        self._send_webhooks(hooks)
        return gone

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
                for other in self._remove_subscription(connection_id, channel):
                    if other not in seen:
                        seen.add(other)
                        queue.append(other)
            ddb.delete_item(
                TableName=self.table_name,
                Key={"pk": {"S": _conn_pk(connection_id)}, "sk": {"S": "META"}},
            )

    def _broadcast(self, channel: str, event: str, data: Any, *, exclude_user: str) -> list[str]:
        """Send a presence event to the channel's members other than ``exclude_user``."""
        items = self._query(
            **self._in_channel(channel, "CONN#"),
            ProjectionExpression=f"{CONNECTION_ATTRIBUTE}, user_id",
        )
        message = frame(event, channel, data)
        targets = [
            (item[CONNECTION_ATTRIBUTE]["S"], message)
            for item in items
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

    def _client_event(
        self, connection_id: str, channel: str, event: str, data: Any
    ) -> TriggerResult:
        ddb, _ = self._clients()
        subscription = ddb.get_item(
            TableName=self.table_name,
            Key={"pk": {"S": _chan_pk(channel)}, "sk": {"S": _conn_pk(connection_id)}},
            ConsistentRead=True,
        ).get("Item")
        if subscription is None:
            raise self._error("FORBIDDEN", f"connection has not joined {channel!r}")
        targets, excluded = self._targets(channel, event, data, connection_id)
        result = self._deliver(targets, excluded, [channel])
        hook = WebhookEvent(
            name="client_event",
            channel=channel,
            event=event,
            data=encode_data(data),
            socket_id=connection_id,
            user_id=subscription.get("user_id", {}).get("S"),
        )
        self._send_webhooks([hook])
        return result

    def _send_webhooks(self, events: list[WebhookEvent]) -> None:
        if not events or not self.webhook_url or not self._app_key or not self._app_secret:
            return
        webhooks.send_webhook(self.webhook_url, self._app_key, self._app_secret, events)
