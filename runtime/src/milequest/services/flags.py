"""Migration flags: Powertools Feature Flags over an AppConfig profile, or a local file.

Rules may send a share of users or recipients to another provider with Powertools'
``MODULO_RANGE`` condition on the context key ``bucket``: a stable number derived from the
user id or address (:func:`bucket`), so each subject always lands on the same side and
``{"BASE": 100, "START": 0, "END": 9}`` selects 10 % of them. A provider flag whose value
is ``""`` means "the configured provider" (``EMAIL_PROVIDER``, ``WEBSOCKET_PROVIDER``), which
is what the packaged document says for every flag. Flags are cached: at most one
AppConfig call per ``FEATURE_FLAGS_MAX_AGE`` seconds; a file store rereads its file when it
changes. No background thread is used (Lambda freezes them between invocations).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from .config import ServiceSettings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.feature_flags import FeatureFlags

logger = logging.getLogger("milequest.services")

BUCKET_KEY = "bucket"
DEFAULT_DOCUMENT = "flags.json"
"""The initial flags document, packaged with the runtime (the CDK app deploys it)."""


class FlagSettings(ServiceSettings):
    """Where the flags come from."""

    feature_flags_file: str | None = Field(
        default=None, description="A local flags document (reloaded when it changes)"
    )
    feature_flags_application: str | None = Field(
        default=None, description="AppConfig application of the flags"
    )
    feature_flags_environment: str | None = Field(
        default=None, description="AppConfig environment of the flags"
    )
    feature_flags_profile: str | None = Field(
        default=None, description="AppConfig configuration profile of the flags"
    )
    feature_flags_max_age: int = Field(
        default=60, ge=1, le=3600, description="Seconds flags are cached between AppConfig calls"
    )


def bucket(subject: str) -> int:
    """A stable number for a user id or address (the same on every host and run)."""
    digest = hashlib.sha256(subject.strip().lower().encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big")


def default_document() -> dict[str, Any]:
    """The packaged initial flags document."""
    text = resources.files("milequest").joinpath(DEFAULT_DOCUMENT).read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def _file_store_class() -> type[Any]:
    from aws_lambda_powertools.utilities.feature_flags.base import StoreProvider
    from aws_lambda_powertools.utilities.feature_flags.exceptions import (
        ConfigurationStoreError,
    )

    class FileStore(StoreProvider):
        """A flags document in a local file, read again whenever the file changes."""

        def __init__(self, path: str) -> None:
            self.path = Path(path)
            self._lock = threading.Lock()
            self._stamp: tuple[float, int] | None = None
            self._document: dict[str, Any] = {}

        @property
        def get_raw_configuration(self) -> dict[str, Any]:
            return self.get_configuration()

        def get_configuration(self) -> dict[str, Any]:
            try:
                stat = self.path.stat()
                stamp = (stat.st_mtime, stat.st_size)
                with self._lock:
                    if stamp != self._stamp:
                        self._document = json.loads(self.path.read_text("utf-8"))
                        self._stamp = stamp
                    return self._document
            except (OSError, ValueError) as exc:
                raise ConfigurationStoreError(f"flags file {self.path}: {exc}") from exc

    return FileStore


_VARIABLES = (
    *(name.upper() for name in FlagSettings.model_fields),
    "AWS_ENDPOINT_URL_APPCONFIGDATA",
    "AWS_ENDPOINT_URL",
)
_flags: tuple[tuple[Any, ...], FeatureFlags] | None = None
_lock = threading.Lock()


def feature_flags() -> FeatureFlags | None:
    """The process's flags (made again when their settings change); None without a store."""
    global _flags
    # The raw variables decide whether anything changed: reading the settings model on
    # every evaluation would cost more than the evaluation.
    key = tuple(os.environ.get(name) for name in _VARIABLES)
    with _lock:
        if _flags is not None and _flags[0] == key:
            return _flags[1]
        store = _store(FlagSettings())
        if store is None:
            _flags = None
            return None
        from aws_lambda_powertools.utilities.feature_flags import FeatureFlags

        _flags = (key, FeatureFlags(store=store))
        return _flags[1]


def _store(settings: FlagSettings) -> Any:
    if settings.feature_flags_file:
        return _file_store_class()(settings.feature_flags_file)
    if (
        settings.feature_flags_application
        and settings.feature_flags_environment
        and settings.feature_flags_profile
    ):
        from aws_lambda_powertools.utilities.feature_flags import AppConfigStore

        return AppConfigStore(
            environment=settings.feature_flags_environment,
            application=settings.feature_flags_application,
            name=settings.feature_flags_profile,
            max_age=settings.feature_flags_max_age,
        )
    return None


def evaluate(name: str, subject: str | None, default: Any) -> Any:
    """The flag ``name`` for ``subject`` (a user id or address), or ``default``.

    Never raises: without a store, or when the store fails, the default holds.
    """
    flags = feature_flags()
    if flags is None:
        return default
    context: dict[str, Any] = {}
    if subject is not None:
        context = {BUCKET_KEY: bucket(subject), "subject": subject}
    try:
        value = flags.evaluate(name=name, context=context, default=default)
    except Exception as exc:  # a broken document must not stop mail or events
        logger.warning("flag %s could not be evaluated: %s", name, exc)
        return default
    return default if value in (None, "") else value


def reset_flags() -> None:
    """Forget the cached flags (tests; SnapStart restores)."""
    global _flags
    with _lock:
        _flags = None
