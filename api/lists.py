"""OpenAI's list envelope, `{"object": "list", "data": [...], ...}`, declared once.

Each resource names its list by subclassing one of these (`class FileList(CursorPage[FileObject])`),
so the OpenAPI document keeps a schema per resource, named as OpenAI names it, with no
`ListObject[...]` names in it. Fields come in the order each shape has had in the API."""

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

Item = TypeVar("Item")


class ListObject(BaseModel, Generic[Item]):
    """A whole list: `/v1/models` (all of it fits in one answer)."""

    object: Literal["list"] = "list"
    data: list[Item]


class Page(ListObject[Item], Generic[Item]):
    """One page of a list that pages with `after`: `has_more` says whether another follows."""

    has_more: bool


class CursorPage(ListObject[Item], Generic[Item]):
    """One page that also names its first and last items (None when empty), for the next
    page's `after` without reading `data`."""

    first_id: str | None
    last_id: str | None
    has_more: bool
