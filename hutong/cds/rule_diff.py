"""What changed between two rule versions, in plain words (zh-CN), for the committee member who reviews.

Seed 004 (国卫办医发〔2018〕20号) has the committee approve decision-support rules; a reviewer must
see what a new version changes before approving it.  For the 互认 knowledge the rows come from
:func:`hutong.cds.knowledge.diff` (items, windows and scope marks per region, 负面清单, situation
triggers, QC rows, local codes); for the safety configuration (hutong.cds.safety_config) the
conflicts, the privilege checks' actions and the antibiotic tiers are compared here.  Each change
is one sentence: ``(section, sign, words)`` with sign ``+`` added, ``-`` removed, ``~`` changed.
Pure; no ids beyond the codes the knowledge itself is written in.
"""

from __future__ import annotations

from typing import Any

from hutong.cds.knowledge import ALL_ITEMS, ALWAYS, KnowledgeSet, diff

Change = tuple[str, str, str]   # (section words, "+" | "-" | "~", sentence)

SECTIONS = {"items": "互认项目", "regions": "可互认时间与互认标识", "negatives": "负面清单",
            "triggers": "情形的识别方式", "quality": "机构质控", "local_codes": "机构本地编码",
            "conflicts": "药物过敏规则", "privileges": "权限核对", "tiers": "抗菌药物分级", "title": "名称"}
KINDS = {"lab": "检验", "imaging": "检查"}
ACTIONS = {"hard-stop": "禁止（不可越过）", "warning": "警示（可说明理由后继续）"}
CHECKS = {"prescribing": "处方权", "antibiotic": "抗菌药物分级", "surgery": "手术分级"}
TIERS = {1: "非限制使用级", 2: "限制使用级", 3: "特殊使用级"}
TRIGGER_KINDS = {"priority": "医嘱优先级", "encounter_class": "就诊类型", "code": "诊断编码",
                 "code_prefix": "诊断编码前缀"}


def _region(code: str) -> str:
    return {"11": "北京", "12": "天津", "13": "河北"}.get(code, f"地区{code}")


def _item_words(r: dict[str, Any]) -> str:
    kind = KINDS.get(str(r.get("kind")), "")
    if r.get("kind") == "lab":
        code = f"LOINC {r.get('loinc')}" if r.get("loinc") else ""
    else:
        code = str(r.get("modality") or "")   # DICOM modality (CT, MR, US, DX) as reports print it
    return f"{r.get('name')}（{kind}{'，' + code if code else ''}）"


# The seed's situations by name (a situation without triggers has no name in the rows).
SITUATIONS = {"emergency": "急诊、抢救", "pregnancy": "妊娠", "acute-change": "病情急性变化"}


def _org(names: dict[str, str], code: str) -> str:
    return names.get("org:" + code) or f"机构 {code} "


def _items(names: dict[str, str], key: str) -> str:
    if key == ALL_ITEMS:
        return "全部项目"
    return names.get(key, key)


def recognition(old: KnowledgeSet, new: KnowledgeSet, institutions: dict[str, str] | None = None) -> list[Change]:
    """The 互认 knowledge's changes from ``old`` to ``new``, one sentence each; ``institutions``
    names institutions by their 机构代码 (else the code is shown)."""
    names = {i.key: i.name for i in (*old.items, *new.items)}
    names.update({f"situation:{k}": v for k, v in SITUATIONS.items()})
    names.update({f"situation:{t.situation}": t.name for t in (*old.triggers, *new.triggers)})
    names.update({f"org:{k}": v for k, v in (institutions or {}).items()})
    out: list[Change] = []
    if old.title != new.title:
        out.append((SECTIONS["title"], "~", f"名称由“{old.title}”改为“{new.title}”"))
    for section, part in diff(old, new).items():
        words = SECTIONS.get(section, section)
        for r in part.get("added", []):
            out.append((words, "+", "新增" + _row_words(section, r, names)))
        for r in part.get("removed", []):
            out.append((words, "-", "删除" + _row_words(section, r, names)))
        for ch in part.get("changed", []):
            out.append((words, "~", _changed_words(section, ch["from"], ch["to"], names)))
    return out


def _row_words(section: str, r: dict[str, Any], names: dict[str, str]) -> str:
    if section == "items":
        return "项目 " + _item_words(r)
    if section == "regions":
        return (f"{_items(names, r['item'])}在{_region(r['region'])}的互认：可互认时间 {r['window_days']} 天，"
                f"标识 {r['scope_mark']}")
    if section == "negatives":
        what = _items(names, r["item"])
        if r["situation"] == ALWAYS:
            return f"{what}：任何情形下都不互认"
        return f"{what}：在“{names.get('situation:' + r['situation'], r['situation'])}”情形下不互认"
    if section == "triggers":
        kind = TRIGGER_KINDS.get(r["kind"], r["kind"])
        return f"“{r['name']}”情形的识别：{kind} {r['value']}"
    if section == "quality":
        verdict = "合格" if r["passed"] else "不合格"
        return (f"{_org(names, r['institution'])}的{r['program']}（{_items(names, r['item'])}）：{verdict}，"
                f"有效期 {r['valid_from']} 至 {r['valid_to']}")
    if section == "local_codes":
        return (f"{_org(names, r['institution'])}的本地编码 {r['code']}（{r.get('display') or '无名称'}）"
                f"对应 {_items(names, r['item'])}")
    return str(r)


FIELDS = {"name": "名称", "kind": "类别", "loinc": "LOINC 编码", "modality": "检查设备类型", "body_site": "部位",
          "proc_system": "检查项目编码体系", "proc_code": "检查项目编码", "window_days": "可互认时间（天）",
          "scope_mark": "互认标识", "passed": "质控结果", "valid_to": "有效期至", "display": "名称",
          "item": "对应项目", "institution": "机构", "name_": "情形名称"}


def _changed_words(section: str, a: dict[str, Any], b: dict[str, Any], names: dict[str, str]) -> str:
    if section == "items":
        head = f"项目 {names.get(str(a.get('key')), a.get('key'))}"
    elif section == "regions":
        head = f"{_items(names, a['item'])}在{_region(a['region'])}的互认"
    elif section == "quality":
        head = f"{_org(names, a['institution'])}的{a['program']}（{_items(names, a['item'])}）"
    elif section == "local_codes":
        head = f"本地编码 {a['code']}"
    else:
        head = SECTIONS.get(section, section)
    parts = []
    for k in a:
        if a[k] != b.get(k):
            old, new = a[k], b.get(k)
            if k == "passed":
                old, new = ("合格" if old else "不合格"), ("合格" if new else "不合格")
            if k == "item":
                old, new = _items(names, str(old)), _items(names, str(new))
            parts.append(f"{FIELDS.get(k, k)}由 {old if old not in (None, '') else '（无）'} "
                         f"改为 {new if new not in (None, '') else '（无）'}")
    return head + "：" + "；".join(parts)


def safety(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """The safety configuration's changes (both in the JSON form of hutong.cds.safety_config)."""
    out: list[Change] = []
    if old.get("title") != new.get("title"):
        out.append((SECTIONS["title"], "~", f"名称由“{old.get('title')}”改为“{new.get('title')}”"))

    def conflicts(d: dict[str, Any]) -> dict[tuple[str, tuple[str, ...]], dict[str, Any]]:
        return {(str(c["allergen"]), tuple(c["drugs"])): c for c in (d.get("allergy") or {}).get("conflicts", [])}

    a, b = conflicts(old), conflicts(new)
    words = SECTIONS["conflicts"]
    for k in sorted(b.keys() - a.keys()):
        c = b[k]
        out.append((words, "+", f"新增：对 {k[0]} 过敏者使用 {'、'.join(k[1])} 时{ACTIONS[c['action']]}（{c['note']}）"))
    for k in sorted(a.keys() - b.keys()):
        c = a[k]
        out.append((words, "-", f"删除：对 {k[0]} 过敏者使用 {'、'.join(k[1])} 时{ACTIONS[c['action']]}（{c['note']}）"))
    for k in sorted(a.keys() & b.keys()):
        if a[k]["action"] != b[k]["action"]:
            out.append((words, "~", f"对 {k[0]} 过敏者使用 {'、'.join(k[1])}：由{ACTIONS[a[k]['action']]}"
                                    f"改为{ACTIONS[b[k]['action']]}"))
        if a[k]["note"] != b[k]["note"]:
            out.append((words, "~", f"对 {k[0]} 过敏者使用 {'、'.join(k[1])}：说明由“{a[k]['note']}”改为"
                                    f"“{b[k]['note']}”"))
    fa, fb = (old.get("allergy") or {}).get("fallback"), (new.get("allergy") or {}).get("fallback")
    if fa != fb:
        out.append((words, "~", f"其他同类过敏的处理由{ACTIONS.get(str(fa), fa)}改为{ACTIONS.get(str(fb), fb)}"))
    pa, pb = old.get("privileges") or {}, new.get("privileges") or {}
    for check, name in CHECKS.items():
        if pa.get(check) != pb.get(check):
            out.append((SECTIONS["privileges"], "~", f"{name}不符时由{ACTIONS.get(str(pa.get(check)), pa.get(check))}"
                                                     f"改为{ACTIONS.get(str(pb.get(check)), pb.get(check))}"))
    ta, tb = pa.get("tiers") or {}, pb.get("tiers") or {}
    words = SECTIONS["tiers"]
    for drug in sorted(tb.keys() - ta.keys()):
        out.append((words, "+", f"新增药品 {drug}：{TIERS.get(tb[drug], tb[drug])}"))
    for drug in sorted(ta.keys() - tb.keys()):
        out.append((words, "-", f"删除药品 {drug}（原为{TIERS.get(ta[drug], ta[drug])}）"))
    for drug in sorted(ta.keys() & tb.keys()):
        if ta[drug] != tb[drug]:
            out.append((words, "~", f"药品 {drug} 由{TIERS.get(ta[drug], ta[drug])}改为{TIERS.get(tb[drug], tb[drug])}"))
    return out
