"""Delivery to API Gateway connections: the signed ``@connections`` path.

**Why this one hot path leaves boto3.** ``post_to_connection`` is the only call a fan-out
repeats thousands of times, and through boto3 each call costs about 0.8 ms of Python
(parameter serialization, the event system, the retry handler, response parsing), so a
fan-out was bound by botocore's CPU, not by the network. Here a post is what the SDK would
send and nothing more: one signature by botocore's own ``SigV4Auth`` with the session's
credentials (frozen again for every request, so rotated credentials are picked up) and one
request on a pooled keep-alive connection. Retries are botocore's standard mode, made of its
own pieces (``StandardRetryConditions``, ``ExponentialBackoff``, ``RetryQuotaChecker``, and
``ClientRateLimiter`` in adaptive mode). Everything else (DynamoDB, SQS, ``delete_connection``,
the first frame of a new connection) stays on boto3.

The HTTP client is aiohttp on one event loop, chosen by measurement (scripts/bench_websocket.py,
2,000 posts at 256 in flight on 2 CPUs): against urllib3 on 256 threads it spent about half the
CPU per request (0.31 against 0.61 ms unsigned), because hundreds of threads contending for
the GIL cost more than the requests; httpx's ``AsyncClient`` cost several times more than either.

**Shards.** A channel with many subscribers is not delivered inline: :class:`ShardJob`
messages (the frames, the channel and a page of its connection ids) go to an SQS queue, and
fan-out workers (:mod:`milequest.handlers.fanout`) deliver them. A shard that could not
reach some connections queues exactly those again (:func:`remainder_jobs`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import functools
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .protocol import CONNECTION_ID_RE, MAX_FRAME_BYTES

if TYPE_CHECKING:
    import aiohttp
    from botocore.awsrequest import AWSResponse
    from botocore.credentials import Credentials
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger("milequest.services.websocket.delivery")

SIGNING_NAME = "execute-api"  # the management API's SigV4 service name
_EXECUTE_API_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?\Z")
_DEFAULT_PORTS = {"http": 80, "https": 443}

FailureKind = Literal["throttled", "unavailable", "unreachable", "forbidden", "rejected"]


def management_region(endpoint: str, default: str | None) -> str | None:
    """The region to sign for: the one in an ``execute-api`` host, else ``default``."""
    match = _EXECUTE_API_HOST.search(urlsplit(endpoint).hostname or "")
    return match.group(1) if match else default


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a post did not arrive (after the retries it was due)."""

    kind: FailureKind
    status: int  # 0 when no response came
    message: str

    @property
    def retryable(self) -> bool:
        return self.kind in ("throttled", "unavailable", "unreachable")


@dataclass(slots=True)
class Outcome:
    """What happened to one connection's messages, posted in order.

    ``delivered`` counts the leading messages that arrived: posting stops at the first
    failure so that a retry can resume there without reordering.
    """

    connection_id: str
    delivered: int = 0
    gone: bool = False
    failure: Failure | None = None
    attempted: bool = True  # False: not started, the deadline had passed


class ConnectionPoster:
    """POSTs frames to ``{endpoint}/@connections/{id}``, signed, pooled and retried.

    - 2xx: delivered. 410: the connection is gone (not retried).
    - 429 and 5xx, connection errors and timeouts: retried with botocore's standard-mode
      jittered backoff and retry quota, ``max_attempts`` attempts in all (the first one
      included), then reported as a failure.
    - 403: our credentials or the endpoint are wrong; the posts still pending in the same
      :meth:`post_many` call are not sent (they fail the same way).
    - Any other answer: a failure, not retried.

    The methods are synchronous and thread-safe: every call runs on the poster's own event
    loop (one thread, started on first use), which keeps the pooled connections between
    calls and holds at most ``concurrency`` requests in flight across all of them.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        region: str,
        credentials: Credentials,
        concurrency: int = 256,
        max_attempts: int = 5,
        retry_mode: str = "standard",
        timeout: float = 5.0,
        backoff_random: Callable[[], float] | None = None,
    ) -> None:
        from botocore.retries import quota, standard

        parts = urlsplit(endpoint.rstrip("/"))
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) endpoint: {endpoint!r}")
        host = parts.hostname
        if parts.port and parts.port != _DEFAULT_PORTS[parts.scheme]:
            host = f"{host}:{parts.port}"
        self.host = host  # the Host header, as botocore signs it (default port left out)
        self.region = region
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._prefix = f"{parts.path}/@connections/"
        self._tls = parts.scheme == "https"
        self._credentials = credentials
        self.max_attempts = max_attempts
        self.concurrency = concurrency
        self.timeout = timeout
        self._detector = standard.ThrottlingErrorDetector(standard.RetryEventAdapter())
        # StandardRetryConditions minus its two service-specific checks (STS identity
        # provider errors, DynamoDB checksums), which need an operation model; the
        # PostToConnection model marks none of its errors retryable.
        self._attempts = standard.MaxAttemptsChecker(max_attempts)
        self._conditions = standard.OrRetryChecker(
            [
                standard.TransientRetryableChecker(),
                standard.ThrottledRetryableChecker(),
                # (newer than botocore-stubs)
                standard.ThrottlingStatusCodeChecker(),  # type: ignore[attr-defined]
            ]
        )
        self._backoff = standard.ExponentialBackoff(
            random=backoff_random or random.random, throttling_detector=self._detector
        )
        self._quota = standard.RetryQuotaChecker(quota.RetryQuota(), self._detector)
        self._limiter = _rate_limiter(self._detector) if retry_mode == "adaptive" else None
        self._lock = threading.Lock()
        self._runner: _LoopThread | None = None
        self._stopper: weakref.finalize[Any, Any] | None = None

    # -- the synchronous API -------------------------------------------------------------

    def post(self, connection_id: str, messages: Sequence[bytes]) -> Outcome:
        """Post ``messages`` to one connection in order; stops at a 410 or a failure."""
        return self._run(lambda session: self._post(session, connection_id, messages))

    def post_many(
        self, work: Sequence[tuple[str, Sequence[bytes]]], *, deadline: float | None = None
    ) -> list[Outcome]:
        """Post to every connection concurrently; one :class:`Outcome` each, in order.

        No connection is started after ``deadline`` (``time.monotonic()``): those come back
        with ``attempted=False``. After a 403 none is started either: those come back with
        that failure, as they would all have had it.
        """
        if not work:
            return []
        return self._run(lambda session: self._post_many(session, work, deadline))

    def close(self) -> None:
        """Close the pooled connections and stop the loop's thread (both come back on use)."""
        with self._lock:
            stopper, self._stopper, self._runner = self._stopper, None, None
        if stopper is not None:
            stopper()

    def _run(self, call: Callable[[_Session], Awaitable[_T]]) -> _T:
        with self._lock:
            if self._runner is None or not self._runner.usable():
                if self._stopper is not None:
                    self._stopper.detach()  # a forked child's copy: nothing of it runs here
                self._runner = _LoopThread(self._new_session)
                # Stopped when the poster is collected or at exit, if nobody closed it.
                self._stopper = weakref.finalize(self, self._runner.stop)
            runner = self._runner
        return runner.run(call)

    # -- on the loop ---------------------------------------------------------------------

    async def _new_session(self) -> _Session:
        import ssl

        import aiohttp
        from botocore.httpsession import get_cert_path

        context: ssl.SSLContext | bool = False
        if self._tls:
            context = ssl.create_default_context(
                cafile=os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True)
            )
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency, ssl=context),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.timeout, sock_read=self.timeout
            ),
            skip_auto_headers=("User-Agent", "Content-Type"),
            auto_decompress=False,
        )
        return _Session(session, asyncio.Semaphore(self.concurrency))

    async def _post(
        self, session: _Session, connection_id: str, messages: Sequence[bytes]
    ) -> Outcome:
        outcome = Outcome(connection_id)
        path = self._prefix + quote(connection_id, safe="")
        for data in messages:
            status, failure = await self._post_with_retries(session, path, data)
            if status == 410:
                outcome.gone = True
                break
            if failure is not None:
                outcome.failure = failure
                break
            outcome.delivered += 1
        return outcome

    async def _post_many(
        self,
        session: _Session,
        work: Sequence[tuple[str, Sequence[bytes]]],
        deadline: float | None,
    ) -> list[Outcome]:
        refusal: list[Failure] = []

        async def one(connection_id: str, messages: Sequence[bytes]) -> Outcome:
            async with session.gate:
                if refusal:
                    return Outcome(connection_id, failure=refusal[0])
                if deadline is not None and time.monotonic() >= deadline:
                    return Outcome(connection_id, attempted=False)
                outcome = await self._post(session, connection_id, messages)
            if outcome.failure is not None and outcome.failure.kind == "forbidden":
                refusal.append(outcome.failure)
            return outcome

        return list(await asyncio.gather(*(one(cid, messages) for cid, messages in work)))

    async def _post_with_retries(
        self, session: _Session, path: str, data: bytes
    ) -> tuple[int, Failure | None]:
        """Post until delivered, gone or out of retries; (HTTP status, failure or None)."""
        from botocore.retries.standard import RetryContext

        request_context: dict[str, Any] = {}
        attempt = 1
        while True:
            if self._limiter is not None:
                # The adaptive token bucket blocks the caller while it waits: in a thread.
                await asyncio.to_thread(self._limiter.on_sending_request, request=None)
            response, parsed, error = await self._send(session, path, data)
            if self._limiter is not None:
                self._limiter.on_receiving_response(
                    attempts=attempt,
                    response=None if response is None else (response, parsed),
                    caught_exception=error,
                    operation=None,
                    request_dict={"context": request_context},
                )
            status = 0 if response is None else response.status_code
            if response is not None and parsed is None:  # 2xx or 410
                # The quota's "after-call" hook reads the request context, not a RetryContext.
                self._quota.release_retry_quota(cast(Any, request_context), response)
                return status, None
            context = RetryContext(
                attempt,
                parsed_response=parsed,
                http_response=response,
                caught_exception=error,
                request_context=request_context,
            )
            if (
                self._attempts.is_retryable(context)
                and self._conditions.is_retryable(context)
                and self._quota.acquire_retry_quota(context)
            ):
                await asyncio.sleep(self._backoff.delay_amount(context))
                attempt += 1
                continue
            throttled = self._detector.is_throttling_error_from_context(context)
            return status, _failure(status, parsed, error, throttled)

    async def _send(
        self, session: _Session, path: str, data: bytes
    ) -> tuple[AWSResponse | None, dict[str, Any] | None, Exception | None]:
        """One signed attempt: the response, its parsed error (None: 2xx or 410) or the
        exception that stopped it, as botocore's retry checks expect them."""
        import aiohttp
        from botocore.awsrequest import AWSResponse
        from botocore.exceptions import HTTPClientError

        url = self._origin + path
        headers = self._signed_headers(url, data)
        try:
            try:
                status, answer_headers, body = await self._request(session, url, data, headers)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if isinstance(exc, aiohttp.ClientConnectorError) or (
                    isinstance(exc, aiohttp.ClientOSError)
                    and exc.errno not in (errno.ECONNRESET, errno.EPIPE)
                ):
                    raise
                # A pooled keep-alive connection the server had closed while it was idle:
                # sent again at once on another connection, as HTTP clients do, rather than
                # spending an attempt and the retry quota (a pool of hundreds of idle
                # connections can hold dozens of these after a pause).
                status, answer_headers, body = await self._request(session, url, data, headers)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return None, None, HTTPClientError(error=exc)
        if 200 <= status < 300 or status == 410:  # the retry quota reads the status only
            return AWSResponse(url, status, cast(Any, {}), None), None, None
        # AWSResponse copies the headers into its own case-insensitive dict.
        response = AWSResponse(url, status, cast(Any, answer_headers), None)
        return response, _parsed_error(status, response.headers, body), None

    def _signed_headers(self, url: str, data: bytes) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        # Signed again for every attempt, with the credentials of the moment (refreshed by
        # botocore when they near expiry), as the SDK does. The Host header and the payload
        # hash are given, as the JavaScript SDK sends them: the signer then neither parses
        # the URL for the host nor prepares the whole request to hash its body.
        headers = {"Host": self.host, "X-Amz-Content-SHA256": _sha256(data)}
        request = AWSRequest("POST", url, data=data, headers=headers)
        SigV4Auth(self._credentials.get_frozen_credentials(), SIGNING_NAME, self.region).add_auth(
            request
        )
        return dict(request.headers.items())

    @staticmethod
    async def _request(
        session: _Session, url: str, data: bytes, headers: dict[str, str]
    ) -> tuple[int, Any, bytes]:
        from yarl import URL

        # encoded=True: the path goes out exactly as it was signed (an id's "%3D" stays).
        request = session.http.post(URL(url, encoded=True), data=data, headers=headers)
        async with request as answer:
            return answer.status, answer.headers, await answer.read()


_T = TypeVar("_T")


@dataclass(slots=True)
class _Session:
    """What a poster's loop holds: the pooled HTTP session and the in-flight cap."""

    http: aiohttp.ClientSession
    gate: asyncio.Semaphore


class _LoopThread:
    """An event loop in a daemon thread, with one session made on it.

    Why not ``asyncio.run`` per call: the pooled connections (and their TLS sessions) must
    outlive a call, and they belong to the loop that opened them.
    """

    def __init__(self, new_session: Callable[[], Coroutine[Any, Any, _Session]]) -> None:
        self._pid = os.getpid()
        self._state = threading.Lock()
        self._stopping = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ws-post-loop", daemon=True
        )
        self._thread.start()
        self.session = asyncio.run_coroutine_threadsafe(new_session(), self._loop).result()

    def usable(self) -> bool:
        """False in a forked child: the loop's thread did not come along."""
        return self._pid == os.getpid() and self._thread.is_alive()

    def run(self, call: Callable[[_Session], Awaitable[_T]]) -> _T:
        """Run ``call`` on the loop and wait for it; RuntimeError once :meth:`stop` began."""

        async def on_the_loop() -> _T:
            return await call(self.session)

        with self._state:
            if self._stopping:
                raise RuntimeError("the connection poster was closed")
            future = asyncio.run_coroutine_threadsafe(on_the_loop(), self._loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise RuntimeError("the connection poster was closed while posting") from None

    def stop(self) -> None:
        """Cancel the calls in progress, close the session, then end the loop; waits for
        all of it unless called on the loop (a garbage collection can run a finalizer
        there)."""
        with self._state:
            if self._stopping or not self.usable():
                return
            self._stopping = True

        async def shut_down() -> None:
            pending = asyncio.all_tasks() - {asyncio.current_task()}
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await self.session.http.close()

        closing = asyncio.run_coroutine_threadsafe(shut_down(), self._loop)
        closing.add_done_callback(lambda _: self._loop.call_soon_threadsafe(self._loop.stop))
        if threading.current_thread() is not self._thread:
            closing.result()
            self._thread.join()
            self._loop.close()


@functools.lru_cache(maxsize=64)
def _sha256(data: bytes) -> str:
    """The payload hash of a frame: a fan-out posts the same bytes object to everyone."""
    return hashlib.sha256(data).hexdigest()


def _rate_limiter(detector: Any) -> Any:
    """botocore's adaptive-mode client rate limiter (what ``retries.mode=adaptive`` wires)."""
    from botocore.retries import adaptive, bucket, throttling

    clock = bucket.Clock()
    return adaptive.ClientRateLimiter(
        rate_adjustor=throttling.CubicCalculator(
            starting_max_rate=0, start_time=clock.current_time()
        ),
        rate_clocker=adaptive.RateClocker(clock),
        token_bucket=bucket.TokenBucket(max_rate=1, clock=clock),
        throttling_detector=detector,
        clock=clock,
    )


def _parsed_error(status: int, headers: Any, body: bytes) -> dict[str, Any]:
    """An error answer as botocore parses one (``Error.Code`` from ``x-amzn-ErrorType``)."""
    code = str(headers.get("x-amzn-ErrorType", "")).split(":")[0]
    try:
        message = str(json.loads(body).get("message", "")) if body else ""
    except (ValueError, AttributeError):
        message = body[:200].decode("utf-8", "replace")
    return {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }


def _failure(
    status: int, parsed: dict[str, Any] | None, error: Exception | None, throttled: bool
) -> Failure:
    if error is not None or parsed is None:
        cause = getattr(error, "kwargs", {}).get("error", error)  # urllib3's own exception
        return Failure("unreachable", 0, f"{type(cause).__name__}: {cause}")
    code, message = parsed["Error"]["Code"], parsed["Error"]["Message"]
    text = " ".join(part for part in (f"HTTP {status}", code, message and f"({message})") if part)
    if throttled:
        return Failure("throttled", status, text)
    if status >= 500:
        return Failure("unavailable", status, text)
    if status == 403:
        return Failure(
            "forbidden",
            status,
            f"the management API refused our requests ({text}): check that "
            "APIGW_MANAGEMENT_ENDPOINT is this API's stage URL and that the role may "
            "execute-api:ManageConnections on it",
        )
    return Failure("rejected", status, text)


# -- fan-out shards ----------------------------------------------------------------------------

# SQS takes messages and batches of 1 MiB now, 256 KiB on queues configured before; staying
# under the older limit works with every queue.
MAX_SHARD_BYTES = 250 * 1024
MAX_BATCH_BYTES = 256 * 1024
MAX_BATCH_ENTRIES = 10
_ID_OVERHEAD = 3  # the quotes and the comma around a connection id in the JSON


class ShardJob(BaseModel):
    """One fan-out shard: frames for a page of one channel's connections.

    ``messages`` are wire frames, posted in order to every connection; ``attempt`` counts
    the times the undelivered remainder of a shard was queued again.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    channel: str = Field(min_length=1, max_length=256)
    messages: list[str] = Field(min_length=1, max_length=10)
    connections: list[str] = Field(min_length=1, max_length=10_000)
    attempt: int = Field(default=0, ge=0, le=100)

    @field_validator("connections")
    @classmethod
    def _connection_ids(cls, ids: list[str]) -> list[str]:
        bad = next((cid for cid in ids if not CONNECTION_ID_RE.match(cid)), None)
        if bad is not None:
            raise ValueError(f"not a connection id: {bad[:40]!r}")
        return ids

    @field_validator("messages")
    @classmethod
    def _frames(cls, frames: list[str]) -> list[str]:
        if any(len(frame.encode()) > MAX_FRAME_BYTES for frame in frames):
            raise ValueError(f"a frame is larger than {MAX_FRAME_BYTES} bytes")
        return frames


def _bundles(messages: Sequence[str]) -> list[list[str]]:
    """``messages`` in consecutive groups that leave half a shard for connection ids."""
    bundles: list[list[str]] = [[]]
    size = 0
    for frame in messages:
        length = len(json.dumps(frame))
        if bundles[-1] and size + length > MAX_SHARD_BYTES // 2:
            bundles.append([])
            size = 0
        bundles[-1].append(frame)
        size += length
    return bundles


def shard_jobs(
    channel: str, messages: Sequence[str], connection_ids: Iterable[str], shard_size: int
) -> Iterator[ShardJob]:
    """Shards of ``messages`` for ``connection_ids``: ``shard_size`` connections at most,
    and small enough for SQS. ``connection_ids`` is read once, as it comes.

    Frames too large to share one shard (a batch of big events) are split into consecutive
    groups, each sharded on its own: their order per connection is then not kept.
    """
    bundles = _bundles(messages)
    ids: Iterable[str] = list(connection_ids) if len(bundles) > 1 else connection_ids
    for bundle in bundles:
        room = MAX_SHARD_BYTES - len(
            ShardJob(channel=channel, messages=bundle, connections=["x"]).model_dump_json()
        )
        page: list[str] = []
        size = 0
        for connection_id in ids:
            cost = len(connection_id) + _ID_OVERHEAD
            if page and (len(page) >= shard_size or size + cost > room):
                yield ShardJob(channel=channel, messages=bundle, connections=page)
                page, size = [], 0
            page.append(connection_id)
            size += cost
        if page:
            yield ShardJob(channel=channel, messages=bundle, connections=page)


def remainder_jobs(job: ShardJob, outcomes: Iterable[Outcome]) -> list[ShardJob]:
    """The shard again for what it did not deliver, each connection from its first miss.

    Gone connections are dropped. A connection that was tried counts an attempt; one that
    was never started (the deadline came first) does not.
    """
    by_start: dict[tuple[int, int], list[str]] = {}
    for outcome in outcomes:
        if outcome.gone or outcome.delivered >= len(job.messages):
            continue
        attempt = job.attempt + 1 if outcome.attempted else job.attempt
        by_start.setdefault((outcome.delivered, attempt), []).append(outcome.connection_id)
    return [
        ShardJob(
            channel=job.channel, messages=job.messages[start:], connections=ids, attempt=attempt
        )
        for (start, attempt), ids in sorted(by_start.items())
    ]


class ShardQueueError(Exception):
    """SQS did not take every shard."""


class ShardQueue:
    """Sends shard jobs to the fan-out queue in ``SendMessageBatch`` calls (boto3)."""

    def __init__(self, client: Callable[[], SQSClient], queue_url: str) -> None:
        self._client = client
        self.queue_url = queue_url

    def send(self, jobs: Iterable[ShardJob], *, delay_seconds: int = 0) -> tuple[int, int]:
        """Queue every job as it comes; returns (shards, connections) queued.

        Raises :class:`ShardQueueError` when SQS refuses an entry, or keeps failing some
        after two more tries (the call itself is retried by botocore).
        """
        shards = connections = size = 0
        batch: list[str] = []
        for job in jobs:
            body = job.model_dump_json()
            if batch and (len(batch) >= MAX_BATCH_ENTRIES or size + len(body) > MAX_BATCH_BYTES):
                self._send_batch(batch, delay_seconds)
                batch, size = [], 0
            batch.append(body)
            size += len(body)
            shards += 1
            connections += len(job.connections)
        if batch:
            self._send_batch(batch, delay_seconds)
        return shards, connections

    def _send_batch(self, bodies: list[str], delay_seconds: int) -> None:
        pending = {str(i): body for i, body in enumerate(bodies)}
        for _ in range(3):
            out = self._client().send_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": key, "MessageBody": body, "DelaySeconds": delay_seconds}
                    for key, body in pending.items()
                ],
            )
            failed = out.get("Failed", [])
            refused = next((f for f in failed if f.get("SenderFault")), None)
            if refused is not None:
                raise ShardQueueError(f"SQS refused a shard: {refused.get('Message', refused)}")
            if not failed:
                return
            pending = {f["Id"]: pending[f["Id"]] for f in failed}
        raise ShardQueueError(f"SQS did not take {len(pending)} shard(s) after three tries")
