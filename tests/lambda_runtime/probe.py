"""A cold start of the Lambda entry points, run as the Lambda runtime runs them.

``python probe.py REPORT [BUNDLE]`` imports every ``milequest`` module a function can load,
then calls the handlers once each with AWS's event shapes and a Lambda context, and writes
what happened to REPORT (JSON). With BUNDLE, run it as ``python -I -S probe.py ...``: then
only the bundle and the standard library are importable, as in ``/var/task`` on Lambda.

Standard library and ``milequest`` only, so that it runs inside the bundle. The environment
(AWS endpoint, table, keys, ``AWS_LAMBDA_FUNCTION_NAME``) comes from the caller; the tests
assert on the report and on the EMF metric lines the handlers print.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import platform
import sys
import sysconfig
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The embedded local stack needs moto and friends; the functions never load it.
NOT_DEPLOYED = ("milequest.local",)


class LambdaContext:
    """The context attributes that handlers and Powertools read."""

    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "probe")
    function_version = "$LATEST"
    invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
    memory_limit_in_mb = 512
    log_group_name = f"/aws/lambda/{function_name}"
    log_stream_name = "probe"
    client_context: Any = None
    identity: Any = None

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def import_all() -> tuple[list[str], dict[str, str]]:
    """Import every deployable ``milequest`` module: (imported names, failures with reasons)."""
    import milequest

    imported: list[str] = []
    failures: dict[str, str] = {}
    for info in pkgutil.walk_packages(milequest.__path__, "milequest."):
        if info.name.startswith(NOT_DEPLOYED) or info.name.endswith(".__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            failures[info.name] = f"{type(exc).__name__}: {exc}"
        else:
            imported.append(info.name)
    return imported, failures


def foreign_modules(bundle: Path) -> list[str]:
    """Loaded modules whose files lie neither in the bundle nor in the standard library."""
    roots = [bundle, Path(sysconfig.get_path("stdlib")), Path(sysconfig.get_path("platstdlib"))]
    allowed = tuple(str(root.resolve()) for root in roots)
    itself = Path(__file__).resolve()
    foreign = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file is None or Path(file).resolve() == itself:
            continue
        if not str(Path(file).resolve()).startswith(allowed):
            foreign.append(f"{name} ({file})")
    return sorted(foreign)


def _websocket_event(connection_id: str, route: str, **extra: Any) -> dict[str, Any]:
    context = {
        "routeKey": route,
        "eventType": {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(route, "MESSAGE"),
        "connectionId": connection_id,
        "apiId": "abcdef1234",
        "stage": "probe",
        "domainName": "abcdef1234.execute-api.us-east-1.amazonaws.com",
        "requestId": str(uuid.uuid4()),
        "identity": {"sourceIp": "192.0.2.1"},
        **extra,
    }
    return {"requestContext": context, "isBase64Encoded": False}


def _http_event(path: str) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) request."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": "probe.example", "accept": "application/json"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdef1234",
            "domainName": "probe.example",
            "http": {
                "method": "GET",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.1",
            },
            "requestId": str(uuid.uuid4()),
            "stage": "$default",
        },
        "isBase64Encoded": False,
    }


def _outcome(call: Callable[[], Any]) -> dict[str, Any]:
    try:
        return {"result": call()}
    except Exception as exc:
        return {"raised": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}


def entry_point(handler: str) -> Callable[[Any, Any], Any]:
    """Resolve a function's ``handler`` setting (``module.function``) as the Lambda runtime does."""
    module, _, name = handler.rpartition(".")
    function: Callable[[Any, Any], Any] = getattr(importlib.import_module(module), name)
    return function


def invoke_handlers(connection_id: str) -> dict[str, Any]:
    """Call each deployed entry point once, with AWS's event shapes; the outcomes by name."""
    from milequest.handlers import snapstart
    from milequest.services.email.events import sample_sns_event
    from milequest.services.websocket import issue_connection_token

    def call(handler: str, event: Any) -> dict[str, Any]:
        return _outcome(lambda: entry_point(handler)(event, LambdaContext()))

    ws = "milequest.handlers.websocket"
    authorizer_event = {
        "type": "REQUEST",
        "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/probe/$connect",
        "queryStringParameters": {"token": issue_connection_token("probe-user", ttl_seconds=300)},
        "headers": {},
        "requestContext": {"routeKey": "$connect", "connectionId": connection_id},
    }
    connect_event = {
        **_websocket_event(
            connection_id,
            "$connect",
            authorizer={"userId": "probe-user", "principalId": "probe-user"},
        ),
        # What pusher-js sends: wss://host/app/KEY?protocol=7&client=js&version=...
        "queryStringParameters": {"protocol": "7", "client": "js", "version": "8.6.0"},
    }
    return {
        # SnapStart's before-snapshot hook, as Lambda runs it during init.
        "snapstart_warm": _outcome(snapstart.warm),
        "authorize": call(f"{ws}.authorize", authorizer_event),
        "authorize_refused": call(
            f"{ws}.authorize", {**authorizer_event, "queryStringParameters": {"token": "bad"}}
        ),
        "connect": call(f"{ws}.on_connect", connect_event),
        # What $connect asked for, through Lambda's asynchronous invoke.
        "announce": call(f"{ws}.announce", {"connectionId": connection_id, "refusal": None}),
        "message": call(
            f"{ws}.on_message", {**_websocket_event(connection_id, "$default"), "body": "not json"}
        ),
        "ses_events": call(
            "milequest.handlers.ses_events.handler",
            sample_sns_event("delivery", "probe@example.com"),
        ),
        "fanout_empty_batch": call("milequest.handlers.fanout.handler", {"Records": []}),
        "http_livez": call("milequest.handlers.http.handler", _http_event("/livez")),
        "snapstart_refresh": _outcome(snapstart.refresh),
    }


def disconnect(connection_id: str) -> dict[str, Any]:
    """``$disconnect`` for ``connection_id``."""
    event = _websocket_event(connection_id, "$disconnect")
    handler = entry_point("milequest.handlers.websocket.on_disconnect")
    return _outcome(lambda: handler(event, LambdaContext()))


def stored_records(connection_id: str) -> int | str:
    """How many items of ``$CONNECTIONS_TABLE`` mention ``connection_id`` (a Scan: tests only)."""
    import boto3

    table = boto3.resource("dynamodb").Table(os.environ["CONNECTIONS_TABLE"])
    try:
        items = table.scan(ConsistentRead=True)["Items"]
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return sum(connection_id in json.dumps(item, default=str) for item in items)


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(f"usage: {argv[0]} REPORT CONNECTION_ID [BUNDLE]", file=sys.stderr)
        return 2
    report_path, connection_id = Path(argv[1]), argv[2]
    bundle = Path(argv[3]) if len(argv) == 4 else None
    if bundle is not None:
        sys.path.insert(0, str(bundle))
    imported, failures = import_all()
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "connection_id": connection_id,
        "sys_path": sys.path,
        "imported": imported,
        "import_failures": failures,
        "invocations": invoke_handlers(connection_id),
        "stored_after_connect": stored_records(connection_id),
    }
    report["invocations"]["disconnect"] = disconnect(connection_id)
    report["stored_after_disconnect"] = stored_records(connection_id)
    if bundle is not None:
        report["foreign_modules"] = foreign_modules(bundle)
    report_path.write_text(json.dumps(report, default=str, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
