"""Page texts: one key, one text (hutong.web.ui.i18n.add)."""

from __future__ import annotations

import pytest

import hutong.web.app  # noqa: F401  (imports every page group, registering its texts)
from hutong.web.ui import i18n


def test_every_page_group_registers_without_a_clash() -> None:
    # The console's name and the resident's consent heading were once both "con.title".
    assert i18n.MESSAGES["con.title"][0] == "卫健委管理台"
    assert i18n.MESSAGES["consent.title"][0] == "授权管理"


def test_a_key_with_another_text_is_refused() -> None:
    with pytest.raises(ValueError, match="con.title"):
        i18n.add({"con.title": ("别的页面", "Another page")})
    i18n.add({"con.title": i18n.MESSAGES["con.title"]})  # the same text again is harmless
    assert i18n.MESSAGES["con.title"][0] == "卫健委管理台"
