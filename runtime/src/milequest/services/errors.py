"""The error type every service raises: a code, a message, the provider, and what to do."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import ClassVar


class ServiceError(Exception):
    """Base of every error raised by a Mile Quest service.

    ``code`` is a member of the service's error-code enum; ``retryable`` tells a caller
    whether the same call may succeed later; ``cause`` is the provider exception, if any.
    """

    hints: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        code: StrEnum,
        message: str,
        *,
        provider: str | None = None,
        retryable: bool = False,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.provider = provider
        self.retryable = retryable
        self.cause = cause

    @property
    def hint(self) -> str:
        """What a caller should do about this error."""
        return self.hints.get(self.code.value, "See the error message and the provider's logs.")

    def __str__(self) -> str:
        where = f" (provider: {self.provider})" if self.provider else ""
        retry = " Retrying may succeed." if self.retryable else ""
        return f"{self.code.value}: {self.message}{where}. {self.hint}{retry}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.value!r}, message={self.message!r}, "
            f"provider={self.provider!r}, retryable={self.retryable!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Keeps errors picklable (thread/process pools) despite keyword-only arguments.
        return (_rebuild, (type(self), self.code, self.message, self.provider, self.retryable))


def _rebuild(
    cls: type[ServiceError], code: StrEnum, message: str, provider: str | None, retryable: bool
) -> ServiceError:
    return cls(code, message, provider=provider, retryable=retryable)


class CommonErrorCode(StrEnum):
    """Codes every service's error enum also defines (by the same values)."""

    CONFIGURATION = "CONFIGURATION"
    RATE_LIMITED = "RATE_LIMITED"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    PROVIDER_ERROR = "PROVIDER_ERROR"


COMMON_HINTS: Mapping[str, str] = {
    "CONFIGURATION": "Fix the named setting (environment variable or factory argument).",
    "RATE_LIMITED": "Slow down and retry later with backoff.",
    "PROVIDER_UNAVAILABLE": "The provider could not be reached; retry with backoff.",
    "PROVIDER_ERROR": "The provider rejected the call; see the message and the cause.",
}
