"""Suite-wide hermetic settings: no real AWS account, no leaking configuration."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# Property-based tests: fixed seeds by default so CI is deterministic. For a wider, random
# search: HYPOTHESIS_PROFILE=explore .venv/bin/pytest -k property
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "explore",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Every AWS client in the suite talks to moto or a local endpoint, never to AWS.
_HERMETIC_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
for _name in list(os.environ):
    if _name.startswith(
        ("AWS_ENDPOINT_URL", "AWS_PROFILE", "EMAIL_", "WEBSOCKET_", "PUSHER_", "REALTIME_", "WEB_")
    ):
        del os.environ[_name]
os.environ.update(_HERMETIC_ENV)
os.environ["METRICS_SINK"] = "none"


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    """Each test starts with an empty service registry and no cached secrets."""
    from milequest.services import reset_services
    from milequest.services.config import clear_secret_cache
    from milequest.services.metrics import set_default_sink

    reset_services()
    clear_secret_cache()
    set_default_sink(None)
    yield
    reset_services()
    clear_secret_cache()
    set_default_sink(None)


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
