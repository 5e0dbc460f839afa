"""Run :mod:`probe` in a fresh interpreter against moto, as a Lambda function would run."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import boto3
from milequest.services.websocket.apigateway import table_definition
from moto.server import ThreadedMotoServer

from tests.conftest import free_port

PROBE = Path(__file__).with_name("probe.py")
APP_KEY = "probe-app-key"
APP_SECRET = "probe-app-secret"
ANNOUNCE_FUNCTION = "milequest-probe-announce"


@dataclass(frozen=True)
class Invocation:
    function: str
    invocation_type: str
    payload: Any


@dataclass
class LoopbackApis:
    """Lambda's Invoke API and API Gateway's ``@connections`` API on loopback, recording calls.

    moto's Lambda needs Docker to run an invocation (``$connect`` only needs it accepted), and
    moto's management API keeps no record of what was posted to a connection.
    """

    invocations: list[Invocation] = field(default_factory=list)
    posts: dict[str, list[Any]] = field(default_factory=dict)

    @contextmanager
    def serving(self) -> Iterator[str]:
        apis = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if len(parts) == 4 and parts[:2] == ["2015-03-31", "functions"]:
                    kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
                    apis.invocations.append(Invocation(parts[2], kind, json.loads(body or b"null")))
                    self._answer(202)
                elif len(parts) == 3 and parts[1] == "@connections":
                    apis.posts.setdefault(unquote(parts[2]), []).append(json.loads(body))
                    self._answer(200)
                else:
                    self._answer(404)

            def do_DELETE(self) -> None:
                self._answer(204)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


@dataclass(frozen=True)
class ProbeRun:
    report: dict[str, Any]
    stdout: str
    stderr: str

    @property
    def invocations(self) -> dict[str, Any]:
        calls: dict[str, Any] = self.report["invocations"]
        return calls

    def emf_metric_names(self) -> set[str]:
        """Metric names of the CloudWatch EMF documents the process printed."""
        names: set[str] = set()
        for line in self.stdout.splitlines():
            try:
                document = json.loads(line)
            except ValueError:
                continue
            if isinstance(document, dict) and "_aws" in document:
                for directive in document["_aws"]["CloudWatchMetrics"]:
                    names.update(metric["Name"] for metric in directive["Metrics"])
        return names


@contextmanager
def moto_server() -> Iterator[str]:
    """moto in server mode on loopback: its endpoint."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextmanager
def lambda_environment(tmp_path: Path, apis: LoopbackApis) -> Iterator[dict[str, str]]:
    """moto with the connections table, the loopback APIs, and a function's variables."""
    with moto_server() as endpoint, apis.serving() as loopback:
        table = f"probe-connections-{uuid.uuid4().hex[:8]}"
        boto3.client("dynamodb", endpoint_url=endpoint).create_table(
            TableName=table, **table_definition()
        )
        env = {
            key: value
            for key, value in os.environ.items()
            if key in ("PATH", "LANG", "LC_ALL", "TZ") or key.startswith("AWS_")
        }
        env.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ENDPOINT_URL_LAMBDA=loopback,
            AWS_LAMBDA_FUNCTION_NAME="milequest-probe",
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512",
            LAMBDA_TASK_ROOT=str(tmp_path),
            POWERTOOLS_SERVICE_NAME="probe",
            WEBSOCKET_PROVIDER="apigateway",
            CONNECTIONS_TABLE=table,
            APIGW_MANAGEMENT_ENDPOINT=f"{loopback}/probe",
            WEBSOCKET_APP_KEY=APP_KEY,
            WEBSOCKET_APP_SECRET=APP_SECRET,
            WEBSOCKET_ANNOUNCE_FUNCTION=ANNOUNCE_FUNCTION,
            EMAIL_PROVIDER="ses",
            PYTHONDONTWRITEBYTECODE="1",
        )
        yield env


def run_probe(
    interpreter: Sequence[str], env: dict[str, str], workdir: Path, bundle: Path | None = None
) -> ProbeRun:
    """Run the probe in a new process of ``interpreter`` (argv prefix) and read its report."""
    report = workdir / f"probe-{uuid.uuid4().hex[:8]}.json"
    connection_id = f"Probe{uuid.uuid4().hex[:10]}="
    args = [*interpreter, str(PROBE), str(report), connection_id]
    if bundle is not None:
        args.append(str(bundle))
    proc = subprocess.run(
        args, cwd=workdir, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return ProbeRun(json.loads(report.read_text(encoding="utf-8")), proc.stdout, proc.stderr)


def check_cold_start(run: ProbeRun, apis: LoopbackApis) -> None:
    """What every deployed function must do on its first invocations."""
    assert run.report["import_failures"] == {}
    assert "milequest.handlers.websocket" in run.report["imported"]
    assert "milequest.web" in run.report["imported"]
    calls = run.invocations
    for name, outcome in calls.items():
        if name != "authorize_refused":
            assert "raised" not in outcome, f"{name}: {outcome.get('trace')}"
    assert calls["snapstart_warm"]["result"] == ["websocket", "email"]

    allow = calls["authorize"]["result"]
    assert allow["principalId"] == "probe-user"
    assert allow["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    # API Gateway answers 401 to exactly this exception message.
    assert calls["authorize_refused"]["raised"] == "Exception: Unauthorized"

    # $connect stores the connection and, unable to post to it, has `announce` do it.
    connection_id = run.report["connection_id"]
    assert calls["connect"]["result"] == {"statusCode": 200}, run.stdout[-3000:]
    assert run.report["stored_after_connect"] >= 1
    (invocation,) = apis.invocations
    assert (invocation.function, invocation.invocation_type) == (ANNOUNCE_FUNCTION, "Event")
    assert invocation.payload == {"connectionId": connection_id, "refusal": None}
    assert calls["announce"]["result"] == {"announced": True}
    (first_frame,) = apis.posts[connection_id]
    assert first_frame["event"] == "pusher:connection_established"
    established = json.loads(first_frame["data"])  # a JSON string inside the frame
    assert set(established) == {"socket_id", "activity_timeout"}

    reply = calls["message"]["result"]
    assert reply["statusCode"] == 200
    assert json.loads(reply["body"])["event"] == "pusher:error"
    assert calls["disconnect"]["result"]["statusCode"] == 200
    assert run.report["stored_after_disconnect"] == 0

    assert calls["ses_events"]["result"]["events"] == 1
    assert "SesEvents" in run.emf_metric_names()
    assert calls["fanout_empty_batch"]["result"] == {"batchItemFailures": []}
    livez = calls["http_livez"]["result"]
    assert (livez["statusCode"], json.loads(livez["body"])) == (200, {"status": "alive"})
