"""The identity review's score and decisions in the MPI (issue 16, item 6), on
SQLite and PostgreSQL through the store's real write path:

- every term of a pair's score is shown (the prior, each field, the name
  frequency adjustment), the shown rows add up to the shown total exactly, and
  that total is the matcher's own weight (the one it queued the pair with);
- the verdict follows the probability and the thresholds (8.3 % is not a
  probable match);
- a decision moves the item to its list at once, and records who, when and the
  note; an unlinked item leaves 已关联.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from hutong.errors import Conflict
from hutong.fhir.service import FhirService
from hutong.mpi import explain
from hutong.mpi import state as st
from hutong.mpi.comparisons import COMPARISONS, gamma
from hutong.mpi.fellegi_sunter import Model
from hutong.mpi.idnumber import check_char
from hutong.mpi.matcher import score
from hutong.mpi.model import default_model
from hutong.platform import mpi_of
from hutong.security.guard import as_operator
from hutong.store.sql import SqlRepository
from hutong.systems import ID_CARD, mrn_system
from hutong.web.ui.identity_review import hundredths, percent


def idno(birth: str, seq: str) -> str:
    first = "110105" + birth.replace("-", "") + seq
    return first + check_char(first)


def register(repo: SqlRepository, org: str, mrn: str, name: str, birth: str, gender: str, *,
             id_number: str | None = None, phone: str | None = None, address: str | None = None) -> str:
    ident: list[dict[str, Any]] = [{"system": mrn_system(org), "value": mrn}]
    if id_number:
        ident.append({"system": ID_CARD, "value": id_number})
    body: dict[str, Any] = {"resourceType": "Patient", "identifier": ident, "name": [{"text": name}],
                            "gender": gender, "birthDate": birth}
    if phone:
        body["telecom"] = [{"system": "phone", "value": phone}]
    if address:
        body["address"] = [{"text": address}]
    r = FhirService(as_operator(repo)).create("Patient", orjson.dumps(body), {})
    assert r.status == 201
    return str(orjson.loads(r.body or b"{}")["id"])


# Registrations of a few people with the noise real ones carry (hutong/synth/README.md):
# a missing ID number, a homophone, day and month swapped, another phone, a moved address.
PEOPLE = [
    # (org, mrn, name, birth, sex, id, phone, address)
    ("H001", "A1", "王秀英", "1958-03-12", "female", idno("1958-03-12", "024"), "13911110001", "朝阳区安贞里1号"),
    ("H002", "A2", "王秀英", "1958-03-12", "female", None, "13700000002", "丰台区南苑路9号"),
    ("H003", "A3", "王秀瑛", "1958-03-12", "female", None, "13911110001", "朝阳区安贞里1号"),
    ("H001", "B1", "刘建国", "1985-04-07", "male", None, "13800000011", "海淀区学院路3号"),
    ("H002", "B2", "刘建国", "1985-07-04", "male", None, "13600000012", "通州区新华大街2号"),
    ("H003", "C1", "陈静", "1990-10-10", "female", None, "13500000021", "东城区东直门内大街5号"),
    ("H004", "C2", "陈静", "1990-10-10", "female", None, "13500000022", "西城区金融大街7号"),
]


def load(repo: SqlRepository) -> list[str]:
    return [register(repo, o, m, n, b, s, id_number=i, phone=p, address=a) for o, m, n, b, s, i, p, a in PEOPLE]


def check_sums(item: dict[str, Any], matcher_weight: float) -> dict[str, Any]:
    bd = item["comparison"]["breakdown"]
    shown = [t["shown"] for t in bd["terms"]]
    # every term is a row: the prior, one per comparison, and the name frequency term when it applies
    assert [t["name"] for t in bd["terms"]][:len(COMPARISONS) + 1] == ["prior", *[c.name for c in COMPARISONS]]
    assert sum(shown) == bd["shown"] == round(matcher_weight * 100), (shown, bd["shown"], matcher_weight)
    assert math.isclose(math.fsum(t["weight"] for t in bd["terms"]), matcher_weight, abs_tol=1e-9)
    assert bd["probability"] == Model.probability(matcher_weight)
    return dict(bd)


def test_shown_terms_add_up_to_the_matchers_total_for_real_pairs(repo: SqlRepository) -> None:
    load(repo)
    mpi = mpi_of(repo)
    items = mpi.review_items(limit=100)
    assert len(items) >= 3, [i["reason"] for i in items]
    for item in items:
        bd = check_sums(item, item["score"])  # the weight the matcher queued the pair with
        prior = bd["terms"][0]
        assert prior["weight"] == pytest.approx(math.log2(bd["prior"] / (1 - bd["prior"])))
        assert prior["shown"] != 0  # the base rate is shown, not hidden in the total
    # every scored pair, not only queued ones: the matcher's own score() against compare()
    read = st.repo_reader(repo)
    model = mpi.model()
    checked = 0
    for src in st.sources_of(repo, read, [r[1] for r in st.all_sources(read)]):
        others = st.person_features(repo, read, {s[1] for s in st.all_sources(read)}, src.patient_id)
        for s in score(model, src.features, {k: v for k, v in others.items() if k != src.person_id}):
            item = {"comparison": mpi.compare(src.patient_id, s.person_id)}
            check_sums(item, s.weight)
            checked += 1
    assert checked >= 20


def test_a_common_name_adds_its_frequency_term(repo: SqlRepository) -> None:
    """With name frequencies in the model (hutong mpi train), agreeing on 王秀英 weighs less: the
    adjustment is its own row and the rows still add up."""
    load(repo)
    mpi = mpi_of(repo)
    m = default_model()
    m.name_u = {"王秀英": 2e-3}
    repo.transact(lambda w: st.save_model(w, 0, orjson.dumps(m.to_json())))
    mpi.forget_model()
    read = st.repo_reader(repo)
    rows = {r[0]: r for r in st.all_sources(read)}
    a1 = next(p for p, r in rows.items() if st.get_source(repo, read, p).features.names[:1] == ("王秀英",)
              and st.get_source(repo, read, p).features.ids)
    a2 = next(p for p in rows if p != a1 and st.get_source(repo, read, p).features.names[:1] == ("王秀英",))
    person = mpi.person_of(a2)
    assert person is not None and person != mpi.person_of(a1)
    comp = mpi.compare(a1, person)
    names = [t["name"] for t in comp["breakdown"]["terms"]]
    assert names[-1] == "name_frequency"
    freq = comp["breakdown"]["terms"][-1]["weight"]
    assert freq == pytest.approx(math.log2(0.94 / 2e-3) - math.log2(0.94 / 1e-4))
    src = st.get_source(repo, read, a1).features
    feats = st.person_features(repo, read, [person], a1)[person]
    w = mpi.model().weight(gamma(src, feats), tuple(set(src.names) & set(feats.names)))
    check_sums({"comparison": comp}, w)


def test_rounding_together_keeps_the_sum() -> None:
    values = [6.063718908910516, 11.548934045420527, -16.245616529030606, -18.866100939119747, 13.430604156794786,
              -2.689317283797866]
    total = round(math.fsum(values) * 100)
    # rounded one by one these rows miss their total by a hundredth
    assert sum(round(v * 100) for v in values) != total
    shown = explain.rounded_together(values, math.fsum(values))
    assert sum(shown) == total
    assert all(abs(s - v * 100) < 1 for s, v in zip(shown, values, strict=True))
    assert hundredths(-1993) == "−19.93" and hundredths(7) == "+0.07" and hundredths(0) == "0.00"


def test_the_verdict_follows_the_probability_and_thresholds() -> None:
    m = default_model()
    at = math.log2(0.083 / 0.917)  # the reported item: 8.3 %
    assert percent(Model.probability(at)) == "8.3%"
    assert explain.verdict(m, at) == explain.REVIEW_UNLIKELY  # not "probable match"
    assert explain.verdict(m, math.log2(0.9 / 0.1)) == explain.REVIEW_LIKELY
    assert explain.verdict(m, m.upper) == explain.AUTO
    assert explain.verdict(m, m.lower - 0.01) == explain.UNLIKELY


def test_decisions_move_items_and_record_who_when_and_why(repo: SqlRepository) -> None:
    ids = load(repo)
    mpi = mpi_of(repo)
    open_items = {i["patient"]: i for i in mpi.review_items(limit=100)}
    b2 = open_items[ids[4]]  # 刘建国, day and month swapped
    c2 = open_items[ids[6]]  # 陈静, another phone and address
    mpi.link(b2["patient"], b2["person"], actor="acct-steward-1", reason="电话核实")
    assert [i["id"] for i in mpi.review_items(status="linked")] == [b2["id"]]
    [h] = mpi.review_item(b2["id"])["history"]  # type: ignore[index]
    assert (h["decision"], h["actor"], h["note"]) == ("linked", "acct-steward-1", "电话核实")
    assert isinstance(h["at"], int) and h["at"] > 0

    # unlinking moves it off 已关联 at once (the defect), newest decision first
    with pytest.raises(Conflict) as e:  # not linked to that person: refused, nothing changes
        mpi.unlink(b2["patient"], actor="acct-steward-2", reason="x", from_person=c2["person"])
    assert e.value.code == "HT-0441"
    assert mpi.person_of(b2["patient"]) == b2["person"]
    mpi.unlink(b2["patient"], actor="acct-steward-2", reason="出生日期核实不同", from_person=b2["person"])
    assert mpi.review_items(status="linked") == []
    item = mpi.review_item(b2["id"])
    assert item is not None and item["status"] == "unlinked"
    assert [(h["decision"], h["actor"], h["note"]) for h in item["history"]] == [
        ("unlinked", "acct-steward-2", "出生日期核实不同"), ("linked", "acct-steward-1", "电话核实")]
    assert mpi.person_of(b2["patient"]) != b2["person"]

    mpi.reject(c2["id"], actor="acct-steward-1", reason="不同住址不同电话")
    item = mpi.review_item(c2["id"])
    assert item is not None and item["status"] == "rejected"
    assert [i["id"] for i in mpi.review_items(status="rejected")] == [c2["id"]]
    assert [(h["decision"], h["note"]) for h in item["history"]] == [("rejected", "不同住址不同电话")]
    assert mpi.review_item(10**9) is None


def test_undo_and_relinking_elsewhere_move_items_too(repo: SqlRepository) -> None:
    """The item follows its source whatever moves it: undoing the link ($mpi-undo) takes it off 已关联,
    undoing that unlink puts it back; linking the source to another person unlinks the first item."""
    ids = load(repo)
    mpi = mpi_of(repo)
    items = {i["patient"]: i for i in mpi.review_items(limit=100)}
    b2 = items[ids[4]]
    event = mpi.link(b2["patient"], b2["person"], actor="acct-steward-1", reason="电话核实")
    unlinked = mpi.unlink(b2["patient"], actor="acct-steward-2", reason="看错了", from_person=b2["person"])
    mpi.undo(unlinked, actor="acct-steward-1", reason="撤销解除")
    item = mpi.review_item(b2["id"])
    assert item is not None and item["status"] == "linked"
    mpi.undo(event, actor="acct-steward-2", reason="误操作")
    item = mpi.review_item(b2["id"])
    assert item is not None and item["status"] == "unlinked"
    assert [(h["decision"], h["note"]) for h in item["history"]] == [
        ("unlinked", "误操作"), ("linked", "撤销解除"), ("unlinked", "看错了"), ("linked", "电话核实")]

    c2 = items[ids[6]]
    mpi.link(c2["patient"], c2["person"], actor="acct-steward-1", reason="核实")
    other = mpi.person_of(ids[3])  # 刘建国's person: a wrong link, made by hand on purpose
    assert other is not None and other != c2["person"]
    mpi.link(c2["patient"], other, actor="acct-steward-2", reason="改挂")
    item = mpi.review_item(c2["id"])
    assert item is not None and item["status"] == "unlinked" and item["history"][0]["note"] == "改挂"
    assert c2["id"] not in [i["id"] for i in mpi.review_items(status="linked")]
