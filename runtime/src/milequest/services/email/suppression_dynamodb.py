"""The suppression list in DynamoDB: one item per address and scope.

:func:`table_definition` is the table's one definition; the CDK app
(``infra/suppression.py``) and the local stack both build the table from it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from .addresses import address_key
from .results import SuppressedEmail, SuppressionReason
from .suppression import BLOCK_SCOPE, scope_of, scopes_checked

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

PARTITION_KEY = "address"
SORT_KEY = "scope"
_BATCH_GET_MAX = 100  # keys per BatchGetItem call
_UNPROCESSED_ROUNDS = 5


def table_definition() -> dict[str, Any]:
    """``CreateTable`` keyword arguments (all but ``TableName``) for the suppression table."""
    return {
        "AttributeDefinitions": [
            {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": SORT_KEY, "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }


def create_dynamodb_client() -> DynamoDBClient:
    """A ``dynamodb`` client with short timeouts: a send waits on every lookup."""
    import botocore.session
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "total_max_attempts": 3},
        connect_timeout=2,
        read_timeout=5,
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    client = botocore.session.get_session().create_client(
        "dynamodb", region_name=region, config=config
    )
    return cast("DynamoDBClient", client)


class DynamoSuppressionStore:
    """The shared list in table ``table`` (honours ``AWS_ENDPOINT_URL_DYNAMODB``)."""

    def __init__(self, table: str, *, client: DynamoDBClient | None = None) -> None:
        self.table = table
        self._client = client

    @property
    def client(self) -> DynamoDBClient:
        # Created on first use: building a botocore client costs cold-start time.
        if self._client is None:
            self._client = create_dynamodb_client()
        return self._client

    def add(self, entry: SuppressedEmail) -> None:
        item: dict[str, Any] = {
            PARTITION_KEY: {"S": address_key(entry.address)},
            SORT_KEY: {"S": scope_of(entry.reason, entry.category)},
            "reason": {"S": entry.reason.value},
            "updated_at": {"S": entry.last_update.isoformat()},
        }
        if entry.category is not None:
            item["category"] = {"S": entry.category}
        if entry.source:
            item["source"] = {"S": entry.source}
        self.client.put_item(TableName=self.table, Item=item)

    def remove(self, address: str, scope: str = BLOCK_SCOPE) -> bool:
        response = self.client.delete_item(
            TableName=self.table,
            Key={PARTITION_KEY: {"S": address_key(address)}, SORT_KEY: {"S": scope}},
            ReturnValues="ALL_OLD",
        )
        return bool(response.get("Attributes"))

    def suppressed(self, addresses: Iterable[str], category: str | None = None) -> set[str]:
        scopes = scopes_checked(category)
        # BatchGetItem refuses duplicate keys, hence the set.
        keys = sorted({address_key(a) for a in addresses})
        wanted = [
            {PARTITION_KEY: {"S": key}, SORT_KEY: {"S": scope}} for key in keys for scope in scopes
        ]
        found: set[str] = set()
        for start in range(0, len(wanted), _BATCH_GET_MAX):
            found.update(self._present(wanted[start : start + _BATCH_GET_MAX]))
        return found

    def _present(self, keys: list[dict[str, Any]]) -> set[str]:
        found: set[str] = set()
        request: Any = {
            self.table: {
                "Keys": keys,
                "ProjectionExpression": "#a",
                "ExpressionAttributeNames": {"#a": PARTITION_KEY},
            }
        }
        for round_ in range(_UNPROCESSED_ROUNDS):
            response = self.client.batch_get_item(RequestItems=request)
            found.update(i[PARTITION_KEY]["S"] for i in response["Responses"].get(self.table, []))
            request = response.get("UnprocessedKeys") or {}
            if not request:
                return found
            time.sleep(0.05 * 2**round_)  # DynamoDB asks for a backoff before the rest
        raise RuntimeError("DynamoDB left suppression lookups unprocessed; retry later")

    def entries(self) -> Iterator[SuppressedEmail]:
        paginator = self.client.get_paginator("scan")
        for page in paginator.paginate(TableName=self.table):
            for item in page.get("Items", []):
                yield _entry(item)


def _entry(item: dict[str, Any]) -> SuppressedEmail:
    def text(name: str) -> str | None:
        value = item.get(name)
        return str(value["S"]) if isinstance(value, dict) and "S" in value else None

    stamp = text("updated_at")
    try:
        when = datetime.fromisoformat(stamp) if stamp else datetime.fromtimestamp(0, UTC)
    except ValueError:
        when = datetime.fromtimestamp(0, UTC)
    return SuppressedEmail(
        address=str(item[PARTITION_KEY]["S"]),
        reason=SuppressionReason(text("reason") or "BOUNCE"),
        last_update=when,
        category=text("category"),
        source=text("source"),
    )
