"""MkDocs hooks for the API reference pages.

Coverage: mkdocstrings renders what griffe finds by reading the sources, and a package whose
``__all__`` it cannot read statically (a computed list) renders as an empty page without a
warning. So each documented package is imported, and every public name, and every public
method or property of a public class, without an entry is a warning (``--strict`` fails).

Roles: the docstrings name code with Sphinx roles (``:func:`name```), which Markdown shows
literally; they are rendered as plain code (``~a.b.c`` as ``c``, as Sphinx does).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.hooks.api_coverage")
_DIRECTIVE = re.compile(r"^::: ([\w.]+)", re.MULTILINE)
_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|exc|obj):<code>(~?)([^<]*)</code>")
_documented: dict[str, list[str]] = {}


def public_entries(module_name: str) -> list[str]:
    """The anchors a complete page for ``module_name`` has: its ``__all__`` and their members."""
    module = importlib.import_module(module_name)
    entries = []
    for name in module.__all__:
        entries.append(f"{module_name}.{name}")
        value = getattr(module, name)
        if inspect.isclass(value):
            for attr, member in vars(value).items():
                if not attr.startswith("_") and _is_api_member(member):
                    entries.append(f"{module_name}.{name}.{attr}")
    return entries


def _is_api_member(member: Any) -> bool:
    return inspect.isfunction(member) or isinstance(member, property | classmethod | staticmethod)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    _documented[page.file.src_uri] = _DIRECTIVE.findall(markdown)
    return markdown


def _plain_code(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"<code>{target.rpartition('.')[2] if short else target}</code>"


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    modules = _documented.get(page.file.src_uri, [])
    if modules:
        html = _ROLE.sub(_plain_code, html)
    for module_name in modules:
        missing = [a for a in public_entries(module_name) if f'id="{a}"' not in html]
        if missing:
            log.warning(
                "%s: the API reference lacks %d public name(s) of %s: %s",
                page.file.src_uri,
                len(missing),
                module_name,
                ", ".join(missing),
            )
    return html
