"""The Models API's objects."""

from typing import Literal

from pydantic import BaseModel

from api.lists import ListObject


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # Extensions (as vLLM's model cards have them): the base model a fine-tuned model runs
    # on, and the model its training started from (that base, or the fine-tuned model it
    # continued).
    root: str | None = None
    parent: str | None = None


class ModelList(ListObject[ModelObject]):
    pass


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool
