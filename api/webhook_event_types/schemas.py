"""The list of webhook event types."""

from typing import Literal

from pydantic import BaseModel


class WebhookEventTypeList(BaseModel):
    object: Literal["list"] = "list"
    data: list[str]
