"""Configuration helpers shared by the services: settings loading and secrets."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ServiceError

S = TypeVar("S", bound=BaseSettings)


class ServiceSettings(BaseSettings):
    """Base of each service's settings: read from the environment when instantiated."""

    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", case_sensitive=False, frozen=True
    )


def load_settings(
    settings_type: type[S],
    error_type: type[ServiceError],
    code: Any,
    overrides: Mapping[str, Any] | None = None,
) -> S:
    """Read ``settings_type`` from the environment now, with ``overrides`` on top.

    An invalid value raises ``error_type(code)`` naming the environment variable and what
    it accepts, instead of a pydantic ``ValidationError``.
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - set(settings_type.model_fields))
    if unknown:
        raise error_type(
            code,
            f"unknown setting(s) {', '.join(unknown)}; accepted: "
            + ", ".join(sorted(settings_type.model_fields)),
        )
    try:
        return settings_type(**given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            env_name = _env_name(settings_type, field)
            problems.append(f"{env_name}: {err['msg']} (got {err.get('input')!r})")
        raise error_type(code, "invalid configuration: " + "; ".join(problems), cause=exc) from None


def _env_name(settings_type: type[BaseSettings], field: str) -> str:
    info = settings_type.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, str):
        return alias.upper()
    if alias is not None and hasattr(alias, "choices"):
        return " or ".join(str(c).upper() for c in alias.choices)
    return field.upper()


_secret_cache: dict[str, str] = {}
_secret_lock = threading.Lock()


def get_secret(arn: str) -> str:
    """The string value of a Secrets Manager secret, fetched once per process and cached.

    Honours ``AWS_ENDPOINT_URL_SECRETSMANAGER`` (and ``AWS_ENDPOINT_URL``), so the local
    stack's embedded Secrets Manager works unchanged.
    """
    with _secret_lock:
        if arn in _secret_cache:
            return _secret_cache[arn]
    from aws_lambda_powertools.utilities import parameters

    # This module's dict is the one cache (clear_secret_cache empties it); Powertools' own
    # cache is bypassed so that clearing ours really fetches again.
    value = parameters.get_secret(arn, force_fetch=True)
    text = value.decode() if isinstance(value, bytes) else str(value)
    with _secret_lock:
        _secret_cache[arn] = text
    return text


def get_secret_json(arn: str) -> dict[str, Any]:
    """A JSON object secret (for example ``{"app_id": ..., "key": ..., "secret": ...}``)."""
    data = json.loads(get_secret(arn))
    if not isinstance(data, dict):
        raise ValueError(f"secret {arn} is not a JSON object")
    return data


def clear_secret_cache() -> None:
    """Forget cached secrets (tests, rotation)."""
    with _secret_lock:
        _secret_cache.clear()
