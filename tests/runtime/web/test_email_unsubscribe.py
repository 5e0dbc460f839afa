"""One-click unsubscribe (RFC 8058) on every provider, through ``POST /email/unsubscribe``."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from milequest.services import register_service
from milequest.services.email import EmailError, EmailErrorCode, create_email_service
from milequest.services.email.unsubscribe import sign_token, unsubscribe_headers
from milequest.web.email_routes import email_routes
from starlette.applications import Starlette

from .asgi import AsgiClient
from .email_providers import (  # noqa: F401 - fixtures
    PROVIDERS,
    UNSUBSCRIBE,
    UNSUBSCRIBE_URL,
    Build,
    _clean_email_env,
    _resend_endpoint,
    _sendgrid_endpoint,
    _smtp_plain,
    build_fixture,
    fast_retries,
    resend_api,
    sendgrid_api,
    ses_endpoint,
    ses_server,
    smtp_plain,
)

WEEKLY = {"name": "Walker", "total_miles": 12, "activities": [{"day": "Mon", "miles": 12}]}
ONE_CLICK = {"content-type": "application/x-www-form-urlencoded"}
SECRET = UNSUBSCRIBE["email_unsubscribe_secret"].encode()


@pytest.fixture
def client() -> AsgiClient:
    return AsgiClient(Starlette(routes=email_routes()))


def _link(headers: dict[str, str]) -> str:
    """The path and query of the HTTPS link in a List-Unsubscribe header."""
    found = re.search(r"<(https://[^>]+)>", headers["List-Unsubscribe"])
    assert found is not None, headers
    url = urlsplit(found.group(1))
    assert f"{url.scheme}://{url.netloc}{url.path}" == UNSUBSCRIBE_URL
    return f"{url.path}?{url.query}"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_one_click_stops_bulk_of_that_category_only(
    build: Build, client: AsgiClient, provider: str
) -> None:
    harness = build(provider, **UNSUBSCRIBE)
    register_service("email", harness.service)
    service = harness.service
    service.send_templated_email("weekly-summary", "walker@example.com", WEEKLY)
    headers = harness.last().headers
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    response = client.post(_link(headers), content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
    assert response.status_code == 200, response.text
    assert response.json() == {"unsubscribed": True, "category": "weekly-summary"}

    sent = harness.network_calls()
    with pytest.raises(EmailError) as info:
        service.send_templated_email("weekly-summary", "walker@example.com", WEEKLY)
    assert info.value.code is EmailErrorCode.SUPPRESSED
    assert harness.network_calls() == sent
    bulk = service.send_bulk_emails(
        [{"to": "walker@example.com", "template": "weekly-summary", "template_data": WEEKLY}] * 2
        + [{"to": "other@example.com", "template": "weekly-summary", "template_data": WEEKLY}]
    )
    assert [r.error.code if r.error else None for r in bulk.results] == [
        EmailErrorCode.SUPPRESSED,
        EmailErrorCode.SUPPRESSED,
        None,
    ]
    assert bulk.results[0].suppressed == ("walker@example.com",)
    # Transactional mail, and bulk mail of another category, still go.
    assert service.send_templated_email("welcome", "walker@example.com", {"name": "W"}).accepted
    news = {"to": "walker@example.com", "subject": "News", "text": "x", "category": "news"}
    assert service.send_email(news).accepted


@pytest.mark.parametrize("provider", PROVIDERS)
def test_no_unsubscribe_headers_reach_the_wire_for_transactional_mail(
    build: Build, provider: str
) -> None:
    harness = build(provider, **UNSUBSCRIBE)
    harness.service.send_templated_email("welcome", "walker@example.com", {"name": "W"})
    assert "List-Unsubscribe" not in harness.last().headers


def _address_part(address: str) -> str:
    return sign_token(SECRET, address, "c").split(".")[1]


def _forged(token: str) -> list[str]:
    version, address, category, signature = token.split(".")
    other = sign_token(b"another-secret", "walker@example.com", "weekly-summary")
    return [
        ".".join((version, address, "news", signature)),  # another category
        ".".join((version, _address_part("victim@example.com"), category, signature)),
        ".".join((version, address, category, signature[:-2] + "AA")),  # altered signature
        other,  # signed with another key
        "2." + token[2:],  # unknown version
        token + ".x",
        "",
    ]


def test_a_forged_or_altered_link_is_refused(client: AsgiClient) -> None:
    service = create_email_service("mock", **UNSUBSCRIBE)
    register_service("email", service)
    token = sign_token(SECRET, "walker@example.com", "weekly-summary")
    for bad in _forged(token):
        response = client.post(f"/email/unsubscribe?token={bad}", headers=ONE_CLICK)
        # A link without a token is malformed (400); one whose token fails is forbidden.
        assert response.status_code == (403 if bad else 400), bad
        assert response.json()["code"] == "INVALID_TOKEN"
    assert client.post("/email/unsubscribe", headers=ONE_CLICK).status_code == 400
    assert service.get_suppressed_emails() == []


def test_get_asks_and_records_nothing(client: AsgiClient) -> None:
    service = create_email_service("mock", **UNSUBSCRIBE)
    register_service("email", service)
    token = sign_token(SECRET, "tom&jerry@example.com", "weekly-summary")
    page = client.get(f"/email/unsubscribe?token={token}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "tom&amp;jerry@example.com" in page.text
    assert f'action="?token={token}"' in page.text
    assert service.get_suppressed_emails() == []


def test_without_a_secret_the_endpoint_is_unavailable(client: AsgiClient) -> None:
    register_service("email", create_email_service("mock"))
    token = sign_token(SECRET, "walker@example.com", "weekly-summary")
    response = client.post(f"/email/unsubscribe?token={token}", headers=ONE_CLICK)
    assert response.status_code == 503
    assert response.json()["code"] == "CONFIGURATION"


def test_bulk_mail_needs_the_unsubscribe_settings() -> None:
    service = create_email_service("mock")
    with pytest.raises(EmailError) as info:
        service.send_templated_email("weekly-summary", "walker@example.com", WEEKLY)
    assert info.value.code is EmailErrorCode.CONFIGURATION
    assert "EMAIL_UNSUBSCRIBE_URL" in info.value.message


def test_bulk_mail_goes_to_one_recipient_per_message() -> None:
    service = create_email_service("mock", **UNSUBSCRIBE)
    with pytest.raises(EmailError) as info:
        service.send_templated_email("weekly-summary", ["a@example.com", "b@example.com"], WEEKLY)
    assert info.value.code is EmailErrorCode.INVALID_MESSAGE


def test_headers_with_a_mailto_and_a_url_with_a_query() -> None:
    headers = unsubscribe_headers(
        "https://x.example/u?lang=en", b"k", "A@Example.com", "news", "leave@x.example"
    )
    link, mailto = headers["List-Unsubscribe"].split(", ")
    query = parse_qs(urlsplit(link.strip("<>")).query)
    assert query["lang"] == ["en"]
    assert query["token"] == [sign_token(b"k", "a@example.com", "news")]
    assert mailto == "<mailto:leave@x.example?subject=unsubscribe%20news>"
