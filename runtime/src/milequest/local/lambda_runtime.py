"""What the local stack needs to call Lambda handlers in-process: a context and the handlers."""

from __future__ import annotations

import importlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LambdaHandler = Callable[[dict[str, Any], Any], Any]

WEBSOCKET_HANDLERS_MODULE = "milequest.handlers.websocket"


@dataclass
class LocalLambdaContext:
    """The attributes of the Lambda runtime's context object that handlers (and Powertools) use."""

    function_name: str
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    region: str = "us-east-1"
    account_id: str = "123456789012"
    timeout_seconds: float = 30.0
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"local/{self.aws_request_id}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class WebSocketHandlers:
    """The Lambda entry points behind a WebSocket API: authorizer, routes and ``announce``."""

    authorize: LambdaHandler
    on_connect: LambdaHandler
    on_disconnect: LambdaHandler
    on_message: LambdaHandler
    announce: LambdaHandler

    @classmethod
    def from_module(cls, module_name: str = WEBSOCKET_HANDLERS_MODULE) -> WebSocketHandlers:
        """The handlers named ``authorize``/``on_connect``/``on_disconnect``/``on_message``
        and ``announce``."""
        module = importlib.import_module(module_name)
        names = ("authorize", "on_connect", "on_disconnect", "on_message", "announce")
        missing = [name for name in names if not callable(getattr(module, name, None))]
        if missing:
            raise ImportError(f"{module_name} lacks the handler(s): {', '.join(missing)}")
        return cls(*(getattr(module, name) for name in names))
