"""``LocalStack``: the embedded AWS, the WebSocket gateway, the SMTP sink and the HTTP apps.

Everything runs in this process: moto in its own thread, the rest on one asyncio loop in a
background thread, so the same object serves ``python -m milequest.local`` (foreground,
signals in the main thread) and tests or benchmarks (``with LocalStack(config) as stack``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import logging
import os
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import uvicorn
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route

from .aws import AwsResources, EmbeddedAws, ProvisioningReport
from .email_queue import LocalEmailQueue, create_email_queue
from .fanout import FanoutConsumer, create_fanout_queues
from .gateway import DEFAULT_IDLE_TIMEOUT, GatewayConfig, WebSocketGateway
from .lambda_runtime import WEBSOCKET_HANDLERS_MODULE, WebSocketHandlers
from .management import create_management_app
from .smtp_sink import SmtpSink

logger = logging.getLogger("milequest.local")

EmailProvider = Literal["smtp", "ses"]
EmailDelivery = Literal["direct", "queue"]
STARTUP_TIMEOUT_S = 60.0
MOTO_TRIM_INTERVAL_S = 10.0


class PortInUseError(RuntimeError):
    """A port the stack needs is already taken."""

    def __init__(self, name: str, host: str, port: int) -> None:
        super().__init__(
            f"port {port} on {host} (the {name}) is already in use; stop whatever holds it "
            f"or choose another port (see --help)"
        )
        self.name = name
        self.host = host
        self.port = port


class StackStartError(RuntimeError):
    """The stack could not start; the message says which part failed and why."""


@dataclass
class LocalStackConfig:
    """Ports (0 picks a free one) and behaviour of the local stack."""

    host: str = "127.0.0.1"
    aws_port: int = 4566
    gateway_port: int = 3001
    management_port: int = 3002
    http_port: int = 8000
    smtp_port: int = 1025
    email_provider: EmailProvider = "smtp"
    email_delivery: EmailDelivery = "queue"
    """``queue``: mail goes through the embedded SQS to in-process queue consumers, as in
    AWS (``EMAIL_DELIVERY=queue``); ``direct``: the caller sends it."""
    email_queue_workers: int = 2
    stage: str = "local"
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    activity_timeout: int = 120
    """Seconds of silence before pusher-js pings (``WEBSOCKET_ACTIVITY_TIMEOUT``)."""
    app_id: str = "1"
    """The app id of the Pusher-compatible HTTP API (``/apps/{id}``)."""
    encryption_master_key: str = field(
        default_factory=lambda: base64.b64encode(os.urandom(32)).decode()
    )
    """Master key of ``private-encrypted-`` channels (base64, new for each stack)."""
    lost_disconnect_delay: float | None = 5.0
    fanout_workers: int = 4
    """Threads consuming the fan-out shard queue (``milequest.handlers.fanout``)."""
    handlers_module: str = WEBSOCKET_HANDLERS_MODULE
    resources: AwsResources = field(default_factory=AwsResources)
    export_env: bool = True
    """Put the stack's variables into ``os.environ`` while it runs (the in-process
    handlers and services read them there); the previous values come back on stop."""

    @classmethod
    def from_env(cls) -> LocalStackConfig:
        """Defaults overridden by the ``LOCAL_*`` variables (:class:`LocalStackSettings`).

        Raises ``ValueError`` naming the variable when a value is invalid.
        """
        try:
            env = LocalStackSettings()
        except ValidationError as exc:
            problems = "; ".join(
                f"LOCAL_{str(err['loc'][0]).upper()}: {err['msg']} (got {err.get('input')!r})"
                for err in exc.errors()
            )
            raise ValueError(problems) from None
        return cls(**env.model_dump())


class LocalStackSettings(BaseSettings):
    """The local stack's ``LOCAL_*`` variables (the command-line flags override them)."""

    model_config = SettingsConfigDict(env_prefix="LOCAL_", extra="ignore")

    host: str = Field("127.0.0.1", description="Interface the local stack listens on")
    aws_port: int = Field(4566, ge=0, le=65535, description="Embedded AWS (moto); 0: any free")
    gateway_port: int = Field(3001, ge=0, le=65535, description="WebSocket gateway")
    management_port: int = Field(3002, ge=0, le=65535, description="Management API")
    http_port: int = Field(8000, ge=0, le=65535, description="HTTP app and dev console")
    smtp_port: int = Field(1025, ge=0, le=65535, description="SMTP sink")
    email_provider: EmailProvider = Field("smtp", description="smtp (the sink) or ses")
    email_delivery: EmailDelivery = Field(
        "queue",
        description="queue: mail goes through the embedded SQS and in-process queue consumers; "
        "direct: the caller sends it",
    )
    email_queue_workers: int = Field(2, ge=1, le=16, description="Email queue consumers")
    idle_timeout: float = Field(
        DEFAULT_IDLE_TIMEOUT, gt=0, description="Seconds before an idle WebSocket is closed"
    )
    fanout_workers: int = Field(
        4, ge=1, le=64, description="Workers delivering fan-out shards of large channels"
    )


def bind_port(name: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; :class:`PortInUseError` when it is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise PortInUseError(name, host, port) from None
        raise StackStartError(f"cannot listen on {host}:{port} for the {name}: {exc}") from None
    sock.listen(4096)
    sock.setblocking(False)
    return sock


class LocalStack:
    """The whole local stack. ``start()`` returns once every part serves; ``stop()`` ends all."""

    def __init__(
        self,
        config: LocalStackConfig | None = None,
        *,
        handlers: WebSocketHandlers | None = None,
    ) -> None:
        self.config = config or LocalStackConfig()
        cfg = self.config
        self.aws = EmbeddedAws(cfg.host, cfg.aws_port, cfg.resources)
        self.gateway = WebSocketGateway(
            handlers or (lambda: WebSocketHandlers.from_module(cfg.handlers_module)),
            GatewayConfig(
                stage=cfg.stage,
                app_key=cfg.resources.websocket_app_key,
                region=cfg.resources.region,
                idle_timeout=cfg.idle_timeout,
                lost_disconnect_delay=cfg.lost_disconnect_delay,
            ),
        )
        self.smtp = SmtpSink()
        self.fanout: FanoutConsumer | None = None
        self.email_queue: LocalEmailQueue | None = None
        self.webhooks: deque[dict[str, Any]] = deque(maxlen=200)
        self.provisioning = ProvisioningReport()
        self.env: dict[str, str] = {}
        self.urls: dict[str, str] = {}
        self._saved_env: dict[str, str | None] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._sockets: dict[str, socket.socket] = {}
        self._aws_started = False
        self._running = False

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> LocalStack:
        """Bind every port, start and provision the embedded AWS, then serve everything."""
        if self._running:
            return self
        cfg = self.config
        try:
            for name, port in (
                ("WebSocket gateway", cfg.gateway_port),
                ("management API", cfg.management_port),
                ("HTTP app", cfg.http_port),
                ("SMTP sink", cfg.smtp_port),
            ):
                self._sockets[name] = bind_port(name, cfg.host, port)
            if cfg.aws_port:
                # werkzeug (under moto) exits the process on a busy port: check it first.
                bind_port("embedded AWS", cfg.host, cfg.aws_port).close()
            try:
                self.aws.start()
            except (OSError, SystemExit) as exc:
                if isinstance(exc, SystemExit):
                    raise PortInUseError("embedded AWS", cfg.host, cfg.aws_port) from None
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    raise PortInUseError("embedded AWS", cfg.host, cfg.aws_port) from None
                raise StackStartError(f"the embedded AWS could not start: {exc}") from None
            self._aws_started = True
            self.provisioning = self.aws.provision()
            self._compute_env()
            if cfg.email_delivery == "queue":
                self.email_queue = create_email_queue(self.aws, workers=cfg.email_queue_workers)
                self.env.update(self.email_queue.environment)
            if cfg.export_env:
                self._export_env()
            self._fanout_consumer().start()
            self._thread = threading.Thread(target=self._run, name="local-stack", daemon=True)
            self._thread.start()
            if not self._ready.wait(STARTUP_TIMEOUT_S):
                raise StackStartError("the local stack did not start in time")
            if self._startup_error is not None:
                raise StackStartError(
                    f"the local stack could not start: {self._startup_error}"
                ) from self._startup_error
            if self.email_queue is not None:  # its consumers send to the SMTP sink
                self.email_queue.start()
        except BaseException:
            self._running = True
            self.stop()
            raise
        self._running = True
        return self

    def stop(self) -> None:
        """Stop every part (WebSocket clients get a close frame) and restore the environment."""
        if not self._running:
            return
        self._running = False
        if self.email_queue is not None:
            self.email_queue.stop()
            self.email_queue = None
        if self.fanout is not None:  # first: its shards still need the management API
            self.fanout.stop()
            self.fanout = None
        if self._loop is not None and self._stop_requested is not None:
            # The serving thread may have ended (and closed its loop) on its own.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop_requested.set)
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        if self._aws_started:
            self.aws.stop()
            self._aws_started = False
        self._restore_env()
        _reset_registry()

    # -- what applications need ------------------------------------------------------------

    def _compute_env(self) -> None:
        cfg, res = self.config, self.config.resources
        ports = {name: sock.getsockname()[1] for name, sock in self._sockets.items()}
        host = cfg.host
        gateway_url = f"ws://{host}:{ports['WebSocket gateway']}/app/{res.websocket_app_key}"
        management_base = f"http://{host}:{ports['management API']}"
        management = f"{management_base}/{cfg.stage}"
        http_url = f"http://{host}:{ports['HTTP app']}"
        self.urls = {
            "websocket": gateway_url,
            "management": management,
            "http": http_url,
            "console": f"{http_url}/console/",
            "aws": self.aws.endpoint,
            "smtp": f"smtp://{host}:{ports['SMTP sink']}",
        }
        self.env = {
            "AWS_ENDPOINT_URL": self.aws.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": res.region,
            "AWS_REGION": res.region,
            "WEBSOCKET_PROVIDER": "apigateway",
            "CONNECTIONS_TABLE": res.connections_table,
            "APIGW_MANAGEMENT_ENDPOINT": management,
            "WEBSOCKET_APP_KEY": res.websocket_app_key,
            "WEBSOCKET_APP_SECRET": res.websocket_app_secret,
            "WEBSOCKET_APP_ID": cfg.app_id,
            "WEBSOCKET_ENCRYPTION_MASTER_KEY": cfg.encryption_master_key,
            "WEBSOCKET_ACTIVITY_TIMEOUT": str(cfg.activity_timeout),
            "WEBSOCKET_ANNOUNCE_FUNCTION": WebSocketGateway.ANNOUNCE_FUNCTION,
            "AWS_ENDPOINT_URL_LAMBDA": management_base,
            "WEBSOCKET_WEBHOOK_URL": f"{http_url}/webhooks/pusher",
            "WEBSOCKET_FANOUT_QUEUE_URL": self._fanout_consumer().queues.queue_url,
            "REALTIME_CHANNEL_POLICY": "allow-all",
            "EMAIL_PROVIDER": cfg.email_provider,
            "DEFAULT_FROM_EMAIL": f"noreply@{res.sender_domain}",
            "AWS_SES_REGION": res.region,
            "SES_CONFIGURATION_SET": res.configuration_set,
            "SES_TEMPLATE_PREFIX": res.template_prefix,
            "SMTP_HOST": host,
            "SMTP_PORT": str(ports["SMTP sink"]),
            "SMTP_SECURITY": "none",
            "SMTP_LOCAL_HOSTNAME": "localhost",
            "EMAIL_SUPPRESSION_TABLE": res.suppression_table,
            "EMAIL_UNSUBSCRIBE_URL": f"{http_url}/email/unsubscribe",
            "EMAIL_UNSUBSCRIBE_SECRET": res.unsubscribe_secret,
            "REALTIME_WS_HOST": host,
            "REALTIME_WS_PORT": str(ports["WebSocket gateway"]),
            "REALTIME_WS_TLS": "false",
        }

    def _fanout_consumer(self) -> FanoutConsumer:
        """The shard queue on the embedded SQS and its workers (started with the stack)."""
        if self.fanout is None:
            import boto3

            region = self.config.resources.region
            sqs = boto3.client("sqs", **self.aws.client_options())
            self.fanout = FanoutConsumer(
                sqs, create_fanout_queues(sqs), workers=self.config.fanout_workers, region=region
            )
        return self.fanout

    def _export_env(self) -> None:
        for name, value in self.env.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        # AWS_SESSION_TOKEN would sign requests for a session moto never issued.
        self._saved_env.setdefault("AWS_SESSION_TOKEN", os.environ.pop("AWS_SESSION_TOKEN", None))
        _reset_registry()

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()

    def connection_token(self, user_id: str, ttl_seconds: int = 24 * 3600) -> str:
        """A connection token for ``user_id`` signed with the stack's WebSocket app secret."""
        from milequest.services.websocket import issue_connection_token

        return issue_connection_token(
            user_id, ttl_seconds, secret=self.config.resources.websocket_app_secret
        )

    def emails(self) -> list[dict[str, Any]]:
        """Every captured email: the SMTP sink's, then the embedded SES's, oldest first."""
        captured = [m.describe() for m in self.smtp.messages]
        return captured + self.aws.sent_emails()

    def pusher_js_options(self) -> dict[str, Any]:
        """The options a pusher-js front end passes to ``new Pusher(key, options)`` here."""
        host, port = self.urls["websocket"].removeprefix("ws://").split("/", 1)[0].rsplit(":", 1)
        http_url = self.urls["http"]
        return {
            "cluster": "local",  # required by pusher-js 8, unused when wsHost is set
            "wsHost": host,
            "wsPort": int(port),
            "forceTLS": False,
            "enabledTransports": ["ws"],
            "channelAuthorization": {"endpoint": f"{http_url}/realtime/auth", "transport": "ajax"},
            "userAuthentication": {
                "endpoint": f"{http_url}/realtime/user-auth",
                "transport": "ajax",
            },
        }

    def pusher_sdk_settings(self) -> dict[str, Any]:
        """The settings Pusher's server SDKs use to publish through this stack's HTTP API."""
        host, port = self.urls["http"].removeprefix("http://").rsplit(":", 1)
        res = self.config.resources
        return {
            "app_id": self.config.app_id,
            "key": res.websocket_app_key,
            "secret": res.websocket_app_secret,
            "host": host,
            "port": int(port),
            "ssl": False,
            "encryption_master_key_base64": self.config.encryption_master_key,
        }

    def banner(self) -> str:
        """The URLs, the pusher-js options and the environment an application needs."""
        lines = ["Mile Quest local stack is running.", ""]
        labels = {
            "console": "Dev console      ",
            "http": "HTTP app         ",
            "websocket": "WebSocket gateway",
            "management": "Management API   ",
            "aws": "Embedded AWS     ",
            "smtp": "SMTP sink        ",
        }
        lines += [f"  {labels[key]}  {self.urls[key]}" for key in labels]
        lines += ["", "Environment for an application using this stack:", ""]
        lines += [f"export {name}={value}" for name, value in self.env.items()]
        options = json.dumps(self.pusher_js_options(), indent=2).replace("\n", "\n  ")
        key = self.config.resources.websocket_app_key
        sdk = self.pusher_sdk_settings()
        lines += [
            "",
            "Alternatively to WEBSOCKET_APP_KEY/SECRET: "
            f"WEBSOCKET_SECRET_ARN={self.provisioning.websocket_secret_arn}",
            "",
            "pusher-js (with-encryption build for private-encrypted- channels):",
            f"  new Pusher('{key}', {options})",
            "",
            "The auth endpoints identify users by 'Authorization: Bearer <token>' (put it in",
            "channelAuthorization.headers / userAuthentication.headers). A token for 'dev-user'",
            "(24 h):",
            f"  {self.connection_token('dev-user')}",
            "",
            "Pusher server SDKs publish here (Pusher's HTTP API):",
            "  " + ", ".join(f"{name}={value!r}" for name, value in sdk.items()),
            f"  or PUSHER_APP_ID={sdk['app_id']} PUSHER_KEY={sdk['key']} "
            f"PUSHER_SECRET={sdk['secret']} PUSHER_HOST={sdk['host']} "
            f"PUSHER_PORT={sdk['port']} PUSHER_USE_TLS=false",
        ]
        if self.provisioning.unsupported:
            lines += ["", "Not provided by the embedded AWS (the runtime renders these itself):"]
            lines += [f"  - {item}" for item in self.provisioning.unsupported]
        lines += ["", "Press Ctrl-C to stop."]
        return "\n".join(lines)

    # -- the asyncio side ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._startup_error = self._startup_error or exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
        try:
            await self.smtp.start(self._sockets["SMTP sink"])
            await self.gateway.start(self._sockets["WebSocket gateway"])
            for name, app in (
                ("management API", create_management_app(self.gateway)),
                ("HTTP app", self._http_app()),
            ):
                server = uvicorn.Server(
                    uvicorn.Config(
                        app,
                        log_level="warning",
                        access_log=False,
                        lifespan="off",
                        ws="none",
                        timeout_graceful_shutdown=5,
                    )
                )
                task = asyncio.create_task(server.serve(sockets=[self._sockets[name]]))
                servers.append((server, task))
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                while not all(server.started for server, _ in servers):
                    failed = [task for _, task in servers if task.done()]
                    if failed:
                        failed[0].result()
                        raise StackStartError("an HTTP server stopped during start-up")
                    await asyncio.sleep(0.01)
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            await self._shutdown(servers)
            return
        self._ready.set()
        trimmer = asyncio.create_task(self._trim_moto_tracking())
        await self._stop_requested.wait()
        trimmer.cancel()
        await self._shutdown(servers)

    async def _trim_moto_tracking(self) -> None:
        while True:
            await asyncio.sleep(MOTO_TRIM_INTERVAL_S)
            self.aws.forget_tracked_models()

    async def _shutdown(self, servers: list[tuple[uvicorn.Server, asyncio.Task[None]]]) -> None:
        # The gateway goes first: its $disconnect handlers still need the management API.
        await self.gateway.stop()
        for server, _ in servers:
            server.should_exit = True
        for _, task in servers:
            try:
                await asyncio.wait_for(task, timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                logger.warning("an HTTP server did not stop in time")
            except Exception:
                logger.exception("an HTTP server failed while stopping")
        await self.smtp.stop()

    def _http_app(self) -> Starlette:
        from milequest.web import create_app

        from .console import create_console_app

        web = create_app(health_services=("websocket", "email"))
        web.state.webhooks.register("*", self._record_webhook)

        async def home(request: Request) -> RedirectResponse:
            return RedirectResponse("/console/")

        return Starlette(
            routes=[
                Route("/", home),
                Mount("/console", create_console_app(self)),
                Mount("/", web),
            ]
        )

    def _record_webhook(self, event: Any) -> None:
        self.webhooks.append(event.model_dump(exclude_none=True))


def _reset_registry() -> None:
    from milequest.services.registry import reset_services

    reset_services()
