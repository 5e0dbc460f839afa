"""Loading and rendering the packaged email templates (Handlebars, through pybars3).

The same files are deployed as SES templates, so a local render and SES agree. Variables
are checked honestly: pybars reports every ``{{name}}`` it cannot resolve to the
``helperMissing`` helper, which collects them. Dotted paths (``{{user.name}}``) are not
checked; the packaged templates use plain names.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from milequest.services.jsonsafe import shorten

from .errors import EmailError, EmailErrorCode

TEMPLATE_PACKAGE = "milequest.templates"
PARTS = ("subject", "html", "text")


@dataclass(frozen=True)
class TemplateSource:
    """The raw Handlebars sources of one template, as shipped in the package."""

    name: str
    subject: str
    html: str
    text: str


def template_names() -> list[str]:
    """Names of the packaged templates (folders holding a ``subject.hbs``)."""
    return list(_names())


# The package's files do not change while the process runs: list and read them once.
@functools.cache
def _names() -> tuple[str, ...]:
    root = resources.files(TEMPLATE_PACKAGE)
    return tuple(
        sorted(
            entry.name
            for entry in root.iterdir()
            if entry.is_dir() and entry.joinpath("subject.hbs").is_file()
        )
    )


@functools.cache
def load_template_source(name: str) -> TemplateSource | None:
    """The sources of template ``name``, or None when there is no such template."""
    if name not in _names():
        return None
    folder = resources.files(TEMPLATE_PACKAGE).joinpath(name)
    parts = {part: _read(folder.joinpath(f"{part}.hbs")) for part in PARTS}
    return TemplateSource(
        name=name, subject=parts["subject"].strip(), html=parts["html"], text=parts["text"]
    )


def load_template_sources() -> dict[str, TemplateSource]:
    """Every packaged template by name (what the CDK app deploys as SES templates)."""
    return {name: src for name in template_names() if (src := load_template_source(name))}


def _read(path: resources.abc.Traversable) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


# -- rendering -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedEmail:
    """A template rendered with its data: what is actually sent."""

    subject: str
    html: str
    text: str


_compile_lock = threading.Lock()


@functools.lru_cache(maxsize=256)
def _compile(source: str) -> Callable[..., Any]:
    from pybars import Compiler, PybarsError  # type: ignore[import-untyped]

    # pybars' Compiler keeps state while compiling; one compile at a time.
    with _compile_lock:
        try:
            return Compiler().compile(source)  # type: ignore[no-any-return]
        except PybarsError as exc:
            raise _BadSource(str(exc)) from None


class _BadSource(Exception):
    pass


def render_template(name: str, data: Mapping[str, Any]) -> RenderedEmail:
    """Render packaged template ``name`` with ``data`` (the Handlebars subset SES supports).

    Raises ``EmailError`` ``TEMPLATE_NOT_FOUND`` for an unknown name and
    ``TEMPLATE_RENDER_FAILED`` naming every variable the template needs but ``data`` lacks.
    """
    source = load_template_source(name) if _is_plain_name(name) else None
    if source is None:
        raise EmailError(
            EmailErrorCode.TEMPLATE_NOT_FOUND,
            f"no template {shorten(name)}; "
            f"packaged templates: {', '.join(template_names()) or 'none'}",
        )
    return render_source(source, data)


def render_source(source: TemplateSource, data: Mapping[str, Any]) -> RenderedEmail:
    """Render the three parts of ``source``; see :func:`render_template`."""
    missing: dict[str, None] = {}
    rendered: dict[str, str] = {}
    for part in PARTS:
        text = getattr(source, part)
        try:
            template = _compile(text)
        except _BadSource as exc:
            raise EmailError(
                EmailErrorCode.TEMPLATE_RENDER_FAILED, f"template {source.name} {part}: {exc}"
            ) from None
        rendered[part] = _render(template, dict(data), missing, f"{source.name} {part}")
    if missing:
        raise EmailError(
            EmailErrorCode.TEMPLATE_RENDER_FAILED,
            f"template {source.name!r} needs variable(s) missing from the data: "
            + ", ".join(missing),
        )
    return RenderedEmail(
        subject=rendered["subject"].strip(), html=rendered["html"], text=rendered["text"]
    )


def _render(
    template: Callable[..., Any], data: dict[str, Any], missing: dict[str, None], where: str
) -> str:
    def helper_missing(scope: Any, name: str, *args: Any) -> None:
        # pybars calls this for a ``{{name}}`` that resolves to nothing; a key present with
        # a null value is not missing (it renders empty, as in SES).
        context = getattr(scope, "context", scope)
        if not (isinstance(context, Mapping) and name in context):
            missing[name] = None
        if args:
            raise EmailError(
                EmailErrorCode.TEMPLATE_RENDER_FAILED, f"{where}: unknown helper {name!r}"
            )

    try:
        return str(template(data, helpers={"helperMissing": helper_missing}))
    except EmailError:
        raise
    except Exception as exc:  # pybars raises plain exceptions from generated code
        raise EmailError(
            EmailErrorCode.TEMPLATE_RENDER_FAILED, f"{where}: {type(exc).__name__}: {exc}"
        ) from None


def _is_plain_name(name: object) -> bool:
    return isinstance(name, str) and bool(name) and name.replace("-", "").replace("_", "").isalnum()
