"""The shared suppression store (memory and DynamoDB on moto), its CSV form and the CLI."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from milequest.email_suppression import main
from milequest.services.email import (
    EmailError,
    EmailErrorCode,
    SuppressedEmail,
    SuppressionReason,
    create_email_service,
)
from milequest.services.email.suppression import (
    BLOCK_SCOPE,
    MemorySuppressionStore,
    SuppressionStore,
    create_suppression_store,
)
from milequest.services.email.suppression_dynamodb import DynamoSuppressionStore, table_definition
from moto import mock_aws

from tests.runtime.email.ses_server import SesServer

TABLE = "milequest-test-email-suppression"
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(TableName=TABLE, **table_definition())
        yield client


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest) -> SuppressionStore:
    if request.param == "memory":
        return MemorySuppressionStore()
    request.getfixturevalue("dynamodb")
    return DynamoSuppressionStore(TABLE)


def _entry(address: str, reason: str, category: str | None = None) -> SuppressedEmail:
    return SuppressedEmail(address, SuppressionReason(reason), NOW, category, "test")


def test_scopes_of_bounces_complaints_and_unsubscribes(store: SuppressionStore) -> None:
    store.add(_entry("Gone@Example.com", "BOUNCE"))
    store.add(_entry("weekly@example.com", "UNSUBSCRIBE", "weekly-summary"))
    store.add(_entry("all@example.com", "UNSUBSCRIBE", "*"))
    everyone = ["GONE@example.com", "weekly@example.com", "all@example.com", "ok@example.com"]
    assert store.suppressed(everyone) == {"gone@example.com"}
    assert store.suppressed(everyone, "weekly-summary") == {
        "gone@example.com",
        "weekly@example.com",
        "all@example.com",
    }
    assert store.suppressed(everyone, "news") == {"gone@example.com", "all@example.com"}
    # A complaint replaces the bounce of the same address (one entry per scope).
    store.add(_entry("gone@example.com", "COMPLAINT"))
    entries = sorted((e.address, e.reason.value, e.category) for e in store.entries())
    assert entries == [
        ("all@example.com", "UNSUBSCRIBE", "*"),
        ("gone@example.com", "COMPLAINT", None),
        ("weekly@example.com", "UNSUBSCRIBE", "weekly-summary"),
    ]
    assert store.remove("GONE@example.com", BLOCK_SCOPE) is True
    assert store.remove("gone@example.com", BLOCK_SCOPE) is False
    assert store.remove("weekly@example.com", BLOCK_SCOPE) is False
    assert store.suppressed(everyone, "weekly-summary") == {"weekly@example.com", "all@example.com"}


def test_lookups_of_many_addresses_and_duplicates(store: SuppressionStore) -> None:
    # 60 addresses x 3 scopes: more keys than one BatchGetItem takes (100).
    for i in range(0, 60, 2):
        store.add(_entry(f"u{i}@example.com", "BOUNCE"))
    addresses = [f"u{i}@example.com" for i in range(60)] * 2
    assert store.suppressed(addresses, "news") == {f"u{i}@example.com" for i in range(0, 60, 2)}
    assert store.suppressed([]) == set()


def test_timestamps_and_sources_survive(store: SuppressionStore) -> None:
    store.add(_entry("gone@example.com", "BOUNCE"))
    [entry] = list(store.entries())
    assert (entry.last_update, entry.source) == (NOW, "test")


def test_the_table_setting_selects_dynamodb_and_processes_share_it(dynamodb: Any) -> None:
    # Two services made apart (as two processes would) see one list.
    writer = create_email_service("mock", email_suppression_table=TABLE)
    reader = create_email_service("smtp", email_suppression_table=TABLE)
    assert isinstance(writer.suppression, DynamoSuppressionStore)
    writer.suppress_email("gone@example.com", "COMPLAINT")
    with pytest.raises(EmailError) as info:
        reader.send_email({"to": "gone@example.com", "subject": "s", "text": "t"})
    assert info.value.code is EmailErrorCode.SUPPRESSED
    assert [e.address for e in reader.get_suppressed_emails()] == ["gone@example.com"]


def test_an_unreachable_table_fails_closed(dynamodb: Any) -> None:
    service = create_email_service("mock", email_suppression_table="no-such-table")
    with pytest.raises(EmailError) as info:
        service.send_email({"to": "a@example.com", "subject": "s", "text": "t"})
    assert info.value.code is EmailErrorCode.PROVIDER_ERROR
    assert service.outbox == []  # type: ignore[attr-defined]


def test_memory_is_the_default() -> None:
    service = create_email_service("mock")
    assert isinstance(service.suppression, MemorySuppressionStore)
    assert isinstance(create_suppression_store(service.settings), MemorySuppressionStore)


def test_table_definition_is_on_demand_with_address_and_scope() -> None:
    definition = table_definition()
    assert definition["KeySchema"] == [
        {"AttributeName": "address", "KeyType": "HASH"},
        {"AttributeName": "scope", "KeyType": "RANGE"},
    ]
    assert definition["BillingMode"] == "PAY_PER_REQUEST"


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        (("a@example.com", "SPAM"), EmailErrorCode.INVALID_MESSAGE),
        (("a@example.com", "BOUNCE", "news"), EmailErrorCode.INVALID_MESSAGE),
        (("a@example.com", "UNSUBSCRIBE", "bad category!"), EmailErrorCode.INVALID_MESSAGE),
        (("a@example.com", 7), EmailErrorCode.INVALID_MESSAGE),
        (("not an address", "UNSUBSCRIBE", "news"), EmailErrorCode.INVALID_EMAIL),
    ],
)
def test_bad_suppression_arguments(arguments: tuple[Any, ...], code: EmailErrorCode) -> None:
    service = create_email_service("mock")
    with pytest.raises(EmailError) as info:
        service.suppress_email(*arguments)
    assert info.value.code is code
    assert service.get_suppressed_emails() == []


def test_unsubscribes_are_removed_by_category_only() -> None:
    service = create_email_service("mock")
    service.suppress_email("a@example.com", "UNSUBSCRIBE")  # every category
    service.suppress_email("a@example.com", "UNSUBSCRIBE", "news")
    assert service.remove_suppressed_email("a@example.com") is False  # no bounce to remove
    assert service.remove_suppressed_email("a@example.com", "news") is True
    assert [(e.reason.value, e.category) for e in service.get_suppressed_emails()] == [
        ("UNSUBSCRIBE", "*")
    ]
    assert service.remove_suppressed_email("a@example.com", "*") is True
    assert service.get_suppressed_emails() == []


# -- CSV and the command line ------------------------------------------------------------------


def _run(*argv: str, service: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), service=service, stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def test_export_then_import_carries_the_list_across(tmp_path: Path) -> None:
    old = create_email_service("mock")
    old.suppress_email("gone@example.com", "BOUNCE", source="ses-events", last_update=NOW)
    old.suppress_email("angry@example.com", "COMPLAINT")
    old.suppress_email("quiet@example.com", "UNSUBSCRIBE", "weekly-summary")
    path = tmp_path / "list.csv"
    assert _run("export", "--out", str(path), service=old)[:2] == (
        0,
        f"exported 3 entries to {path}\n",
    )
    lines = path.read_text().splitlines()
    assert lines[0] == "address,reason,category,last_update,source"
    assert "gone@example.com,BOUNCE,,2025-01-02T03:04:05+00:00,ses-events" in lines
    new = create_email_service("smtp")
    assert _run("import", str(path), service=new) == (0, "imported 3 entries, refused 0\n", "")
    assert [
        (e.address, e.reason.value, e.category, e.source) for e in new.get_suppressed_emails()
    ] == [
        ("angry@example.com", "COMPLAINT", None, "csv-import"),
        ("gone@example.com", "BOUNCE", None, "ses-events"),
        ("quiet@example.com", "UNSUBSCRIBE", "weekly-summary", "csv-import"),
    ]
    [gone] = [e for e in new.get_suppressed_emails() if e.address == "gone@example.com"]
    assert gone.last_update == NOW


def test_import_reports_bad_rows_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text(
        "address,reason,category,last_update,source\n"
        "ok@example.com,BOUNCE,,,\n"
        "not an address,BOUNCE,,,\n"
        "x@example.com,SPAM,,,\n"
        "y@example.com,UNSUBSCRIBE,news,yesterday,\n"
        "\n"
        "z@example.com,unsubscribe,news,2025-01-02T03:04:05Z,crm\n"
    )
    service = create_email_service("mock")
    status, out, err = _run("import", str(path), service=service)
    assert (status, out) == (1, "imported 2 entries, refused 3\n")
    assert [line.split(":")[1].strip() for line in err.splitlines()] == [
        "line 3",
        "line 4",
        "line 5",
    ]
    assert {(e.address, e.source) for e in service.get_suppressed_emails()} == {
        ("ok@example.com", "csv-import"),
        ("z@example.com", "crm"),
    }


@pytest.mark.parametrize(
    "content", ["", "email,why\na@example.com,BOUNCE\n", "address,reason,colour\n"]
)
def test_a_file_that_is_not_the_format_is_refused_whole(tmp_path: Path, content: str) -> None:
    path = tmp_path / "list.csv"
    path.write_text(content)
    service = create_email_service("mock")
    status, _, err = _run("import", str(path), service=service)
    assert status == 2
    assert "the header must be address,reason,category,last_update,source" in err
    assert _run("import", str(tmp_path / "missing.csv"), service=service)[0] == 2


def test_import_provider_copies_the_ses_account_list(ses_server: SesServer) -> None:
    ses_server.state.suppressed["gone@example.com"] = ("BOUNCE", 1.7e9)
    service = create_email_service("ses")
    assert _run("import-provider", service=service) == (0, "imported 1 entries from ses\n", "")
    status, _, err = _run("import-provider", service=create_email_service("mock"))
    assert status == 2
    assert "NOT_SUPPORTED" in err


def test_the_command_reads_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_PROVIDER", "carrier-pigeon")
    status, _, err = _run("export", service=None)
    assert status == 2
    assert "EMAIL_PROVIDER" in err
    done = subprocess.run(
        [sys.executable, "-m", "milequest.email_suppression", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert "import-provider" in done.stdout
