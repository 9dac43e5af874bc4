"""谁看了我的档案 grouped (issue 16, item 4): hutong.web.ui.access_log's grouping
by actor, institution, purpose, outcome and sitting (token or time window, one
Beijing day), and the plain words for refused, unfinished, break-glass, own,
delegate and machine accesses."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from hutong.security.audit import AccessEntry
from hutong.web.ui import access_log as alog
from hutong.web.ui.i18n import Translator

BJ = timezone(timedelta(hours=8))
T0 = int(datetime(2026, 12, 7, 14, 3, tzinfo=BJ).timestamp() * 1000)
MIN = 60_000
ZH = Translator("zh-CN")
ORGS = {"H001": "北京市第一医院", "H002": "朝阳社区卫生服务中心"}
_seq = iter(range(1, 10_000))


def entry(at_min: float, **kw: Any) -> AccessEntry:
    d: dict[str, Any] = {
        "seq": next(_seq), "time_ms": T0 + int(at_min * MIN), "who": "张医生", "account_id": "acct-doc1",
        "role": "clinician", "organization": "H001", "action": "read", "purpose": "treatment",
        "break_glass": False, "reason": None, "outcome": "0", "relation": None, "persons": ("mpi-1",),
        "kinds": ("Observation",), "session": "tok-a", "code": None, "interaction": "GET /fhir/Observation/{id}"}
    d.update(kw)
    return AccessEntry(**d)


def view(entries: list[AccessEntry], **kw: Any) -> list[alog.GroupView]:
    return [alog.describe(g, ZH, ORGS, kw.get("delegates", {})) for g in alog.group_entries(entries)]


def test_one_doctors_sitting_is_one_group_with_count_kinds_and_span() -> None:
    rows = [entry(i * 0.1, kinds=k) for i, k in enumerate(
        [("Observation", "Observation"), ("DiagnosticReport", "DiagnosticReport", "Observation"),
         ("MedicationRequest", "Organization")] * 4)]
    [g] = view(rows)
    assert g.count == 12
    assert g.who == "张医生" and g.role == "医生" and g.organization == "北京市第一医院"
    assert g.purpose == "正在为您诊疗"
    # the kinds, most touched first, each named once, the items counted (directory entries not)
    assert g.summary == "查看了 12 次（共 24 项记录）：检验检查结果、检验检查报告、用药"
    assert g.span == "2026-12-07 14:03 至 14:04"
    assert g.outcome_label == "已查看" and g.outcome_note == ""
    assert [r.time for r in g.rows][:1] == ["14:04"] and len(g.rows) == 12  # newest first


def test_session_token_keeps_a_slow_sitting_together_and_splits_two_sign_ins() -> None:
    # the same token across a gap longer than the window: one sitting
    same = [entry(0, session="tok-a"), entry(40, session="tok-a")]
    assert [g.count for g in alog.group_entries(same)] == [2]
    # two sign-ins (two tokens) an hour apart: two groups, newest first
    two = [entry(0, session="tok-a"), entry(60, session="tok-b"), entry(61, session="tok-b")]
    groups = alog.group_entries(two)
    assert [g.count for g in groups] == [2, 1]
    assert groups[0].last_ms > groups[1].last_ms
    # a renewed token a few minutes later (a page session's refresh) does not split the sitting
    renewed = [entry(0, session="tok-a"), entry(3, session="tok-b")]
    assert [g.count for g in alog.group_entries(renewed)] == [2]


def test_without_a_token_the_window_decides() -> None:
    rows = [entry(m, session=None) for m in (0, 4, 9, 30, 31)]
    # 0-4-9 chain within 10 minutes; 30 is 21 minutes after 9: a new sitting
    assert [g.count for g in alog.group_entries(rows)] == [2, 3]
    assert [g.count for g in alog.group_entries(rows, window_ms=30 * MIN)] == [5]


def test_a_group_never_crosses_a_beijing_day() -> None:
    late = int(datetime(2026, 12, 7, 23, 58, tzinfo=BJ).timestamp() * 1000)
    rows = [entry(0, time_ms=late), entry(0, time_ms=late + 4 * MIN)]
    assert [g.count for g in alog.group_entries(rows)] == [1, 1]


def test_person_institution_purpose_and_outcome_each_split() -> None:
    base = entry(0)
    others = [entry(0.5, account_id="acct-doc2", who="李医生"), entry(0.6, organization="H002"),
              entry(0.7, purpose="consent"), entry(0.8, outcome="4", purpose=None, code="HT-0103")]
    groups = alog.group_entries([base, *others])
    assert len(groups) == 5 and all(g.count == 1 for g in groups)
    # interleaved rows of one key still join their group
    mixed = [entry(0), entry(1, account_id="acct-doc2", who="李医生"), entry(2), entry(3, account_id="acct-doc2",
                                                                                   who="李医生")]
    assert sorted(g.count for g in alog.group_entries(mixed)) == [2, 2]


def test_refused_attempt_says_why_in_plain_words() -> None:
    [g] = view([entry(0, outcome="4", purpose=None, code="HT-0103", kinds=()),
                entry(0.2, outcome="4", purpose=None, code="HT-0103", kinds=())])
    assert g.outcome_label == "被拒绝"
    assert g.outcome_note.startswith("该医生近期没有为您诊疗的记录，也没有您的授权")
    assert "没有让其看到您的档案" in g.outcome_note
    assert g.summary == "尝试 2 次"
    assert g.purpose == "没有查看依据"
    [other] = view([entry(0, outcome="4", code="HT-0104", role="commission", who="王专员")])
    assert other.outcome_note.startswith("该人员的身份不能查看居民档案")
    [unknown] = view([entry(0, outcome="4", code=None)])
    assert unknown.outcome_note.startswith("该医生没有查看您档案的权限")


def test_unfinished_attempts_are_explained() -> None:
    [read] = view([entry(0, outcome="8", code="HT-0041")])
    assert read.outcome_label == "未完成"
    assert "对方没有得到您的档案内容" in read.outcome_note and "没有被更改" in read.outcome_note
    # the old unexplained "核对身份 · 查看全部档案 — 未完成": platform staff's identity check that did not complete
    [ident] = view([entry(0, outcome="8", purpose="identity", action="operation", role="commission",
                          who="王专员", organization=None, interaction="POST /console/identity/{review_id}/link",
                          kinds=())])
    assert ident.summary == "核对身份 1 次"
    assert ident.outcome_note.startswith("核对身份的操作没有完成")
    assert "是否属于您本人" in ident.purpose_note
    assert ident.organization == "区域健康信息平台" and ident.role == "卫健委工作人员"
    # a doctor's identity look-up is not "platform staff checking"
    [lookup] = view([entry(0, purpose="identity", action="search", kinds=("Patient",))])
    assert lookup.summary == "核对身份 1 次：基本信息" and "居民索引" in lookup.purpose_note
    assert "平台工作人员" not in lookup.purpose_note
    [fault] = view([entry(0, outcome="12")])
    assert fault.outcome_label == "未完成" and fault.outcome_note.startswith("平台出现故障")


def test_break_glass_claim_and_reads_are_one_group_with_the_reason_and_review() -> None:
    claim = entry(0, action="break-glass", purpose="break-glass", break_glass=True,
                  reason="患者昏迷送医，需查过敏史", kinds=(), interaction="POST /fhir/Patient/{id}/$break-glass")
    read = entry(0.5, action="operation", purpose="break-glass", break_glass=True,
                 kinds=("Patient", "AllergyIntolerance", "Condition"),
                 interaction="GET /fhir/Patient/{id}/$everything")
    [g] = view([claim, read])
    assert g.break_glass and g.reasons == ("患者昏迷送医，需查过敏史",)
    assert g.summary == "申请紧急查看 1 次，查看了 1 次（共 3 项记录）：全部档案"
    assert "复核" in ZH("alog.glass_note")


def test_own_delegate_system_and_platform_are_told_apart() -> None:
    own = entry(0, relation="self", role="resident", who="acct-me", account_id="acct-me", organization=None,
                purpose="own-record")
    deleg = entry(20, relation="delegate", role="delegate", who="acct-d1", account_id="acct-d1",
                  organization=None, purpose="delegate")
    his = entry(40, role="institution", who="LIS", account_id="acct-his", action="hl7", purpose="own-institution",
                kinds=("Observation",) * 5 + ("DiagnosticReport",), interaction="hl7 ORU^R01", session=None)
    plat = entry(60, role="platform", who="local command line", account_id="local-cli", organization=None,
                 action="update", purpose="platform", kinds=("Patient",), session=None)
    by = {g.actor: g for g in view([own, deleg, his, plat], delegates={"acct-d1": "王小明"})}
    assert by["self"].who == "您本人" and by["self"].purpose == "本人查看"
    assert by["delegate"].who == "家属代办：王小明" and by["delegate"].purpose == "家人代办"
    assert by["system"].who == "医院信息系统" and by["system"].role == "机器自动访问（不是人在查看）"
    assert by["system"].organization == "北京市第一医院"
    assert by["system"].summary == "发送了 1 次数据（共 6 项记录）：检验检查结果、检验检查报告"
    assert by["system"].outcome_label == "已存入您的档案"
    # an API write carries no basis of its own: an institution writes its own patients' records
    [api] = view([entry(0, role="institution", who="HIS", account_id="acct-his", action="create", purpose=None)])
    assert api.purpose == "在本院就诊" and api.summary == "发送了 1 次数据：检验检查结果"
    assert by["platform"].who.startswith("区域健康信息平台") and "不是某个人" in by["platform"].purpose_note
    # a delegate whose account has no name is not shown by their account id
    [anon] = view([deleg])
    assert anon.who == "家属代办人"


def test_a_staff_account_without_a_name_and_an_unknown_institution_show_no_raw_id() -> None:
    [g] = view([entry(0, who="acct-x9", account_id="acct-x9", organization="H999")])
    assert g.who == "未登记姓名的工作人员" and g.organization == ""
    [sent] = view([entry(0, role="institution", who="HIS", account_id="acct-his", action="hl7", outcome="8",
                         code="HT-0302", purpose="own-institution")])
    assert sent.outcome_note.startswith("该机构发送的数据有误")


def test_every_word_is_chinese_no_ascii_words_or_ids() -> None:
    rows = [entry(0), entry(1, outcome="4", code="HT-0103"), entry(2, outcome="8"),
            entry(3, role="institution", action="hl7", who="HIS"), entry(4, relation="self", role="resident"),
            entry(5, break_glass=True, purpose="break-glass", action="break-glass", reason="抢救需要查看过敏史")]
    for g in view(rows):
        text = " ".join([g.who, g.role, g.organization, g.purpose, g.purpose_note, g.summary, g.outcome_label,
                         g.outcome_note, *(f"{r.time} {r.what} {r.outcome}" for r in g.rows)])
        assert not re.search(r"[A-Za-z]{2,}", text), text


def test_english_words_have_no_chinese() -> None:
    en = Translator("en")
    rows = [entry(0), entry(1, outcome="4", code="HT-0103"), entry(2, outcome="8", purpose="identity"),
            entry(3, role="institution", action="hl7", who="HIS", kinds=("Observation", "Condition")),
            entry(5, break_glass=True, purpose="break-glass", action="break-glass", reason="x")]
    for g in alog.group_entries(rows):
        v = alog.describe(g, en, ORGS, {})
        text = " ".join([v.role, v.purpose, v.purpose_note, v.summary, v.outcome_label, v.outcome_note,
                         v.span])
        assert not re.search(r"[\u4e00-\u9fff]", text), text
    [v] = [alog.describe(g, en, ORGS, {}) for g in alog.group_entries([entry(0), entry(1, kinds=("Condition",))])]
    assert v.summary == "looked 2 times: diagnoses, test results"  # equal counts: the newest row's kind first
