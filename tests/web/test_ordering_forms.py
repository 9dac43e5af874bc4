"""The ordering panel's pure parts (hutong.web.ui.ordering; issue 14, item 5): a card's detail is
shown as escaped text with only bold and lists made HTML, and the draft a form carries is
checked (HT-0541) before any hook is called."""

from __future__ import annotations

import pytest
from starlette.datastructures import FormData

from hutong.errors import InvalidRequest
from hutong.web.ui.ordering import DRAFT_PREFIX, MAX_DRAFT, detail_html, draft_of


def test_detail_is_escaped_markdown() -> None:
    html = str(detail_html("**血常规** 已完成\n\n- 结果：<script>alert(1)</script>\n- 机构：A&B"))
    assert html == ("<p><strong>血常规</strong> 已完成</p><ul><li>结果：&lt;script&gt;alert(1)&lt;/script&gt;</li>"
                    "<li>机构：A&amp;B</li></ul>")
    assert "<script>" not in str(detail_html("<script>x</script> **<b>y</b>**"))


def test_the_draft_a_form_carries_is_checked() -> None:
    d = draft_of(FormData([("draft", "0123456789ab"), ("item", "cbc"), ("item", "cbc"), ("drug", "J01CA04"),
                           ("done", "draft-0123456789ab-cbc"), ("done", "draft-ffffffffffff-cbc")]))
    assert d.items == ["cbc"] and d.drugs == ["J01CA04"]
    assert d.done == ["draft-0123456789ab-cbc"]  # only orders of this draft
    assert d.order_ids() == [DRAFT_PREFIX + "0123456789ab-cbc", DRAFT_PREFIX + "0123456789ab-J01CA04"]
    # A draft is named by its token: a new one for a new draft, never one a form made up.
    fresh, forged = draft_of(FormData([("item", "cbc")])), draft_of(FormData([("draft", "../x"), ("item", "cbc")]))
    assert fresh.token != d.token and forged.token != "../x" and len(forged.token) == 12
    for bad in ([("item", "cbc'><script>")], [("drug", "N02BE01")],
                [("item", f"i{n}") for n in range(MAX_DRAFT + 1)]):
        with pytest.raises(InvalidRequest) as e:
            draft_of(FormData(bad))
        assert e.value.code == "HT-0541"
