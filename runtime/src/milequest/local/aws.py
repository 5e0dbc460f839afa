"""Embedded AWS: moto in server mode on loopback, provisioned like the dev stage."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
import urllib.request
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import boto3
from botocore.exceptions import ClientError
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from .ses_v2 import RECEIVED_AT_HEADER, SesV2Extensions
from .smtp_sink import describe_mime

logger = logging.getLogger("milequest.local.aws")


class EmbeddedMotoServer(ThreadedMotoServer):
    """moto's threaded server that binds in ``start()`` itself.

    ``ThreadedMotoServer.start`` binds inside its thread and waits without a timeout, so a
    busy port would hang it; binding first makes a busy port an immediate ``OSError``.
    """

    def start(self) -> None:
        app = SesV2Extensions(_OneDynamoDBRequestAtATime(_CachingDispatcher(create_backend_app)))
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="moto-server", daemon=True
        )
        self._thread.start()


class _OneDynamoDBRequestAtATime:
    """Serves DynamoDB's requests one at a time.

    moto's DynamoDB is not thread-safe: two concurrent ``UpdateItem ... ADD`` on one item
    can both read the old value (seen in about 1 of 100 bursts of six), where DynamoDB
    applies each update atomically; presence counters then announced one user joining
    twice. moto's DynamoDB is pure Python under the GIL, so this costs it no throughput.
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            return self._app(environ, start_response)
        with self._lock:
            return list(self._app(environ, start_response))


class _CachingDispatcher(DomainDispatcherApplication):
    """moto's dispatcher, remembering which backend serves a host.

    moto looks the backend up on every request under one lock, listing its own package
    directory and matching the host against every service's URL patterns, so the stack's
    concurrent handlers queued there (remembering it raised the rate of WebSocket connects
    and subscribes by about a tenth). The answer for a host never changes.
    """

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one dispatcher per server, kept for its life
    def get_backend_for_host(self, host: str | None) -> Any:
        return super().get_backend_for_host(host)


@dataclass(frozen=True)
class AwsResources:
    """What the local stack provisions, named like the dev stage's resources."""

    region: str = "us-east-1"
    connections_table: str = "milequest-local-connections"
    suppression_table: str = "milequest-local-email-suppression"
    sender_domain: str = "milequest.example"
    configuration_set: str = "milequest-local"
    template_prefix: str = "milequest-local-"  # as the stages name theirs: <prefix>-<name>
    websocket_secret_name: str = "milequest/local/websocket"
    websocket_app_key: str = "local-app-key"
    websocket_app_secret: str = "local-app-secret"
    unsubscribe_secret: str = "local-unsubscribe-secret"


@dataclass
class ProvisioningReport:
    """What was created, and what the embedded AWS could not provide."""

    created: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    websocket_secret_arn: str = ""


class EmbeddedAws:
    """moto server mode in this process, plus provisioning from the runtime's definitions."""

    def __init__(self, host: str, port: int, resources: AwsResources) -> None:
        self.resources = resources
        self._server = EmbeddedMotoServer(ip_address=host, port=port, verbose=False)
        self.endpoint = ""

    def start(self) -> None:
        """Bind and serve (``OSError`` when the port is taken), then start from empty state."""
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per moto request
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        # moto's backends are process-wide: forget anything an earlier stack left behind.
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        """Stop the server; moto's state stays in the process until the next reset."""
        self._server.stop()

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``boto3.client`` that reach the embedded AWS."""
        return {
            "endpoint_url": self.endpoint,
            "region_name": self.resources.region,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }

    def provision(self) -> ProvisioningReport:
        """Create the connections and suppression tables, SES identity, configuration set,
        templates and secret."""
        from milequest.services.email.suppression_dynamodb import (
            table_definition as suppression_table,
        )
        from milequest.services.email.templates import load_template_sources
        from milequest.services.websocket.apigateway import TTL_ATTRIBUTE, table_definition

        res = self.resources
        report = ProvisioningReport()

        dynamodb = boto3.client("dynamodb", **self.client_options())
        dynamodb.create_table(TableName=res.connections_table, **table_definition())
        dynamodb.update_time_to_live(
            TableName=res.connections_table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
        report.created.append(f"dynamodb table {res.connections_table} (TTL {TTL_ATTRIBUTE})")
        # The shared email suppression list: every process on the stack sees the same one.
        dynamodb.create_table(TableName=res.suppression_table, **suppression_table())
        report.created.append(f"dynamodb table {res.suppression_table}")

        ses = boto3.client("sesv2", **self.client_options())
        ses.create_email_identity(EmailIdentity=res.sender_domain)
        report.created.append(f"ses identity {res.sender_domain}")
        ses.create_configuration_set(
            ConfigurationSetName=res.configuration_set,
            ReputationOptions={"ReputationMetricsEnabled": True},
            SuppressionOptions={"SuppressedReasons": ["BOUNCE", "COMPLAINT"]},
            DeliveryOptions={"TlsPolicy": "REQUIRE"},
        )
        report.created.append(f"ses configuration set {res.configuration_set}")
        for name, source in load_template_sources().items():
            try:
                ses.create_email_template(
                    TemplateName=res.template_prefix + name,
                    TemplateContent={
                        "Subject": source.subject,
                        "Html": source.html,
                        "Text": source.text,
                    },
                )
                report.created.append(f"ses template {res.template_prefix}{name}")
            except ClientError as exc:
                report.unsupported.append(f"ses template {name} ({_code(exc)})")

        secrets = boto3.client("secretsmanager", **self.client_options())
        secret = secrets.create_secret(
            Name=res.websocket_secret_name,
            SecretString=json.dumps(
                {"key": res.websocket_app_key, "secret": res.websocket_app_secret}
            ),
        )
        report.websocket_secret_arn = secret["ARN"]
        report.created.append(f"secret {res.websocket_secret_name}")
        return report

    @staticmethod
    def forget_tracked_models(services: tuple[str, ...] = ("dynamodb",)) -> int:
        """Drop moto's references to every model instance it ever created; returns how many.

        moto keeps each model object in a class-level list (only for its ``data.json``
        dashboard and ``reset``), and a DynamoDB query creates two per returned item, so a
        long-running stack that fans out to many subscribers grows without bound. The table
        data lives in the backends and is not affected.
        """
        from moto.core.model_instances import model_data

        dropped = 0
        for service in services:
            for model in list(model_data.get(service, {}).values()):
                tracked = getattr(model, "instances_tracked", None)
                if tracked:
                    dropped += len(tracked)
                    model.instances_tracked = []  # type: ignore[attr-defined]
        return dropped

    def sent_emails(self) -> list[dict[str, Any]]:
        """Messages the embedded SES accepted (moto keeps them in its in-process backend)."""
        from moto.ses.models import ses_backends

        backend = ses_backends[DEFAULT_ACCOUNT_ID][self.resources.region]
        return [_describe_ses_message(message) for message in list(backend.sent_messages)]


def _describe_ses_message(message: Any) -> dict[str, Any]:
    described: dict[str, Any] = {
        "message_id": getattr(message, "id", None) or getattr(message, "ids", None),
        "source": message.source,
        "destinations": message.destinations,
        "via": "ses",
    }
    raw = getattr(message, "raw_data", None)
    if raw is not None:
        mime = describe_mime(raw)
        described.update(mime, headers=[list(h) for h in mime["headers"]])
        found = {k.lower(): v for k, v in mime["headers"]}
        with contextlib.suppress(TypeError, ValueError):
            if RECEIVED_AT_HEADER.lower() in found:
                described["received_at"] = float(found[RECEIVED_AT_HEADER.lower()])
            elif "date" in found:
                described["received_at"] = parsedate_to_datetime(found["date"]).timestamp()
        return described
    if hasattr(message, "template"):
        described.update(
            subject=f"(template {message.template})",
            text=message.template_data,
            html=None,
            headers=[],
        )
        return described
    body = str(message.body)
    looks_html = body.lstrip().startswith("<")
    described.update(
        subject=message.subject,
        text=None if looks_html else body,
        html=body if looks_html else None,
        headers=[],
    )
    return described


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "error"))
