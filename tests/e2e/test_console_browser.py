"""The dev console in headless Chromium: an event through its pusher-js client, an email."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest
from milequest.local import LocalStack

from .conftest import stack_config

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """As ``make dev`` runs it: mail goes through the email queue."""
    with LocalStack(stack_config(email_delivery="queue")) as running:
        yield running


@pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} is not installed (make setup installs Debian's chromium)",
)
def test_console_shows_a_triggered_event_and_a_sent_email(stack: LocalStack) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            page.goto(stack.urls["console"])

            # The page is a pusher-js client: connected, and subscribed to "console".
            expect(page.locator("#ws-status")).to_have_text("(connected)")
            expect(page.locator("#socket-id")).to_have_text(re.compile(r"^\d+\.\d+$"))
            channels_cell = page.locator("#connections tr.connection td").nth(2)
            expect(channels_cell).to_have_text("console")

            trigger = page.locator("#trigger-form")
            trigger.locator("input[name=event]").fill("browser-check")
            trigger.locator("input[name=data]").fill('{"steps": 1234}')
            # Enter submits the form wherever it is: the page re-renders its lists every two
            # seconds, so a click at the button's position can land on whatever moved there.
            trigger.locator("input[name=data]").press("Enter")
            arrived = page.locator("#events li", has_text="browser-check")
            expect(arrived).to_contain_text('{"steps":1234}')

            form = page.locator("#email-form")
            form.locator("input[name=to]").fill("browser@runners.example")
            form.locator("input[name=subject]").fill("Sent from Chromium")
            form.locator("input[name=subject]").press("Enter")
            expect(page.locator("#result")).to_contain_text("browser@runners.example queued")
            listed = page.locator("#emails li", has_text="Sent from Chromium")
            expect(listed).to_contain_text("browser@runners.example")
            expect(page.locator("#email-queue-counts")).to_contain_text("sent 1")
            if os.environ.get("CONSOLE_SCREENSHOT"):
                page.screenshot(path=os.environ["CONSOLE_SCREENSHOT"], full_page=True)
        finally:
            browser.close()

    assert any(m.subject == "Sent from Chromium" for m in stack.smtp.messages)


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"{CHROMIUM} is not installed")
def test_console_runs_no_markup_from_an_email_or_an_event(stack: LocalStack) -> None:
    from milequest.services.email import create_email_service
    from playwright.sync_api import expect, sync_playwright

    markup = '<img src="data:," onerror="top.__xss = 1"><script>top.__xss = 1</script>'
    create_email_service().send_email(
        {"to": "xss@runners.example", "subject": markup, "text": "t", "html": markup}
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            page.goto(stack.urls["console"])
            expect(page.locator("#connections tr.connection td").nth(2)).to_have_text("console")
            trigger = page.locator("#trigger-form")
            trigger.locator("input[name=data]").fill(markup)
            trigger.locator("input[name=data]").press("Enter")
            expect(page.locator("#events")).to_contain_text("onerror")
            page.locator("#emails a", has_text="onerror").first.dispatch_event("click")
            expect(page.locator("#email-detail h2")).to_have_text(markup)
            frame = page.locator("#email-detail iframe")
            expect(frame).to_have_attribute("sandbox", "")
            page.wait_for_load_state("load")
            assert page.evaluate("window.__xss") is None
        finally:
            browser.close()
