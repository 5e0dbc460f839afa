"""Signature vectors: Pusher's documented ones, RFC 4231, and the official library."""

from __future__ import annotations

import json
import time

import pusher
import pytest
from milequest.services.websocket import (
    WebSocketError,
    WebSocketErrorCode,
    create_websocket_service,
    issue_connection_token,
    signing,
    verify_connection_token,
)

DOC_KEY = "278d425bdf160c739803"
DOC_SECRET = "7ad3773142a6692b25b8"


def test_hmac_matches_rfc4231_case_2() -> None:
    assert signing.sign("Jefe", "what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_documented_private_channel_vector() -> None:
    auth = signing.channel_auth(DOC_KEY, DOC_SECRET, "1234.1234", "private-foobar")
    assert auth == (f"{DOC_KEY}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4")


def test_documented_presence_channel_vector() -> None:
    channel_data = '{"user_id":10,"user_info":{"name":"Mr. Pusher"}}'
    auth = signing.channel_auth(DOC_KEY, DOC_SECRET, "1234.1234", "presence-foobar", channel_data)
    assert auth == (f"{DOC_KEY}:afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c")


def test_service_output_matches_the_documented_vector() -> None:
    ws = create_websocket_service(
        "mock", websocket_app_key=DOC_KEY, websocket_app_secret=DOC_SECRET
    )
    assert ws.authenticate_channel("1234.1234", "private-foobar") == {
        "auth": f"{DOC_KEY}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    }


@pytest.mark.parametrize(
    ("channel", "user"),
    [
        ("private-team-123", None),
        ("presence-team-123", {"user_id": "u-1", "user_info": {"name": "Zoë"}}),
        ("presence-x", {"user_id": "42"}),
    ],
)
def test_agrees_with_the_official_library(channel: str, user: dict[str, object] | None) -> None:
    client = pusher.Pusher(app_id="1", key=DOC_KEY, secret=DOC_SECRET)
    ws = create_websocket_service(
        "mock", websocket_app_key=DOC_KEY, websocket_app_secret=DOC_SECRET
    )
    ours = ws.authenticate_channel("123.456", channel, user)
    # The library signs whatever JSON text it makes of custom_data; feed it ours back.
    custom = json.loads(ours["channel_data"]) if "channel_data" in ours else None
    theirs = client.authenticate(channel, "123.456", custom)
    if custom is None:
        assert ours == theirs
    else:
        expected = signing.channel_auth(
            DOC_KEY, DOC_SECRET, "123.456", channel, theirs["channel_data"]
        )
        assert theirs["auth"] == expected
        assert signing.verify_channel_auth(
            DOC_KEY, DOC_SECRET, "123.456", channel, ours["auth"], ours["channel_data"]
        )


def test_channel_auth_rejects_tampering() -> None:
    auth = signing.channel_auth(DOC_KEY, DOC_SECRET, "1.2", "private-a")
    verify = signing.verify_channel_auth
    assert verify(DOC_KEY, DOC_SECRET, "1.2", "private-a", auth)
    assert not verify(DOC_KEY, DOC_SECRET, "1.3", "private-a", auth)
    assert not verify(DOC_KEY, DOC_SECRET, "1.2", "private-b", auth)
    assert not verify("other-key", DOC_SECRET, "1.2", "private-a", auth)
    assert not verify(DOC_KEY, DOC_SECRET, "1.2", "private-a", auth[:-1] + "0")
    assert not verify(DOC_KEY, DOC_SECRET, "1.2", "private-a", None)
    assert not verify(DOC_KEY, DOC_SECRET, "1.2", "private-a", "no-colon")
    assert not verify(DOC_KEY, DOC_SECRET, "1.2", "private-a", 42)  # type: ignore[arg-type]
    assert not verify(DOC_KEY, DOC_SECRET, "1.2", "private-a", auth.encode())  # type: ignore[arg-type]
    assert not verify(DOC_KEY, DOC_SECRET, "1.2", "presence-a", auth, 42)  # type: ignore[arg-type]


def test_presence_auth_covers_channel_data() -> None:
    data = signing.presence_channel_data("u1", {"role": "admin"})
    auth = signing.channel_auth(DOC_KEY, DOC_SECRET, "1.2", "presence-a", data)
    assert signing.verify_channel_auth(DOC_KEY, DOC_SECRET, "1.2", "presence-a", auth, data)
    forged = signing.presence_channel_data("u2", {"role": "admin"})
    assert not signing.verify_channel_auth(DOC_KEY, DOC_SECRET, "1.2", "presence-a", auth, forged)


def test_connection_tokens_round_trip_and_expire() -> None:
    token = signing.mint_token("s3cret", "alice", 60, now=1_000_000)
    assert signing.read_token("s3cret", token, now=1_000_030) == "alice"
    assert signing.read_token("s3cret", token, now=1_000_060) is None
    assert signing.read_token("other", token, now=1_000_030) is None
    _body, sig = token.removeprefix(signing.TOKEN_PREFIX).split(".")
    forged_body = signing.mint_token("x", "mallory", 60, now=1_000_000).split(".")[1]
    assert signing.read_token("s3cret", f"{signing.TOKEN_PREFIX}{forged_body}.{sig}") is None
    assert signing.read_token("s3cret", "garbage") is None
    assert signing.read_token("s3cret", f"{signing.TOKEN_PREFIX}!!.{sig}") is None


def test_issue_and_verify_connection_token_use_the_app_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBSOCKET_APP_KEY", "k")
    monkeypatch.setenv("WEBSOCKET_APP_SECRET", "app-secret")
    token = issue_connection_token("bob", ttl_seconds=30)
    assert verify_connection_token(token) == "bob"
    assert signing.read_token("app-secret", token) == "bob"
    expired = signing.mint_token("app-secret", "bob", 5, now=time.time() - 10)
    with pytest.raises(WebSocketError) as err:
        verify_connection_token(expired)
    assert err.value.code is WebSocketErrorCode.UNAUTHORIZED
    with pytest.raises(WebSocketError) as err:
        verify_connection_token(signing.mint_token("wrong", "bob", 30))
    assert err.value.code is WebSocketErrorCode.UNAUTHORIZED


def test_issue_connection_token_validates_before_signing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(WebSocketError) as err:
        issue_connection_token("", secret="s")
    assert err.value.code is WebSocketErrorCode.INVALID_USER
    with pytest.raises(WebSocketError) as err:
        issue_connection_token("bob", ttl_seconds=0, secret="s")
    assert err.value.code is WebSocketErrorCode.INVALID_USER
    with pytest.raises(WebSocketError) as err:
        issue_connection_token("bob")  # no secret configured anywhere
    assert err.value.code is WebSocketErrorCode.CONFIGURATION
