"""What a webhook verifier raises when a request is not what it claims to be."""

from __future__ import annotations


class WebhookRejected(Exception):
    """A webhook request that failed verification: answered ``status`` (401 by default),
    and nothing in it is acted on."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class WebhookNotConfigured(Exception):
    """The webhook's key is not set (or unusable): answered 503, so the sender retries later."""
