"""Loading (and rendering) the packaged email templates."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

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
    root = resources.files(TEMPLATE_PACKAGE)
    return sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and entry.joinpath("subject.hbs").is_file()
    )


def load_template_source(name: str) -> TemplateSource | None:
    """The sources of template ``name``, or None when there is no such template."""
    if name not in template_names():
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
