"""The email routes of the HTTP app: provider webhooks and one-click unsubscribe.

Mount them in an app with ``Starlette(routes=[..., *email_routes()])``.
"""

from __future__ import annotations

from starlette.routing import BaseRoute


def email_routes() -> list[BaseRoute]:
    """The email routes (webhooks and unsubscribe); more are added as they are built."""
    return []
