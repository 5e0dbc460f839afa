"""Real pusher-js (the npm package, run by Node) as a test client of the local stack."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("pusher_client.cjs")
WAIT_S = 15.0

Event = dict[str, Any]


def node_binary() -> str:
    """The system Node, else the one package.json pins."""
    found = shutil.which("node") or str(REPO_ROOT / "node_modules" / ".bin" / "node")
    return found


class PusherJs:
    """One pusher-js client in its own Node process; every event it reports is kept."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [node_binary(), str(DRIVER)],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.events: list[Event] = []
        self._inbox: queue.Queue[Event] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"type": "output", "line": line.rstrip()}
            self._inbox.put(event)

    def send(self, op: str, **fields: Any) -> None:
        """Send one command to the driver."""
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self._process.stdin.flush()

    def _drain(self, timeout: float) -> bool:
        try:
            self.events.append(self._inbox.get(timeout=timeout))
        except queue.Empty:
            return False
        return True

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = WAIT_S) -> Event:
        """The first event (seen or coming) matching ``predicate``; AssertionError on timeout."""
        seen = 0
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events[seen:]:
                if event.get("type") == "driver_error":
                    raise AssertionError(f"driver error: {event}")
                if predicate(event):
                    return event
            seen = len(self.events)
            left = deadline - time.monotonic()
            if left <= 0 or not self._drain(left):
                raise AssertionError(f"no matching event within {timeout} s; got {self.events}")

    def wait_type(self, kind: str, timeout: float = WAIT_S, **fields: Any) -> Event:
        """The first event of type ``kind`` whose ``fields`` match."""
        return self.wait_for(
            lambda e: e.get("type") == kind and all(e.get(k) == v for k, v in fields.items()),
            timeout,
        )

    def settle(self, seconds: float = 0.3) -> list[Event]:
        """Collect what arrives within ``seconds``; returns everything seen so far."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._drain(left)
        return self.events

    def of_type(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.get("type") == kind]

    def connect(self, key: str, options: dict[str, Any]) -> str:
        """Connect and return the socket id."""
        self.send("connect", key=key, options=options)
        return str(self.wait_type("connected")["socket_id"])

    def subscribe(self, channel: str) -> Event:
        """Subscribe; returns ``subscribed`` or ``subscription_error``."""
        self.send("subscribe", channel=channel)
        return self.wait_for(
            lambda e: (
                e.get("type") in {"subscribed", "subscription_error"}
                and e.get("channel") == channel
            )
        )

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                self.send("exit")
                self._process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait(timeout=5)
        for stream in (self._process.stdin, self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def pusher_js_clients(count: int) -> Iterator[list[PusherJs]]:
    """``count`` pusher-js processes, stopped on exit."""
    clients: list[PusherJs] = []
    try:
        for _ in range(count):
            clients.append(PusherJs())
        yield clients
    finally:
        for client in clients:
            client.close()
