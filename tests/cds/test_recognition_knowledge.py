"""Issue 14, item 2: 互认 knowledge as versioned data, on SQLite and PostgreSQL.

Four-eyes (the author cannot approve; only committee accounts decide), effective dates, and
that an unapproved, retired or not-yet-effective version never fires (the rule gives no card),
every step on the audit trail; the ConceptMap form of local code maps, out and back in; the
``hutong cds`` command line with two committee accounts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_recognition import LOCAL_A, LOCAL_B, NOW, Records, order, request, seed_data

from hutong.cds.cards import RuleContext
from hutong.cds.knowledge import concept_maps, local_codes_from_concept_map, parse
from hutong.cds.recognition import RecognitionRule
from hutong.cds.versions import KnowledgeVersions, account_principal
from hutong.cli import main
from hutong.cli.cds import SEED, with_concept_maps
from hutong.errors import HutongError
from hutong.platform import open_repository
from hutong.security.accounts import Accounts
from hutong.security.audit import AuditLog
from hutong.security.principal import LOCAL_OPERATOR, Principal, Role
from hutong.security.settings import SecuritySettings
from hutong.store.sql import SqlRepository

NOW_MS = int(NOW.timestamp() * 1000)


@pytest.fixture
def kv(repo: SqlRepository) -> Iterator[tuple[KnowledgeVersions, dict[str, Principal], AuditLog]]:
    accounts = Accounts(repo, SecuritySettings())
    who: dict[str, Principal] = {}
    for name, role in (("wang", Role.COMMITTEE), ("lina", Role.COMMITTEE), ("zhao", Role.COMMISSION),
                       ("doc", Role.CLINICIAN)):
        extra: dict[str, Any] = {"organization": "x", "organization_id": "x", "practitioner_id": "x"} \
            if role is Role.CLINICIAN else {}
        accounts.add_user(name, role=role, name=name, **extra)
        who[name] = account_principal(repo, name)
    audit = AuditLog(repo)
    yield KnowledgeVersions(repo, audit, clock=lambda: NOW_MS), who, audit


def _cards(repo: SqlRepository, now: datetime = NOW) -> list[Any]:
    rec = Records()
    rec.lab("A", 3, LOCAL_A, "JY0001")
    ctx = RuleContext(records=rec, repo=repo, now=now, base_url="https://h/fhir")
    return RecognitionRule().evaluate(request([order("L-CBC", LOCAL_B)]), ctx)


def _code(e: pytest.ExceptionInfo[HutongError]) -> str:
    return e.value.code


def test_four_eyes_and_only_an_approved_effective_version_fires(
        repo: SqlRepository, kv: tuple[KnowledgeVersions, dict[str, Principal], AuditLog]) -> None:
    versions, who, audit = kv
    assert _cards(repo) == []  # no knowledge at all: nothing fires
    v1 = versions.draft(who["wang"], seed_data(), effective_from="2026-01-01", note="首版")
    assert (v1.status, v1.seq, v1.author) == ("draft", 1, who["wang"].account_id)
    assert versions.in_force("2026-12-07") is None and _cards(repo) == []  # a draft never fires
    # The author may not approve it, nor may a commission officer or a clinician.
    with pytest.raises(HutongError) as e:
        versions.approve(v1.id, who["wang"])
    assert _code(e) == "HT-0503"
    for other in ("zhao", "doc"):
        with pytest.raises(HutongError) as e:
            versions.approve(v1.id, who[other])
        assert _code(e) == "HT-0504"
    with pytest.raises(HutongError) as e:  # a clinician may not draft either
        versions.draft(who["doc"], seed_data(), effective_from="2026-01-01")
    assert _code(e) == "HT-0504"
    assert versions.get(v1.id).status == "draft" and _cards(repo) == []
    # Another committee member approves: in force from its first day.
    a1 = versions.approve(v1.id, who["lina"])
    assert (a1.status, a1.approver, a1.approved) == ("active", who["lina"].account_id, NOW_MS)
    [card] = _cards(repo)
    assert "北京市怀柔中心医院" in card.summary
    with pytest.raises(HutongError) as e:  # approved once only
        versions.approve(v1.id, who["lina"])
    assert _code(e) == "HT-0505"
    # A second version effective next year: this year's stays in force until then.
    changed = seed_data()
    changed["items"][0]["window_days"] = 1  # 血常规: 1 day
    v2 = versions.draft(who["lina"], changed, effective_from="2027-01-01")
    versions.approve(v2.id, who["wang"])
    k = versions.in_force("2026-12-07")
    assert k is not None and k.version_id == v1.id
    k = versions.in_force("2027-01-01")
    assert k is not None and k.version_id == v2.id and k.rule_for("cbc", "11").window_days == 1  # type: ignore[union-attr]
    assert len(_cards(repo)) == 1 and _cards(repo, datetime(2027, 1, 2, tzinfo=UTC)) == []  # 3-day-old result
    # Retired: never fires again.
    versions.retire(v1.id, who["wang"])
    assert versions.get(v1.id).status == "retired" and _cards(repo) == []
    with pytest.raises(HutongError) as e:
        versions.retire(v1.id, who["lina"])
    assert _code(e) == "HT-0505"
    assert [v.seq for v in versions.list()] == [2, 1]
    # Every step and every refusal is on the audit trail, naming the version and what was approved.
    rows = [(r.action, r.outcome, r.code) for r in audit.search(limit=100) if r.action.startswith("cds-knowledge")]
    assert rows.count(("cds-knowledge-draft", "0", None)) == 2
    assert rows.count(("cds-knowledge-approve", "0", None)) == 2
    assert ("cds-knowledge-approve", "4", "HT-0503") in rows and ("cds-knowledge-approve", "4", "HT-0504") in rows
    assert ("cds-knowledge-retire", "0", None) in rows and ("cds-knowledge-draft", "4", "HT-0504") in rows
    approved = [r for r in audit.search(limit=100) if r.action == "cds-knowledge-approve" and r.outcome == "0"]
    assert {r.extra.get("digest") for r in approved} == {v1.digest, v2.digest}


def test_the_store_refuses_self_approval_whatever_the_caller(repo: SqlRepository,
                                                            kv: tuple[KnowledgeVersions, dict[str, Principal],
                                                                      AuditLog]) -> None:
    """Four-eyes is in the UPDATE itself: a path around KnowledgeVersions cannot approve its own draft."""
    from hutong.cds import knowledge_store

    versions, who, _ = kv
    v = versions.draft(who["wang"], seed_data(), effective_from="2026-01-01")
    assert not repo.transact(lambda w: knowledge_store.approve(w, v.id, who["wang"].account_id, NOW_MS))
    assert versions.get(v.id).status == "draft"


def test_a_bad_knowledge_set_stores_nothing(repo: SqlRepository,
                                           kv: tuple[KnowledgeVersions, dict[str, Principal], AuditLog]) -> None:
    versions, who, _ = kv
    bad = seed_data()
    bad["negative_list"][0]["items"].append("no-such-item")
    with pytest.raises(HutongError) as e:
        versions.draft(who["wang"], bad, effective_from="2026-01-01")
    assert _code(e) == "HT-0501"
    for frm, to in (("2026-13-01", None), ("2026-02-01", "2026-01-01")):
        with pytest.raises(HutongError) as e:
            versions.draft(who["wang"], seed_data(), effective_from=frm, effective_to=to)
        assert _code(e) == "HT-0507"
    assert versions.list() == []


def test_stored_rows_are_the_knowledge_set(repo: SqlRepository,
                                          kv: tuple[KnowledgeVersions, dict[str, Principal], AuditLog]) -> None:
    versions, who, _ = kv
    ks = parse(seed_data())
    v = versions.draft(LOCAL_OPERATOR, seed_data(), effective_from="2026-01-01")
    back = versions.rows(v.id)
    for attr in ("items", "regions", "negatives", "triggers", "quality", "local_codes"):
        assert sorted(getattr(back, attr), key=repr) == sorted(getattr(ks, attr), key=repr), attr
    assert orjson.loads(versions.body(v.id)) == seed_data() and v.digest == ks.digest


def test_local_code_maps_as_fhir_concept_maps() -> None:
    ks = parse(seed_data())
    maps = concept_maps(ks, version="1")
    assert len(maps) >= 2
    for cm in maps:
        assert cm["resourceType"] == "ConceptMap" and cm["status"] == "active" and cm["group"]
        for g in cm["group"]:
            assert all(t["equivalence"] == "equivalent" for el in g["element"] for t in el["target"])
        # valid FHIR R4 (fhir.resources' ConceptMap model)
        from fhir.resources.R4B.conceptmap import ConceptMap

        ConceptMap.model_validate(cm)
    # Back in: the same local codes.  A map naming another target or equivalence is handled.
    data = seed_data()
    data["local_codes"] = []
    again = parse(with_concept_maps(data, maps))
    assert sorted(again.local_codes, key=repr) == sorted(ks.local_codes, key=repr)
    cm = maps[0]
    cm["group"][0]["element"][0]["target"][0]["equivalence"] = "wider"
    entries = local_codes_from_concept_map(cm)
    assert cm["group"][0]["element"][0]["code"] not in entries[0]["codes"]
    with pytest.raises(HutongError) as e:
        local_codes_from_concept_map({**cm, "extension": []})
    assert _code(e) == "HT-0506"


def test_cli_load_approve_retire_with_two_committee_accounts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    repo = open_repository(url)
    accounts = Accounts(repo, SecuritySettings())
    accounts.add_user("wang.wei", role=Role.COMMITTEE, name="王伟")
    accounts.add_user("li.na", role=Role.COMMITTEE, name="李娜")
    repo.db.close()

    def cli(*args: str) -> Any:
        capsys.readouterr()
        rc = main(["cds", "--database", url, *args])
        out = capsys.readouterr()
        return rc, (orjson.loads(out.out) if rc == 0 else out.err)

    yaml_file = tmp_path / "k.yaml"
    import yaml

    yaml_file.write_text(yaml.safe_dump(seed_data(), allow_unicode=True), encoding="utf-8")
    rc, v = cli("load", str(yaml_file), "--effective-from", "2026-01-01", "--author", "wang.wei")
    assert rc == 0 and v["status"] == "draft"
    rc, err = cli("approve", v["id"], "--approver", "wang.wei")
    assert rc == 2 and "HT-0503" in err
    rc, err = cli("approve", v["id"], "--approver", "nobody")
    assert rc == 2 and "HT-0504" in err
    rc, a = cli("approve", v["id"], "--approver", "li.na")
    assert rc == 0 and a["status"] == "active" and a["approver"] != a["author"]
    rc, bundle = cli("concept-maps", v["id"])
    assert rc == 0 and len(bundle["entry"]) >= 2
    (tmp_path / "cm.json").write_bytes(orjson.dumps(bundle["entry"][0]["resource"]))
    rc, seeded = cli("seed", "--effective-from", "2027-01-01")
    assert rc == 0 and seeded["author"] == "local-cli" and seeded["version"] == 2
    rc, v3 = cli("load", str(SEED), "--concept-map", str(tmp_path / "cm.json"), "--effective-from", "2027-06-01")
    assert rc == 0 and v3["version"] == 3
    rc, listed = cli("list")
    assert [x["status"] for x in listed] == ["draft", "draft", "active"]
    rc, shown = cli("show", v["id"], "--body")
    assert rc == 0 and shown["knowledge"]["title"] == seed_data()["title"]
    # v3 is the seed file with A's codes through the ConceptMap round trip: only the test's own
    # Tianjin QC row (seed_data) differs.
    rc, d = cli("diff", v["id"], v3["id"])
    assert rc == 0 and list(d) == ["quality"] and not d["quality"]["added"] and not d["quality"]["changed"]
    assert [r["institution"] for r in d["quality"]["removed"]] == ["12120101MB0000001X"]
    changed = seed_data()
    changed["items"][0]["window_days"] = 3
    del changed["local_codes"][1]["codes"]["L-CBC"]
    (tmp_path / "k2.json").write_bytes(orjson.dumps(changed))
    rc, v4 = cli("load", str(tmp_path / "k2.json"), "--effective-from", "2027-06-01")
    rc, d = cli("diff", v["id"], v4["id"])
    assert rc == 0 and set(d) == {"regions", "local_codes"}
    assert {(c["from"]["window_days"], c["to"]["window_days"]) for c in d["regions"]["changed"]} == {(7, 3)}
    assert [r["code"] for r in d["local_codes"]["removed"]] == ["L-CBC"] and not d["local_codes"]["added"]
    # The privilege/allergy configuration (kind safety) goes through the same four-eyes steps.
    from hutong.cds.safety_config import builtin, to_json

    safety = to_json(builtin(), "处方与过敏规则配置")
    (tmp_path / "safety.json").write_bytes(orjson.dumps(safety))
    rc, s1 = cli("load", str(tmp_path / "safety.json"), "--kind", "safety", "--effective-from", "2026-01-01",
                 "--author", "li.na")
    assert rc == 0 and s1["kind"] == "safety" and s1["version"] == 1
    rc, err = cli("approve", s1["id"], "--approver", "li.na")
    assert rc == 2 and "HT-0503" in err
    rc, s1a = cli("approve", s1["id"], "--approver", "wang.wei")
    assert rc == 0 and s1a["status"] == "active"
    rc, listed = cli("list", "--kind", "safety")
    assert [x["id"] for x in listed] == [s1["id"]]
    rc, err = cli("diff", v["id"], s1["id"])
    assert rc == 2 and "HT-0501" in err
    rc, r = cli("retire", v["id"], "--by", "wang.wei")
    assert rc == 0 and r["status"] == "retired" and r["retired_by"]
    rc, err = cli("load", str(tmp_path / "missing.json"), "--effective-from", "2026-01-01")
    assert rc == 2 and "HT-0500" in err
    (tmp_path / "bad.json").write_text("{not json")
    rc, err = cli("load", str(tmp_path / "bad.json"), "--effective-from", "2026-01-01")
    assert rc == 2 and "HT-0500" in err
