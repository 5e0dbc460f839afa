"""The signed delivery path against the local ``@connections`` endpoint.

The endpoint checks every SigV4 signature against the keys it knows (``connections.keys``),
so a request that arrives was signed correctly for what was sent.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
import re
import socket
import socketserver
import struct
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from botocore.credentials import Credentials, RefreshableCredentials
from hypothesis import given
from hypothesis import strategies as st
from milequest.services.websocket import protocol
from milequest.services.websocket.delivery import ConnectionPoster, management_region

from tests.conftest import server_tls_context

from .conftest import STAGE, new_connection_id
from .endpoints import ConnectionsState, start_connections_endpoint

KEY, SECRET = "AKIDLOCAL", "local-secret"


def _poster(endpoint: str, **options: object) -> ConnectionPoster:
    settings: dict[str, object] = {
        "region": "us-east-1",
        "credentials": Credentials(KEY, SECRET),
        "concurrency": 8,
        "max_attempts": 3,
        "backoff_random": lambda: 0.0,  # the jitter of botocore's backoff: no waiting here
        **options,
    }
    return ConnectionPoster(endpoint, **settings)  # type: ignore[arg-type]


@pytest.fixture
def signed(connections: ConnectionsState) -> ConnectionsState:
    """The endpoint, verifying signatures made with ``KEY``."""
    connections.keys[KEY] = SECRET
    return connections


@pytest.fixture
def poster(management_endpoint: str) -> Iterator[ConnectionPoster]:
    poster = _poster(management_endpoint)
    yield poster
    poster.close()


def test_delivered_signed_and_in_order(poster: ConnectionPoster, signed: ConnectionsState) -> None:
    cid = new_connection_id()
    outcome = poster.post(cid, [b'{"n":1}', b'{"n":2}'])
    assert (outcome.delivered, outcome.gone, outcome.failure) == (2, False, None)
    assert signed.posts[cid] == [b'{"n":1}', b'{"n":2}']
    assert [key for key, _ in signed.signatures] == [KEY, KEY]


def test_410_is_gone_and_not_retried(poster: ConnectionPoster, signed: ConnectionsState) -> None:
    cid = new_connection_id()
    signed.gone.add(cid)
    outcome = poster.post(cid, [b"a", b"b"])
    assert (outcome.delivered, outcome.gone, outcome.failure) == (0, True, None)
    assert signed.requests == 1  # neither retried nor the second message tried


@pytest.mark.parametrize("fault", ["throttle", "fail"])
def test_429_or_500_then_200_is_delivered(
    poster: ConnectionPoster, signed: ConnectionsState, fault: str
) -> None:
    cid = new_connection_id()
    getattr(signed, fault)[cid] = 1
    outcome = poster.post(cid, [b"x"])
    assert (outcome.delivered, outcome.failure) == (1, None)
    assert signed.requests == 2
    assert signed.posts[cid] == [b"x"]


@pytest.mark.parametrize(("fault", "kind"), [("throttle", "throttled"), ("fail", "unavailable")])
def test_retries_stop_at_max_attempts(
    poster: ConnectionPoster, signed: ConnectionsState, fault: str, kind: str
) -> None:
    cid = new_connection_id()
    getattr(signed, fault)[cid] = 100
    outcome = poster.post(cid, [b"x", b"y"])
    assert outcome.failure is not None
    assert outcome.failure.kind == kind
    assert outcome.failure.retryable
    assert outcome.delivered == 0
    assert signed.requests == 3  # max_attempts, the first included; "y" is not tried


def test_a_failure_stops_the_connection_at_the_first_missed_message(
    poster: ConnectionPoster, signed: ConnectionsState
) -> None:
    cid = new_connection_id()
    assert poster.post(cid, [b"1"]).delivered == 1
    signed.fail[cid] = 100
    outcome = poster.post(cid, [b"2", b"3"])
    assert outcome.delivered == 0
    assert signed.posts[cid] == [b"1"]  # "3" never overtakes "2"


def test_403_is_a_configuration_failure_and_stops_the_batch(
    poster: ConnectionPoster, signed: ConnectionsState
) -> None:
    signed.forbid = True
    ids = [new_connection_id() for _ in range(50)]
    outcomes = poster.post_many([(cid, [b"x"]) for cid in ids])
    failures = [o.failure for o in outcomes]
    assert all(f is not None and f.kind == "forbidden" and not f.retryable for f in failures)
    assert "execute-api:ManageConnections" in str(failures[0])
    assert all(o.attempted and o.delivered == 0 for o in outcomes)
    assert signed.requests < 50  # not retried, and the rest not sent


def test_a_bad_signature_is_refused(management_endpoint: str, signed: ConnectionsState) -> None:
    poster = _poster(management_endpoint, credentials=Credentials(KEY, "wrong-secret"))
    outcome = poster.post(new_connection_id(), [b"x"])
    poster.close()
    assert outcome.failure is not None
    assert outcome.failure.kind == "forbidden"
    assert "signature" in outcome.failure.message
    assert not signed.posts


def test_a_slow_answer_within_the_timeout_is_delivered(
    management_endpoint: str, signed: ConnectionsState
) -> None:
    signed.latency = 0.2
    poster = _poster(management_endpoint, timeout=5.0)
    outcome = poster.post(new_connection_id(), [b"x"])
    poster.close()
    assert (outcome.delivered, outcome.failure) == (1, None)
    assert signed.requests == 1


def test_an_answer_slower_than_the_timeout_is_a_bounded_failure(
    management_endpoint: str, signed: ConnectionsState
) -> None:
    signed.latency = 1.0
    poster = _poster(management_endpoint, timeout=0.2, max_attempts=2)
    outcome = poster.post(new_connection_id(), [b"x"])
    poster.close()
    assert outcome.failure is not None
    assert outcome.failure.kind == "unreachable"
    assert outcome.failure.retryable
    assert "Timeout" in outcome.failure.message
    assert signed.requests == 2  # a timeout is retried like botocore retries it


def test_rotating_credentials_are_picked_up_on_every_request(
    management_endpoint: str, signed: ConnectionsState
) -> None:
    generation = itertools.count(1)
    for n in range(1, 6):
        signed.keys[f"AKIDROTATED{n}"] = f"secret-{n}"

    def refresh() -> dict[str, str]:
        n = next(generation)
        # Already inside botocore's mandatory refresh window: every use refreshes.
        expiry = datetime.now(UTC) + timedelta(minutes=1)
        return {
            "access_key": f"AKIDROTATED{n}",
            "secret_key": f"secret-{n}",
            "token": f"token-{n}",
            "expiry_time": expiry.isoformat(),
        }

    credentials = RefreshableCredentials.create_from_metadata(
        refresh(), refresh_using=refresh, method="test-rotation"
    )
    poster = _poster(management_endpoint, credentials=credentials)
    cid = new_connection_id()
    outcome = poster.post(cid, [b"1", b"2", b"3"])
    poster.close()
    assert outcome.delivered == 3  # every signature verified with its own key
    keys = [key for key, _ in signed.signatures]
    signatures = [signature for _, signature in signed.signatures]
    assert keys == ["AKIDROTATED2", "AKIDROTATED3", "AKIDROTATED4"]
    assert len(set(signatures)) == 3


def test_the_retry_quota_of_botocores_standard_mode_bounds_retries(
    management_endpoint: str, signed: ConnectionsState
) -> None:
    # The quota holds 500; a non-throttling retry costs 14: 35 retries, then none.
    ids = [new_connection_id() for _ in range(40)]
    for cid in ids:
        signed.fail[cid] = 100
    poster = _poster(management_endpoint, max_attempts=5, concurrency=1)
    outcomes = [poster.post(cid, [b"x"]) for cid in ids]
    poster.close()
    assert all(o.failure is not None for o in outcomes)
    assert signed.requests == 40 + 35


def test_adaptive_mode_still_retries_throttling(
    management_endpoint: str, signed: ConnectionsState
) -> None:
    cid = new_connection_id()
    signed.throttle[cid] = 1
    poster = _poster(management_endpoint, retry_mode="adaptive")
    outcome = poster.post(cid, [b"x"])
    poster.close()
    assert (outcome.delivered, outcome.failure) == (1, None)
    assert signed.requests == 2


def test_nothing_starts_after_the_deadline(
    poster: ConnectionPoster, signed: ConnectionsState
) -> None:
    ids = [new_connection_id() for _ in range(5)]
    outcomes = poster.post_many([(cid, [b"x"]) for cid in ids], deadline=time.monotonic() - 1)
    assert [o.connection_id for o in outcomes] == ids
    assert not any(o.attempted for o in outcomes)
    assert signed.requests == 0


def test_an_unreachable_endpoint_is_a_retryable_failure(signed: ConnectionsState) -> None:
    from tests.conftest import free_port

    poster = _poster(f"http://127.0.0.1:{free_port()}/local", max_attempts=2)
    outcome = poster.post(new_connection_id(), [b"x"])
    poster.close()
    assert outcome.failure is not None
    assert (outcome.failure.kind, outcome.failure.status) == ("unreachable", 0)


def test_the_signing_region_comes_from_the_execute_api_host() -> None:
    endpoint = "https://abc123.execute-api.eu-west-3.amazonaws.com/prod"
    assert management_region(endpoint, "us-east-1") == "eu-west-3"
    assert management_region("https://abc.execute-api.cn-north-1.amazonaws.com.cn/x", None) == (
        "cn-north-1"
    )
    assert management_region("http://127.0.0.1:3002/local", "us-east-1") == "us-east-1"
    assert management_region("https://ws.example.com/prod", None) is None
    with pytest.raises(ValueError):
        _poster("ftp://example.com/stage")


@given(
    connection_id=st.from_regex(protocol.CONNECTION_ID_RE, fullmatch=True),
    messages=st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=3),
)
def test_property_any_connection_id_and_payload_arrive_signed(
    poster: ConnectionPoster,
    signed: ConnectionsState,
    connection_id: str,
    messages: list[bytes],
) -> None:
    before = len(signed.posts.get(connection_id, []))
    outcome = poster.post(connection_id, messages)
    assert (outcome.delivered, outcome.failure) == (len(messages), None)
    assert signed.posts[connection_id][before:] == messages


class _ClosingKeepAlive(socketserver.ThreadingTCPServer):
    """Answers the first request of each connection, then resets that connection at its
    second one: a server that closed a pooled keep-alive connection while it was idle."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ClosingHandler)
        self.requests = 0
        self.posts: list[bytes] = []


class _ClosingHandler(socketserver.BaseRequestHandler):
    server: _ClosingKeepAlive

    def handle(self) -> None:
        stream = self.request.makefile("rb")
        for turn in itertools.count():
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = stream.readline()
                if not line:
                    return
                head += line
            self.server.requests += 1
            if turn:
                linger = struct.pack("ii", 1, 0)  # close with a reset, nothing answered
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                return
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            self.server.posts.append(stream.read(length))
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


def test_a_connection_closed_while_idle_is_sent_again_without_an_attempt() -> None:
    server = _ClosingKeepAlive()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    poster = _poster(f"http://127.0.0.1:{server.server_address[1]}/stage", max_attempts=1)
    try:
        first = poster.post(new_connection_id(), [b"1"])
        second = poster.post(new_connection_id(), [b"2"])  # its pooled connection is reset
    finally:
        poster.close()
        server.shutdown()
        server.server_close()
    assert (first.delivered, second.delivered) == (1, 1)
    assert second.failure is None  # with one attempt allowed: the resend was not one
    assert server.posts == [b"1", b"2"]
    assert server.requests == 3


def _post_from_child(poster: ConnectionPoster, connection_id: str) -> None:
    outcome = poster.post(connection_id, [b"child"])
    os._exit(0 if outcome.delivered == 1 else 1)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_posts_on_a_loop_of_its_own(
    poster: ConnectionPoster, signed: ConnectionsState
) -> None:
    # The parent's loop runs in a thread, which a forked child does not inherit: a child
    # that waited on it would hang (a pre-forking server starts its workers this way).
    assert poster.post(new_connection_id(), [b"parent"]).delivered == 1
    cid = new_connection_id()
    child = multiprocessing.get_context("fork").Process(target=_post_from_child, args=(poster, cid))
    child.start()
    child.join(30)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0
    assert signed.posts[cid] == [b"child"]


@pytest.fixture
def tls_endpoint(tls_files: tuple[str, str]) -> Iterator[tuple[str, ConnectionsState]]:
    """The @connections endpoint over HTTPS, with a self-signed certificate."""
    server, state = start_connections_endpoint(tls=server_tls_context(tls_files))
    state.keys[KEY] = SECRET
    yield f"https://localhost:{server.port}/{STAGE}", state
    server.stop()


def test_https_with_the_ca_bundle_of_the_environment(
    tls_endpoint: tuple[str, ConnectionsState],
    tls_files: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint, state = tls_endpoint
    cid = new_connection_id()
    monkeypatch.setenv("AWS_CA_BUNDLE", tls_files[0])
    poster = _poster(endpoint)
    outcome = poster.post(cid, [b"over tls"])
    poster.close()
    assert (outcome.delivered, outcome.failure) == (1, None)
    assert state.posts[cid] == [b"over tls"]


def test_an_untrusted_certificate_is_an_unreachable_failure(
    tls_endpoint: tuple[str, ConnectionsState], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, state = tls_endpoint
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    poster = _poster(endpoint, max_attempts=2)
    outcome = poster.post(new_connection_id(), [b"x"])
    poster.close()
    assert outcome.failure is not None
    assert (outcome.failure.kind, outcome.failure.status) == ("unreachable", 0)
    assert "certificate" in outcome.failure.message.lower()
    assert not state.posts


def _loop_threads() -> int:
    return sum(thread.name == "ws-post-loop" for thread in threading.enumerate())


def test_a_poster_nobody_closed_stops_its_loop_when_collected(
    management_endpoint: str, signed: ConnectionsState, caplog: pytest.LogCaptureFixture
) -> None:
    before = _loop_threads()
    poster = _poster(management_endpoint)
    assert poster.post(new_connection_id(), [b"x"]).delivered == 1
    assert _loop_threads() == before + 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del poster
        gc.collect()
        deadline = time.monotonic() + 5
        while _loop_threads() > before and time.monotonic() < deadline:
            time.sleep(0.01)
    assert _loop_threads() == before
    unclosed = [w for w in caught if "nclosed" in str(w.message)]
    assert not unclosed
    assert "nclosed" not in caplog.text


def test_closing_during_a_fan_out_ends_it_at_once_and_the_poster_comes_back(
    management_endpoint: str, signed: ConnectionsState
) -> None:
    ids = [new_connection_id() for _ in range(4)]
    for cid in ids:
        signed.throttle[cid] = 100  # 429s: each post waits a second in botocore's backoff
    poster = _poster(management_endpoint, backoff_random=lambda: 1.0)
    raised: list[BaseException] = []

    def fan_out() -> None:
        try:
            poster.post_many([(cid, [b"x"]) for cid in ids])
        except BaseException as exc:
            raised.append(exc)

    worker = threading.Thread(target=fan_out)
    worker.start()
    time.sleep(0.5)  # the first tries failed; the posts are sleeping before their retries
    started = time.monotonic()
    poster.close()
    worker.join(10)
    assert not worker.is_alive()
    assert time.monotonic() - started < 1.5  # not the seconds of backoff left
    assert [type(exc) for exc in raised] == [RuntimeError], raised
    assert "closed" in str(raised[0]), raised
    assert poster.post(new_connection_id(), [b"again"]).delivered == 1
    poster.close()
