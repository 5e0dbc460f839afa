"""API Gateway WebSocket provider: connections and subscriptions in DynamoDB."""

from __future__ import annotations

from typing import Any

# Single-table design. Items:
#   connection    pk=CONN#<id>      sk=META
#   subscription  pk=CHAN#<channel> sk=CONN#<id>
# Every item carries ``connection_id`` (the by-connection index finds a connection's
# subscriptions on disconnect) and ``expires_at`` (TTL: about connect time + 2 h, because
# $disconnect is best effort).
PARTITION_KEY = "pk"
SORT_KEY = "sk"
CONNECTION_INDEX = "by_connection"
TTL_ATTRIBUTE = "expires_at"


def table_definition() -> dict[str, Any]:
    """``CreateTable`` keyword arguments (all but ``TableName``) for the connections table.

    The CDK app and the local stack both build the table from this; TTL is set separately
    on ``TTL_ATTRIBUTE`` (``UpdateTimeToLive`` is not part of ``CreateTable``).
    """
    return {
        "AttributeDefinitions": [
            {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": SORT_KEY, "AttributeType": "S"},
            {"AttributeName": "connection_id", "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": CONNECTION_INDEX,
                "KeySchema": [
                    {"AttributeName": "connection_id", "KeyType": "HASH"},
                    {"AttributeName": PARTITION_KEY, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
