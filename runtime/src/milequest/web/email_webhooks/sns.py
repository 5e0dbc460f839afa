"""Amazon SNS messages over HTTPS: signature verification and subscription confirmation.

Hand-written because no maintained Python library verifies SNS signatures (the AWS SDKs for
Java, JavaScript, PHP and .NET ship one; botocore does not). What AWS documents:

- the string to sign is ``Key\\nValue\\n`` for a fixed list of keys per message type;
- ``SignatureVersion`` 1 signs it with SHA1withRSA, version 2 with SHA256withRSA;
- the certificate comes from ``SigningCertURL``, which must be an HTTPS URL on
  ``sns.<region>.amazonaws.com`` (``.com.cn`` in China) for the topic's region;
- only expected topics are accepted, and an old message is a replay.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from milequest.services.jsonsafe import JsonSafetyError, loads

from .errors import WebhookRejected

MAX_AGE_SECONDS = 3600.0
"""Messages older than this are refused as replays (SNS retries within an hour)."""
MAX_SKEW_SECONDS = 300.0
MAX_CERTIFICATE_BYTES = 64 * 1024
_CERT_PATH = re.compile(r"^/SimpleNotificationService-[0-9a-f]+\.pem$")
_TOPIC = re.compile(r"^arn:aws[a-z-]*:sns:([a-z0-9-]+):\d{12}:[A-Za-z0-9_.-]{1,256}$")
_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
_SIGNED_KEYS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_KEYS["UnsubscribeConfirmation"] = _SIGNED_KEYS["SubscriptionConfirmation"]

TrustedUrl = Callable[[str, str], bool]
"""``(url, region) -> bool``: whether a certificate or confirmation URL is SNS's."""
Fetch = Callable[[str], bytes]


def sns_url(url: str, region: str) -> bool:
    """Whether ``url`` is HTTPS on SNS's own host for ``region`` (the production rule)."""
    parts = urlsplit(url)
    hosts = (f"sns.{region}.amazonaws.com", f"sns.{region}.amazonaws.com.cn")
    return parts.scheme == "https" and parts.hostname in hosts and parts.port in (None, 443)


def fetch_url(url: str, timeout: float = 5.0) -> bytes:
    """GET ``url`` (no redirects, a bounded body); ``OSError`` when it fails."""
    import urllib3

    try:
        response = urllib3.request(
            "GET",
            url,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=False,
            redirect=False,
            preload_content=False,
        )
        try:
            body = response.read(MAX_CERTIFICATE_BYTES + 1)
        finally:
            response.release_conn()
    except urllib3.exceptions.HTTPError as exc:
        raise OSError(f"GET {url} failed: {exc}") from None
    if response.status != 200 or len(body) > MAX_CERTIFICATE_BYTES:
        raise OSError(f"GET {url} answered {response.status} ({len(body)} bytes)")
    return bytes(body)


@dataclass(frozen=True)
class SnsMessage:
    """A verified SNS message."""

    type: str
    message_id: str
    topic_arn: str
    message: str
    timestamp: datetime
    subscribe_url: str | None = None


class SnsVerifier:
    """Verifies SNS messages; keeps the certificates it fetched (by URL, at most 32).

    ``trusted_url`` and ``fetch`` exist for tests, which serve a test certificate locally;
    nothing configures them in production.
    """

    def __init__(
        self,
        *,
        trusted_url: TrustedUrl = sns_url,
        fetch: Fetch = fetch_url,
        clock: Callable[[], float] = time.time,
        max_age: float = MAX_AGE_SECONDS,
    ) -> None:
        self._trusted = trusted_url
        self._fetch = fetch
        self._clock = clock
        self._max_age = max_age
        self._keys: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, body: bytes, topics: Collection[str]) -> SnsMessage:
        """The message in ``body`` if it is genuine, fresh and from one of ``topics``.

        Raises :class:`WebhookRejected` (status 401, or 403 for a topic not allowed).
        """
        try:
            data = loads(body)
        except JsonSafetyError as exc:
            raise WebhookRejected(f"not an SNS message: {exc}") from None
        if not isinstance(data, dict):
            raise WebhookRejected("not an SNS message: not a JSON object")
        kind = data.get("Type")
        if kind not in _TYPES:
            raise WebhookRejected(f"not an SNS message type: {kind!r}")
        fields = {key: data.get(key) for key in _SIGNED_KEYS[kind]}
        optional = {"Subject"} if kind == "Notification" else set()
        for key, value in fields.items():
            if not isinstance(value, str) and not (key in optional and value is None):
                raise WebhookRejected(f"SNS message without a string {key}")
        topic = str(fields["TopicArn"])
        match = _TOPIC.match(topic)
        if match is None:
            raise WebhookRejected(f"not an SNS topic ARN: {topic!r}")
        if topic not in topics:
            raise WebhookRejected(
                f"topic {topic} is not allowed (SES_EVENTS_TOPIC_ARNS)", status=403
            )
        region = match.group(1)
        when = self._fresh(str(fields["Timestamp"]))
        algorithm = self._algorithm(data.get("SignatureVersion"))
        self._check_signature(data, fields, region, algorithm)
        subscribe_url = fields.get("SubscribeURL")
        if subscribe_url is not None and not self._trusted(str(subscribe_url), region):
            raise WebhookRejected("SubscribeURL is not an SNS URL")
        return SnsMessage(
            kind,
            str(fields["MessageId"]),
            topic,
            str(fields["Message"]),
            when,
            str(subscribe_url) if subscribe_url is not None else None,
        )

    def confirm(self, message: SnsMessage) -> None:
        """Confirm a verified ``SubscriptionConfirmation`` (GET its SubscribeURL)."""
        if message.type != "SubscriptionConfirmation" or message.subscribe_url is None:
            raise ValueError("only a subscription confirmation can be confirmed")
        self._fetch(message.subscribe_url)

    # -- checks ------------------------------------------------------------------------------

    def _fresh(self, stamp: str) -> datetime:
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            age = self._clock() - when.timestamp()
        except (ValueError, OverflowError, OSError):
            raise WebhookRejected(f"bad SNS Timestamp {stamp[:40]!r}") from None
        if when.tzinfo is None or age > self._max_age:
            raise WebhookRejected("SNS message too old (a replay?)")
        if age < -MAX_SKEW_SECONDS:
            raise WebhookRejected("SNS message from the future")
        return when

    @staticmethod
    def _algorithm(version: object) -> Any:
        from cryptography.hazmat.primitives import hashes

        if version == "1":
            return hashes.SHA1()
        if version == "2":
            return hashes.SHA256()
        raise WebhookRejected(f"unsupported SNS SignatureVersion {version!r}")

    def _check_signature(
        self, data: Mapping[str, Any], fields: Mapping[str, Any], region: str, algorithm: Any
    ) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric import padding

        text = "".join(f"{k}\n{v}\n" for k, v in fields.items() if v is not None)
        signature = data.get("Signature")
        url = data.get("SigningCertURL")
        if not isinstance(signature, str) or not isinstance(url, str):
            raise WebhookRejected("SNS message without Signature or SigningCertURL")
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise WebhookRejected("SNS Signature is not base64") from None
        key = self._public_key(url, region)
        try:
            key.verify(raw, text.encode("utf-8"), padding.PKCS1v15(), algorithm)
        except (InvalidSignature, ValueError, TypeError):
            raise WebhookRejected("SNS signature does not match") from None

    def _public_key(self, url: str, region: str) -> Any:
        if not self._trusted(url, region) or not _CERT_PATH.match(urlsplit(url).path):
            raise WebhookRejected(f"SigningCertURL is not an SNS certificate URL: {url[:200]}")
        with self._lock:
            key = self._keys.get(url)
            if key is not None:
                self._keys.move_to_end(url)
                return key
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import rsa

        try:
            certificate = x509.load_pem_x509_certificate(self._fetch(url))
        except (OSError, ValueError) as exc:
            raise WebhookRejected(f"could not load the SNS certificate: {exc}") from None
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookRejected("the SNS certificate does not hold an RSA key")
        with self._lock:
            self._keys[url] = key
            while len(self._keys) > 32:
                self._keys.popitem(last=False)
        return key
