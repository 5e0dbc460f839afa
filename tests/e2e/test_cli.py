"""``python -m milequest.local`` as a user runs it: banner, busy ports, clean shutdown."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PARTS = ("aws", "gateway", "management", "http", "smtp")


def _command(**ports: int) -> list[str]:
    args = [sys.executable, "-m", "milequest.local"]
    for part in PARTS:
        args += [f"--{part}-port", str(ports.get(part, 0))]
    return args


class _Output:
    """A child's stdout lines, read by a thread so that every wait on them is bounded."""

    def __init__(self, child: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(child,), daemon=True).start()

    def _pump(self, child: subprocess.Popen[str]) -> None:
        assert child.stdout is not None
        for line in child.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def _next(self, deadline: float) -> str | None:
        return self._queue.get(timeout=max(0.0, deadline - time.monotonic()))

    def until(self, prefix: str, timeout: float) -> list[str]:
        """The lines so far, up to one starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        while not (self.lines and self.lines[-1].startswith(prefix)):
            line = self._next(deadline)
            assert line is not None, f"the stack exited early: {''.join(self.lines)}"
            self.lines.append(line)
        return list(self.lines)

    def rest(self, timeout: float) -> str:
        """Everything the child wrote, once it has closed its stdout."""
        deadline = time.monotonic() + timeout
        while (line := self._next(deadline)) is not None:
            self.lines.append(line)
        return "".join(self.lines)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("part", ["gateway", "aws"])
def test_a_busy_port_is_one_clear_line_and_a_non_zero_exit(busy_port: int, part: str) -> None:
    done = subprocess.run(
        _command(**{part: busy_port}), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert f"port {busy_port}" in done.stderr
    assert "already in use" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_an_invalid_variable_is_named_without_a_traceback() -> None:
    env = {**os.environ, "LOCAL_AWS_PORT": "99999", "LOCAL_EMAIL_PROVIDER": "sendmail"}
    done = subprocess.run(
        [sys.executable, "-m", "milequest.local"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode != 0
    assert "LOCAL_AWS_PORT" in done.stderr
    assert "LOCAL_EMAIL_PROVIDER" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_the_banner_then_a_clean_stop_on_a_signal(
    stop_signal: signal.Signals, tmp_path: Path
) -> None:
    with (tmp_path / "stderr.txt").open("w+") as errors:
        child = subprocess.Popen(_command(), stdout=subprocess.PIPE, stderr=errors, text=True)
        try:
            output = _Output(child)
            banner = output.until("Press Ctrl-C", timeout=120)
            text = "".join(banner)
            exports = dict(
                line[len("export ") :].strip().split("=", 1)
                for line in banner
                if line.startswith("export ")
            )
            http = next(line.split()[-1] for line in banner if "HTTP app" in line)
            with urllib.request.urlopen(f"{http}/healthz", timeout=30) as response:
                assert response.status == 200
            token = banner[next(i for i, line in enumerate(banner) if "(24 h):" in line) + 1]
            asked = urllib.request.Request(
                f"{http}/realtime/config", headers={"Authorization": f"Bearer {token.strip()}"}
            )
            with urllib.request.urlopen(asked, timeout=30) as response:
                served = json.load(response)
            child.send_signal(stop_signal)
            child.wait(timeout=60)
            out = output.rest(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            errors.seek(0)
            err = errors.read()
    assert exports["WEBSOCKET_PROVIDER"] == "apigateway"
    assert exports["EMAIL_PROVIDER"] == "smtp"
    assert exports["APIGW_MANAGEMENT_ENDPOINT"].startswith("http://127.0.0.1:")
    assert exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    for name in ("CONNECTIONS_TABLE", "WEBSOCKET_APP_KEY", "WEBSOCKET_APP_SECRET", "SMTP_PORT"):
        assert exports[name]
    # The pusher-js options to paste, pointing at the gateway the banner names.
    options_text = text.split("new Pusher('local-app-key', ", 1)[1].split(")\n", 1)[0]
    options = json.loads(options_text)
    gateway = next(line.split()[-1] for line in banner if "WebSocket gateway" in line)
    assert gateway == f"ws://{options['wsHost']}:{options['wsPort']}/app/local-app-key"
    assert (options["forceTLS"], options["enabledTransports"]) == (False, ["ws"])
    assert options["channelAuthorization"]["endpoint"] == f"{http}/realtime/auth"
    assert options["userAuthentication"]["endpoint"] == f"{http}/realtime/user-auth"
    # The HTTP app hands a front end the same host and port.
    assert (served["options"]["wsHost"], served["options"]["wsPort"]) == (
        options["wsHost"],
        options["wsPort"],
    )
    # Mail goes through the email queue; one suppression list; unsubscribe links work here.
    assert exports["EMAIL_DELIVERY"] == "queue"
    assert exports["EMAIL_QUEUE_URL"].startswith(exports["AWS_ENDPOINT_URL"])
    assert exports["EMAIL_SUPPRESSION_TABLE"]
    assert exports["EMAIL_UNSUBSCRIBE_URL"] == f"{http}/email/unsubscribe"
    assert f"PUSHER_PORT={http.rsplit(':', 1)[1]} PUSHER_USE_TLS=false" in text
    assert child.returncode == 0
    assert out.rstrip().endswith("stopped.")
    assert "Traceback" not in err
