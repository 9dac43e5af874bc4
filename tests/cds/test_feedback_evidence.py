"""Issue 14, item 5: the feedback on a recognition card names what it rested on.

The cds-cards audit row keeps each card's ``about`` (the recognised result, "Type/id"), and
the feedback row carries it as its entities, with the card's item: so the resident's timeline
can say which earlier result spared them a test (hutong.web.ui.avoided).  Over real HTTP, on
both databases (the region of tests/cds/test_recognition_http.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

from test_recognition_http import CODES, Region, body, cards, order, region, server  # noqa: F401

from hutong.cds.knowledge import LOCAL_CODE_PREFIX
from hutong.cds.recognition import RULE_ID


def test_feedback_names_the_recognised_result(region: Region) -> None:  # noqa: F811
    ids = region.ids
    local_a = LOCAL_CODE_PREFIX + CODES["A"]
    [c] = cards(region.call("docA", body(region, "docA", ids["pA"], [order(ids["pA"], local_a, "JY0001")])))
    assert "about" not in c  # not sent: CDS Hooks 2.0 cards have no such attribute
    now = datetime.now(UTC).isoformat()
    fb = region.feedback("docA", "hutong-order-select", [{
        "card": c["uuid"], "outcome": "accepted", "acceptedSuggestions": [{"id": c["suggestions"][0]["uuid"]}],
        "outcomeTimestamp": now}])
    assert fb.status_code == 200, fb.text
    audit = region.server.app.platform.audit
    [row] = audit.search(action="cds-feedback", limit=5)
    assert row.extra["rule"] == RULE_ID and row.extra["outcome"] == "accepted"
    assert row.entities == (f"DiagnosticReport/{ids['cbcB']}",)
    assert row.extra["item"] == "cbc" and row.extra["order"] == "sr-1"
    assert row.persons  # the golden person: the resident's own rows
