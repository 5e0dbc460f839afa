"""Packaged templates and the local Handlebars renderer (pybars3)."""

from __future__ import annotations

from typing import Any

import pytest
from milequest.services.email import EmailError, EmailErrorCode, create_email_service
from milequest.services.email.templates import (
    TemplateSource,
    load_template_source,
    load_template_sources,
    render_source,
    render_template,
    template_names,
)

SAMPLE_DATA: dict[str, dict[str, Any]] = {
    "welcome": {"name": "Ann", "team": "Hill Walkers"},
    "team-invite": {"inviter": "Bo", "team": "Hill Walkers", "invite_url": "https://x.example/i/1"},
    "weekly-summary": {
        "name": "Ann",
        "total_miles": 12.5,
        "activities": [{"day": "Mon", "miles": 3}, {"day": "Wed", "miles": 9.5}],
    },
}


def test_packaged_templates() -> None:
    assert template_names() == sorted(SAMPLE_DATA)
    assert set(load_template_sources()) == set(SAMPLE_DATA)
    welcome = load_template_source("welcome")
    assert welcome is not None
    assert "{{{name}}}" in welcome.subject
    assert load_template_source("nope") is None


@pytest.mark.parametrize("name", sorted(SAMPLE_DATA))
def test_every_template_renders_completely(name: str) -> None:
    out = render_template(name, SAMPLE_DATA[name])
    for part in (out.subject, out.html, out.text):
        assert part.strip()
        assert "{{" not in part
        assert "\n" not in out.subject


def test_each_and_if() -> None:
    out = render_template("weekly-summary", SAMPLE_DATA["weekly-summary"])
    assert "<li>Mon: 3 miles</li>" in out.html
    assert "- Wed: 9.5 miles" in out.text
    empty = render_template("weekly-summary", {"name": "Ann", "total_miles": 0, "activities": []})
    assert "No walks logged this week" in empty.html
    no_team = render_template("welcome", {"name": "Ann"})
    assert "You have joined" not in no_team.text


def test_html_is_escaped_in_html_only() -> None:
    out = render_template("welcome", {"name": "Tom & <Jerry>"})
    assert "Tom &amp; &lt;Jerry&gt;" in out.html
    assert out.subject == "Welcome to Mile Quest, Tom & <Jerry>!"
    assert "Tom & <Jerry>" in out.text


def test_missing_variables_are_named() -> None:
    with pytest.raises(EmailError) as info:
        render_template("team-invite", {"team": "X"})
    assert info.value.code is EmailErrorCode.TEMPLATE_RENDER_FAILED
    assert info.value.message.endswith("inviter, invite_url")


def test_missing_variable_inside_each_is_named() -> None:
    data = {"name": "Ann", "total_miles": 1, "activities": [{"day": "Mon"}]}
    with pytest.raises(EmailError) as info:
        render_template("weekly-summary", data)
    assert "miles" in info.value.message


def test_null_value_is_present_not_missing() -> None:
    out = render_template("welcome", {"name": None})
    assert out.subject == "Welcome to Mile Quest, !"


@pytest.mark.parametrize("name", ["unknown", "../welcome", "", "welcome/../welcome"])
def test_unknown_names(name: str) -> None:
    with pytest.raises(EmailError) as info:
        render_template(name, {})
    assert info.value.code is EmailErrorCode.TEMPLATE_NOT_FOUND


def test_broken_source_is_a_render_failure() -> None:
    broken = TemplateSource("broken", "Hi {{#if x}}a{{/each}}", "<p>x</p>", "x")
    with pytest.raises(EmailError) as info:
        render_source(broken, {"x": 1})
    assert info.value.code is EmailErrorCode.TEMPLATE_RENDER_FAILED


@pytest.mark.parametrize(
    ("subject", "why"), [("{{shout name}}", "shout"), ("{{> footer}}", "footer")]
)
def test_unknown_helpers_and_partials_are_render_failures(subject: str, why: str) -> None:
    with pytest.raises(EmailError) as info:
        render_source(TemplateSource("helper", subject, "x", "x"), {"name": "a"})
    assert info.value.code is EmailErrorCode.TEMPLATE_RENDER_FAILED
    assert why in info.value.message


@pytest.mark.parametrize("name", sorted(SAMPLE_DATA))
def test_mock_renders_exactly_like_the_renderer(name: str) -> None:
    # weekly-summary is bulk mail: it needs its one-click unsubscribe link configured.
    service = create_email_service(
        "mock",
        email_unsubscribe_url="https://api.milequest.example/email/unsubscribe",
        email_unsubscribe_secret="s3cret",
    )
    service.send_templated_email(name, "a@example.com", SAMPLE_DATA[name])
    sent = service.last  # type: ignore[attr-defined]
    expected = render_template(name, SAMPLE_DATA[name])
    assert (sent.subject, sent.html, sent.text) == (expected.subject, expected.html, expected.text)
    assert (sent.template, sent.template_data) == (name, SAMPLE_DATA[name])
