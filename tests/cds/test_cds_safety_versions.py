"""Issue 14, item 4 ("hard-stop or warning cards per committee-approved rule"): the privilege and
drug-allergy rules take their configuration from the approved version in force of kind ``safety``
(hutong.cds.safety_config over hutong.cds.versions' four-eyes life cycle), over real HTTP on
SQLite and PostgreSQL: the built-in defaults until a version is approved (said on the card), a
draft never fires, its author cannot approve it, another committee member's approval changes the
cards at once, retiring it goes back to the defaults; a malformed configuration is refused whole."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from harness import Server, serve_app

# The region, the hook bodies and the card checks of the service's own tests.
from test_cds_hooks_service import Region, call, cards_of, drug_order, hook_body
from test_cds_hooks_service import region as region  # noqa: F401  (fixture)

from hutong.cds.safety_config import SafetyVersions, builtin, region_day, to_json
from hutong.errors import Forbidden, InvalidRequest
from hutong.security.principal import Principal, Role


@pytest.fixture
def server(db_url: str) -> Iterator[Server]:
    yield from serve_app(db_url)


def member(n: int) -> Principal:
    return Principal(account_id=f"committee-{n}", role=Role.COMMITTEE, display=f"委员{n}")


def amoxicillin_card(reg: Region) -> dict[str, Any]:
    pid = reg.ids["pA"]
    cards = cards_of(call(reg, "docA", hook_body(reg, "docA", pid, [drug_order(pid, "amoxicillin")])))
    assert len(cards) == 1, cards
    return cards[0]


def test_cards_follow_the_approved_configuration(region: Region) -> None:
    platform = region.server.app.platform
    versions = SafetyVersions(platform.repo, platform.audit)
    today = region_day(int(datetime.now(UTC).timestamp() * 1000))
    # No approved version: the built-in defaults, and the card says so.
    card = amoxicillin_card(region)
    assert card["indicator"] == "critical" and "内置默认" in card["detail"]
    # A draft making the penicillin conflict a warning does not fire.
    doc = to_json(builtin(), "药物过敏与权限规则 2027 版")
    doc["allergy"]["conflicts"][0]["action"] = "warning"
    v = versions.draft(member(1), doc, effective_from=today)
    assert v.status == "draft" and amoxicillin_card(region)["indicator"] == "critical"
    # Four-eyes: the author may not approve it; a clinician may not either.
    with pytest.raises(Forbidden) as e:
        versions.approve(v.id, member(1))
    assert e.value.code == "HT-0503"
    with pytest.raises(Forbidden):
        versions.approve(v.id, Principal(account_id="doc", role=Role.CLINICIAN))
    assert amoxicillin_card(region)["indicator"] == "critical"
    # Another committee member approves: the next call gives a warning with override reasons.
    versions.approve(v.id, member(2))
    card = amoxicillin_card(region)
    assert card["indicator"] == "warning" and card["overrideReasons"]
    assert f"v{v.seq}（{v.id}，委员会批准）" in card["detail"]
    # Retired: back to the defaults.
    versions.retire(v.id, member(2))
    card = amoxicillin_card(region)
    assert card["indicator"] == "critical" and "内置默认" in card["detail"]
    actions = [x.action for x in platform.audit.search(purpose="cds-knowledge", limit=20)]
    assert {"cds-knowledge-draft", "cds-knowledge-approve", "cds-knowledge-retire"} <= set(actions)


def test_a_malformed_configuration_is_refused_whole(region: Region) -> None:
    platform = region.server.app.platform
    versions = SafetyVersions(platform.repo, platform.audit)
    good = to_json(builtin(), "规则")
    for path, value in ((("allergy", "conflicts", 0, "action"), "maybe"),
                        (("allergy", "conflicts", 0, "allergen"), "penicillin"),
                        (("privileges", "tiers", "J01CA04"), 7),
                        (("privileges", "surprise"), 1)):
        doc = copy.deepcopy(good)
        target: Any = doc
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value
        with pytest.raises(InvalidRequest) as e:
            versions.draft(member(1), doc, effective_from="2027-01-01")
        assert e.value.code == "HT-0537" and str(path[-1]) in e.value.message
    assert versions.list() == []
