"""Every email provider against its local component, sharing one suppression store.

The email suite's fixtures are imported here so that the web tests can use them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from milequest.services.email import create_email_service
from milequest.services.email.suppression import MemorySuppressionStore, SuppressionStore
from milequest.services.email.templates import load_template_sources

from tests.runtime.email.api_server import ApiServer
from tests.runtime.email.conftest import (  # noqa: F401 - fixtures used by the importers
    SmtpServer,
    _clean_email_env,
    _resend_endpoint,
    _sendgrid_endpoint,
    _smtp_plain,
    fast_retries,
    resend_api,
    sendgrid_api,
    ses_endpoint,
    ses_server,
    smtp_plain,
)
from tests.runtime.email.harness import (
    Harness,
    MockHarness,
    ResendHarness,
    SendGridHarness,
    SesHarness,
    SmtpHarness,
)
from tests.runtime.email.resend_server import ResendState
from tests.runtime.email.sendgrid_server import SendGridState
from tests.runtime.email.ses_server import SesServer

PROVIDERS = ["mock", "ses", "smtp", "resend", "sendgrid"]
UNSUBSCRIBE_URL = "https://api.milequest.example/email/unsubscribe"
UNSUBSCRIBE = {
    "email_unsubscribe_url": UNSUBSCRIBE_URL,
    "email_unsubscribe_secret": "one-click-test-secret",
}

Build = Callable[..., Harness]


@pytest.fixture(name="build")
def build_fixture(request: pytest.FixtureRequest) -> Build:
    """``build(provider, store, **settings)``: that provider's harness on ``store``."""
    ses: SesServer = request.getfixturevalue("ses_server")
    smtp: SmtpServer = request.getfixturevalue("smtp_plain")
    resend: ApiServer[ResendState] = request.getfixturevalue("resend_api")
    sendgrid: ApiServer[SendGridState] = request.getfixturevalue("sendgrid_api")
    for name, source in load_template_sources().items():
        content = {"Subject": source.subject, "Html": source.html, "Text": source.text}
        ses.state.templates[name] = content

    def make(name: str, store: SuppressionStore | None = None, **settings: Any) -> Harness:
        store = store if store is not None else MemorySuppressionStore()
        if name == "smtp":
            settings = {**smtp.settings(), **settings}
        service = create_email_service(name, suppression=store, **settings)
        if name == "mock":
            return MockHarness(service)
        if name == "ses":
            return SesHarness(service, ses)
        if name == "resend":
            return ResendHarness(service, resend)
        if name == "sendgrid":
            return SendGridHarness(service, sendgrid)
        return SmtpHarness(service, smtp)

    return make
