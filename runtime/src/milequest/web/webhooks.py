"""Dispatching verified Pusher-format webhook events to handlers registered per event."""

from __future__ import annotations

import inspect
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool

from milequest.services.websocket import WebhookEvent

logger = logging.getLogger("milequest.web")

WebhookHandler = Callable[[WebhookEvent], Awaitable[None] | None]

ANY_EVENT = "*"


class WebhookDispatcher:
    """Handlers by event name (``channel_occupied``, ``member_added``, ... or ``"*"``).

    ``dispatcher.on("member_added")(fn)`` registers ``fn``; synchronous handlers run in a
    worker thread.
    """

    def __init__(self, handlers: Mapping[str, Iterable[WebhookHandler]] | None = None) -> None:
        self._handlers: dict[str, list[WebhookHandler]] = defaultdict(list)
        for name, fns in (handlers or {}).items():
            for fn in fns:
                self.register(name, fn)

    def register(self, name: str, handler: WebhookHandler) -> None:
        self._handlers[name].append(handler)

    def on(self, name: str) -> Callable[[WebhookHandler], WebhookHandler]:
        """Decorator form of :meth:`register`."""

        def decorate(handler: WebhookHandler) -> WebhookHandler:
            self.register(name, handler)
            return handler

        return decorate

    async def dispatch(self, events: Iterable[WebhookEvent]) -> tuple[int, int]:
        """Run the handlers of each event; returns (handled calls, failed calls).

        A failing handler is logged and counted; the others still run.
        """
        handled = failed = 0
        for event in events:
            for handler in [*self._handlers.get(event.name, ()), *self._handlers[ANY_EVENT]]:
                try:
                    await _call(handler, event)
                    handled += 1
                except Exception:
                    failed += 1
                    logger.exception("webhook handler %r failed on %s", handler, event.name)
        return handled, failed


async def _call(handler: WebhookHandler, event: WebhookEvent) -> Any:
    if inspect.iscoroutinefunction(handler):
        return await handler(event)
    result = await run_in_threadpool(handler, event)
    if inspect.isawaitable(result):
        return await result
    return result
