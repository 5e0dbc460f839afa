"""The API Gateway management API (``@connections``) of the local gateway, over HTTP.

Serves ``POST/GET/DELETE /{stage}/@connections/{id}`` with the status codes and error
headers botocore's ``apigatewaymanagementapi`` client expects, so the apigateway provider
runs unmodified with ``APIGW_MANAGEMENT_ENDPOINT=http://host:port/{stage}``. The same server
answers Lambda's ``Invoke`` (``POST /2015-03-31/functions/{name}/invocations``) for the
functions the handlers invoke (``announce``), so ``$connect`` runs unmodified with
``AWS_ENDPOINT_URL_LAMBDA`` pointing here.
"""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .gateway import ConnectionGoneError, PayloadTooLargeError, WebSocketGateway


def _error(status: int, error_type: str, message: str) -> JSONResponse:
    # rest-json services name the error in x-amzn-ErrorType; botocore maps it to
    # client.exceptions.<error_type> (GoneException for 410).
    return JSONResponse(
        {"message": message}, status_code=status, headers={"x-amzn-ErrorType": error_type}
    )


def create_management_app(gateway: WebSocketGateway) -> Starlette:
    """The management API for ``gateway``'s connections."""

    async def connection(request: Request) -> Response:
        stage = request.path_params["stage"]
        connection_id = request.path_params["connection_id"]
        if stage != gateway.config.stage:
            return _error(403, "ForbiddenException", f"unknown stage {stage!r}")
        if "authorization" not in request.headers:
            # API Gateway requires SigV4 on the management API; the emulator checks that the
            # request is signed at all, not the signature itself.
            return _error(403, "ForbiddenException", "Missing Authentication Token")
        try:
            if request.method == "POST":
                await gateway.post_to_connection(connection_id, await request.body())
                return Response(status_code=200)
            if request.method == "DELETE":
                await gateway.delete_connection(connection_id)
                return Response(status_code=204)
            return JSONResponse(gateway.get_connection(connection_id))
        except ConnectionGoneError:
            return _error(410, "GoneException", f"connection {connection_id} is gone")
        except PayloadTooLargeError as exc:
            return _error(413, "PayloadTooLargeException", str(exc))

    async def invoke(request: Request) -> Response:
        name = request.path_params["function"]
        if gateway.function(name) is None:
            return _error(404, "ResourceNotFoundException", f"Function not found: {name}")
        try:
            payload = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error(400, "InvalidRequestContentException", "payload is not JSON")
        if request.headers.get("x-amz-invocation-type") == "Event":
            gateway.invoke_later(name, payload)
            return Response(status_code=202)
        return JSONResponse(await gateway.invoke(name, payload))

    return Starlette(
        routes=[
            Route(
                "/{stage}/@connections/{connection_id}",
                connection,
                methods=["POST", "GET", "DELETE"],
            ),
            Route("/2015-03-31/functions/{function}/invocations", invoke, methods=["POST"]),
        ]
    )
