"""``LocalStack`` start-up failures: nothing keeps running behind a failed start."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import uvicorn
from milequest.local import LocalStack, StackStartError
from milequest.local import stack as stack_module

from .conftest import stack_config


def test_an_http_server_that_never_starts_fails_the_start_and_stops_everything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def never_started(self: uvicorn.Server, sockets: object = None) -> None:
        while not self.should_exit:
            await asyncio.sleep(0.01)

    monkeypatch.setattr(uvicorn.Server, "serve", never_started)
    monkeypatch.setattr(stack_module, "STARTUP_TIMEOUT_S", 1.0)
    stack = LocalStack(stack_config())
    started = time.monotonic()
    with pytest.raises(StackStartError):
        stack.start()
    assert time.monotonic() - started < 15
    assert not any(t.name == "local-stack" for t in threading.enumerate())
