"""Lambda SnapStart runtime hooks: warm up before the snapshot, refresh after a restore.

Before the snapshot, the services the function uses are created (their modules imported,
botocore's service models loaded), so a restored environment starts with that work done.
After a restore, what must not be shared between environments or may have gone stale is
dropped: randomness is reseeded, cached secrets and the services (their AWS clients with
their credentials and pooled connections, the SES quota cache and listing snapshot) are
forgotten and made again on first use. Outside Lambda (no ``snapshot-restore-py``) the hooks
are plain functions that nothing calls.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable

logger = logging.getLogger("milequest.handlers")

_after_restore: list[Callable[[], None]] = []


def after_restore(callback: Callable[[], None]) -> Callable[[], None]:
    """Also run ``callback`` after a restore (a handler module's own cached clients)."""
    _after_restore.append(callback)
    return callback


def warm(services: tuple[str, ...] = ("websocket", "email")) -> list[str]:
    """Create the configured services now; returns the names that could be made.

    A service that is not configured for this function is skipped (the WebSocket
    functions have no email settings, say): warming must never fail the snapshot.
    """
    from milequest.services import get_service

    made = []
    for name in services:
        try:
            get_service(name)
        except Exception as exc:  # a service this function does not use
            logger.info("not warming %s: %s", name, exc)
        else:
            made.append(name)
    return made


def refresh() -> None:
    """Drop everything bound to the environment the snapshot was taken in."""
    from milequest.services import reset_services
    from milequest.services.config import clear_secret_cache

    random.seed(os.urandom(32))
    clear_secret_cache()
    reset_services()
    for callback in _after_restore:
        callback()


try:
    from snapshot_restore_py import (  # type: ignore[import-untyped]
        register_after_restore,
        register_before_snapshot,
    )
except ImportError:  # not in Lambda's bundle: nothing to register
    pass
else:
    register_before_snapshot(warm)
    register_after_restore(refresh)
