"""Reading request bodies safely: size-bounded, and JSON with a depth bound."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Message

from milequest.services.jsonsafe import JsonSafetyError, loads


async def buffered(request: Request, limit: int) -> Request:
    """``request`` with its body read; HTTP 413 past ``limit`` bytes.

    The body is counted as it arrives, so a chunked request (no Content-Length) cannot
    make the app buffer more than ``limit``.
    """
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, "request body too large")

    async def replay() -> Message:
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    return Request(request.scope, replay)


def error(status: int, message: str, code: str | None = None) -> JSONResponse:
    """The app's JSON error answer: ``{"error": message, "code"?: code}``."""
    body: dict[str, Any] = {"error": message}
    if code is not None:
        body["code"] = code
    return JSONResponse(body, status_code=status)


async def json_body(request: Request) -> Any:
    """The request's JSON body (depth-bounded); HTTP 400 when it is not valid JSON."""
    try:
        return loads(await request.body())
    except JsonSafetyError as exc:
        raise HTTPException(400, f"body is not acceptable JSON: {exc}") from None
