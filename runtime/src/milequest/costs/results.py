"""What pricing one option returns: line items and a monthly total."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

OptionId = Literal["apigateway", "pusher", "ses", "resend", "sendgrid"]
Kind = Literal["realtime", "email"]

OPTION_LABELS: dict[str, str] = {
    "apigateway": "API Gateway + our stack",
    "pusher": "Pusher Channels",
    "ses": "Amazon SES",
    "resend": "Resend",
    "sendgrid": "SendGrid",
}


class LineItem(BaseModel):
    """One charge: ``quantity`` ``unit`` a month costing ``usd``."""

    model_config = ConfigDict(frozen=True)

    name: str
    quantity: float
    unit: str
    usd: float
    detail: str = ""


class OptionCost(BaseModel):
    """One option's monthly bill; ``total_usd`` is None when no published price covers it."""

    model_config = ConfigDict(frozen=True)

    option: OptionId
    kind: Kind
    plan: str | None = None
    items: tuple[LineItem, ...] = ()
    total_usd: float | None
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return OPTION_LABELS[self.option]

    @property
    def available(self) -> bool:
        return self.total_usd is not None
