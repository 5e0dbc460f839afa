"""``python -m milequest.local``: run the local stack in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType

from .stack import LocalStack, LocalStackConfig, PortInUseError, StackStartError


def parse_args(argv: list[str] | None = None) -> LocalStackConfig:
    """The configuration: defaults, then ``LOCAL_*`` variables, then the flags."""
    try:
        config = LocalStackConfig.from_env()
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    parser = argparse.ArgumentParser(
        prog="python -m milequest.local",
        description="The Mile Quest local stack: embedded AWS (moto), an API Gateway "
        "WebSocket emulator speaking the Pusher protocol, an SMTP sink, the HTTP app and a "
        "dev console.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--host", default=config.host, help="interface to listen on (env LOCAL_HOST)"
    )
    ports = (
        ("aws", "embedded AWS (moto)"),
        ("gateway", "WebSocket gateway"),
        ("management", "management API (@connections)"),
        ("http", "HTTP app and dev console"),
        ("smtp", "SMTP sink"),
    )
    for name, what in ports:
        parser.add_argument(
            f"--{name}-port",
            type=int,
            default=getattr(config, f"{name}_port"),
            metavar="PORT",
            help=f"port of the {what} (env LOCAL_{name.upper()}_PORT; 0 picks a free one)",
        )
    parser.add_argument(
        "--email-provider",
        choices=("smtp", "ses"),
        default=config.email_provider,
        help="EMAIL_PROVIDER the stack exports: smtp (the sink) or ses (the embedded SES) "
        "(env LOCAL_EMAIL_PROVIDER)",
    )
    parser.add_argument(
        "--email-delivery",
        choices=("queue", "direct"),
        default=config.email_delivery,
        help="queue: mail goes through the embedded SQS to in-process queue consumers, as in "
        "AWS; direct: the caller sends it (env LOCAL_EMAIL_DELIVERY)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=config.idle_timeout,
        metavar="SECONDS",
        help="close WebSocket connections idle this long, as API Gateway does "
        "(env LOCAL_IDLE_TIMEOUT)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="log every part's INFO messages (handler calls, connections, deliveries); "
        "without it only warnings and errors are logged",
    )
    args = parser.parse_args(argv)
    for name, _ in ports:
        port = getattr(args, f"{name}_port")
        if not 0 <= port <= 65535:
            parser.error(f"--{name}-port must be between 0 and 65535")
        setattr(config, f"{name}_port", port)
    if args.idle_timeout <= 0:
        parser.error("--idle-timeout must be positive")
    config.host = args.host
    config.email_provider = args.email_provider
    config.email_delivery = args.email_delivery
    config.idle_timeout = args.idle_timeout
    # The handlers log through Powertools, which reads its level when they are imported.
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "INFO" if args.verbose else "WARNING")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return config


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    stack = LocalStack(config)
    try:
        stack.start()
    except PortInUseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StackStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(stack.banner(), flush=True)
        while not stop.wait(0.5):
            pass
        print("\nstopping…", flush=True)
    finally:
        stack.stop()
    print("stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
