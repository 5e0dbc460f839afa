#!/usr/bin/env python3
"""How long one send can block when the provider never answers (a script, not a test).

Each provider is pointed at a local socket that accepts connections and never answers;
the script times one ``send_email`` with ``EMAIL_CALL_TIMEOUT`` (default 15 s). Before the
deadline existed, one SES call could block for about 150 s (five attempts of a 30 s read
timeout).

    .venv/bin/python scripts/bench_email_deadline.py [--timeout 15] [--providers ses,resend]
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class Silent:
    """A loopback TCP server that accepts, reads and never writes a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.sock.close()


def _settings(provider: str, port: int) -> dict[str, object]:
    url = f"http://127.0.0.1:{port}"
    return {
        "ses": {"ses_max_send_rate": 100.0},
        "resend": {"resend_api_key": "re_bench", "resend_api_url": url},
        "sendgrid": {"sendgrid_api_key": "SG.bench", "sendgrid_api_url": url},
        "smtp": {"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_security": "none"},
    }[provider]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=15.0, help="EMAIL_CALL_TIMEOUT")
    parser.add_argument("--providers", default="ses,resend,sendgrid,smtp")
    args = parser.parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        DEFAULT_FROM_EMAIL="noreply@milequest.example",
        METRICS_SINK="none",
    )
    from milequest.services.email import EmailError, create_email_service
    from milequest.services.email.ses import attempt_timeouts

    logging.getLogger("milequest").setLevel(logging.ERROR)  # the failures are the point
    connect, read = attempt_timeouts(args.timeout)
    print(f"EMAIL_CALL_TIMEOUT={args.timeout:g} s (SES attempts: {connect:g} s + {read:g} s)")
    for provider in args.providers.split(","):
        silent = Silent()
        os.environ["AWS_ENDPOINT_URL_SESV2"] = f"http://127.0.0.1:{silent.port}"
        service = create_email_service(
            provider, email_call_timeout=args.timeout, **_settings(provider, silent.port)
        )
        started = time.perf_counter()
        try:
            service.send_email({"to": "a@example.com", "subject": "s", "text": "t"})
            outcome = "sent?!"
        except EmailError as exc:
            outcome = f"{exc.code.value}{' (retryable)' if exc.retryable else ''}"
        elapsed = time.perf_counter() - started
        held = len(silent.held)
        print(f"  {provider:<9} blocked {elapsed:6.2f} s -> {outcome}, {held} connection(s)")
        silent.close()


if __name__ == "__main__":
    main()
