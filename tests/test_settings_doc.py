"""docs/settings.md is generated from the settings classes: it must be current, and every
setting must say what it does."""

import pytest

from api.settings_doc import CLASSES, PAGE, own_fields, render


def test_settings_page_is_current() -> None:
    assert PAGE.read_text() == render(), (
        "docs/settings.md is stale: run `make docs` (python -m api.settings_doc)")


@pytest.mark.parametrize("cls", [cls for cls, _ in CLASSES], ids=lambda cls: cls.__name__)
def test_every_setting_has_a_description(cls: type) -> None:
    undescribed = [name for name in own_fields(cls)
                   if not (cls.model_fields[name].description or "").strip()]
    assert not undescribed, (f"{cls.__name__}: give these a Field(description=...): "
                             f"{', '.join(undescribed)}")


def test_every_setting_is_on_the_page() -> None:
    page = PAGE.read_text()
    for cls, _ in CLASSES:
        for name in cls.model_fields:
            assert f"`TUNESERVE_{name.upper()}`" in page, name
