"""WS/T 500 (CDA R2) documents as readable, safe HTML.

The document is parsed by the ingestion's safe parser
(:func:`hutong.ingest.cda.parse.parse_xml`: no network, no entities, no DTD,
size-bounded).  What is shown:

- the header (CDA R2 §4.2; WS/T 500.n §5 文档头): title, patient name, author,
  custodian, effective time;
- each section (CDA R2 §4.3.5, nested ones included) with its title and its
  narrative block (CDA R2 §4.3.5.1, ``section/text``).  The narrative's
  elements (paragraph, list/item, table/thead/tbody/tr/td/th/caption,
  content, br, sub, sup, footnote) are translated into HTML elements built
  here, from escaped text: nothing of the XML (no attribute, no ``linkHtml``
  target, no ``renderMultiMedia`` reference, no style) passes through as HTML.
  WS/T 500 documents often leave the narrative empty and carry only coded
  entries; then the entries' data element names and values are listed
  (``observation/code/@displayName`` → ``value``), so the section still reads.

A section without ``title`` is named from its LOINC section code (the ones
WS/T 500 uses most), else the code's ``displayName``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

from hutong.ingest.cda.parse import NS, CdaError, Node, parse_xml, sections

CDA_CONTENT_TYPES = frozenset({"application/hl7-cda+xml", "application/xml", "text/xml"})

# LOINC section codes (WS/T 500 sections) -> zh-CN titles, for sections without <title>.
SECTION_TITLES: dict[str, str] = {
    "48765-2": "过敏史", "10154-3": "主诉", "10164-2": "现病史", "11348-0": "既往史", "8716-3": "生命体征",
    "29545-1": "体格检查", "29548-5": "诊断", "11450-4": "问题列表", "18776-5": "治疗计划", "10160-0": "用药",
    "30954-2": "检查检验结果", "46264-8": "医疗器械", "47519-4": "手术操作", "11535-2": "出院诊断",
    "11537-8": "治疗记录", "8648-8": "住院过程", "42344-2": "出院饮食", "10183-2": "出院带药",
    "18748-4": "检查报告", "11502-2": "检验报告", "48768-6": "费用", "46240-8": "住院史", "10157-6": "家族史",
    "29762-2": "个人史", "10162-6": "婚育史", "46209-3": "医嘱", "51848-0": "评估", "55109-3": "并发症",
    "42349-1": "入院原因", "46241-6": "入院诊断",
}
# Narrative elements (CDA R2 §4.3.5.1) -> the HTML element shown for each.
_BLOCK = {"paragraph": "p", "list": "ul", "item": "li", "table": "table", "thead": "thead", "tbody": "tbody",
          "tfoot": "tfoot", "tr": "tr", "td": "td", "th": "th", "caption": "caption", "content": "span",
          "sub": "sub", "sup": "sup", "footnote": "small", "footnoteRef": "small"}
_SKIP = frozenset({"renderMultiMedia", "colgroup", "col"})
MAX_DEPTH = 30  # narrative nesting deeper than this is flattened to text


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    html: Markup
    depth: int


@dataclass(slots=True)
class RenderedCda:
    title: str
    code: str
    patient: str
    author: str
    custodian: str
    effective: str
    sections: list[Section] = field(default_factory=list)


def _local(e: Any) -> str | None:
    tag = e.tag
    if not isinstance(tag, str) or not tag.startswith("{" + NS + "}"):
        return None
    return tag[len(NS) + 2:]


def _time(ts: str | None) -> str:
    """'20240310095512' -> '2024-03-10 09:55' (WS/T 500 local time, as written)."""
    if not ts:
        return ""
    d = ts.strip()
    out = d[:4]
    if len(d) >= 8:
        out = f"{d[:4]}-{d[4:6]}-{d[6:8]}"
    if len(d) >= 12:
        out += f" {d[8:10]}:{d[10:12]}"
    return out


def _narrative(e: Any, depth: int = 0) -> str:
    """HTML for the children of a narrative element (text escaped, elements rebuilt)."""
    parts: list[str] = [str(escape(e.text)) if e.text else ""]
    for child in e:
        name = _local(child)
        if name is None or name in _SKIP:
            pass  # foreign elements and comments: nothing of them is shown
        elif name == "br":
            parts.append("<br>")
        elif depth >= MAX_DEPTH:
            parts.append(str(escape(" ".join("".join(child.itertext()).split()))))
        elif name == "list":
            tag = "ol" if (child.get("listType") or "").strip() == "ordered" else "ul"
            parts.append(f"<{tag}>{_narrative(child, depth + 1)}</{tag}>")
        elif name == "table":
            parts.append(f'<div class="table-wrap"><table>{_narrative(child, depth + 1)}</table></div>')
        elif name in _BLOCK:
            tag = _BLOCK[name]
            parts.append(f"<{tag}>{_narrative(child, depth + 1)}</{tag}>")
        else:  # linkHtml and anything unknown: its text only
            parts.append(f"<span>{_narrative(child, depth + 1)}</span>")
        if child.tail:
            parts.append(str(escape(child.tail)))
    return "".join(parts)


def _value(v: Node) -> str:
    """A CDA data value as text (CDA R2 data types: PQ, CD/CE/CV, ST, BL, TS, IVL_PQ ...)."""
    kind = v.xsi_type or ""
    if kind in ("PQ", "INT", "REAL", "MO"):
        return _quantity(v)
    if kind in ("CD", "CE", "CV", "CS", "CO"):
        return v.attr("displayName") or v.text or v.attr("code") or ""
    if kind == "BL":
        return {"true": "是", "false": "否"}.get(v.attr("value") or "", v.attr("value") or "")
    if kind == "TS":
        return _time(v.attr("value"))
    if kind.startswith("IVL"):
        ends = [_quantity(n) for n in (v.first("low"), v.first("high")) if n is not None]
        return "-".join(x for x in ends if x)
    return v.text or v.attr("value") or v.attr("displayName") or ""


def _quantity(n: Node) -> str:
    return " ".join(x for x in (n.attr("value"), n.attr("unit")) if x and x != "1")


def _entries(section: Node) -> str:
    """Coded entries listed as name → value, when the narrative is empty."""
    rows: list[tuple[str, str]] = []
    for entry in section.all("entry"):
        for e in entry._e.iter():
            name = _local(e)
            if name in ("observation", "substanceAdministration", "procedure", "act", "encounter"):
                n = Node(e)
                label = n.at("code", "displayName") or n.text_at("code/originalText") or n.at("code", "code") or ""
                v = n.first("value")
                if name == "substanceAdministration":
                    value = n.text_at("text") or n.text_at("consumable/manufacturedProduct/manufacturedLabeledDrug"
                                                           "/name")
                elif v is not None:
                    value = _value(v)
                else:
                    value = n.text_at("text")
                if value or label:
                    rows.append((label, value))
            if len(rows) >= 500:
                break
    if not rows:
        return ""
    body = "".join(f"<tr><th scope=\"row\">{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<div class="table-wrap"><table class="cda-entries">{body}</table></div>'


def _depth(s: Node) -> int:
    d = 0
    e = s._e.getparent()
    while e is not None:
        if _local(e) == "section":
            d += 1
        e = e.getparent()
    return d


def section_title(s: Node) -> str:
    t = s.text_at("title")
    if t:
        return t
    code = s.at("code", "code")
    if code and code in SECTION_TITLES:
        return SECTION_TITLES[code]
    return s.at("code", "displayName") or code or ""


def render(xml: bytes) -> RenderedCda:
    """Parse (safely) and render one CDA document; raises CdaError when unreadable."""
    root = parse_xml(xml)
    patient = root.text_at("recordTarget/patientRole/patient/name")
    author = root.text_at("author/assignedAuthor/assignedPerson/name") or \
        root.text_at("author/assignedAuthor/representedOrganization/name")
    custodian = root.text_at("custodian/assignedCustodian/representedCustodianOrganization/name")
    out = RenderedCda(title=root.text_at("title"), code=root.at("code", "code") or "", patient=patient,
                      author=author, custodian=custodian, effective=_time(root.at("effectiveTime", "value")))
    for s in sections(root.first("component/structuredBody")):
        text = s.first("text")
        html = _narrative(text._e) if text is not None else ""
        if not html.strip():
            html = _entries(s)
        out.sections.append(Section(section_title(s), Markup(html), _depth(s)))  # noqa: S704 (built from escaped text)
    body = root.first("component/nonXMLBody/text")
    if body is not None and not out.sections and body.attr("mediaType") in (None, "text/plain"):
        # A non-XML body (CDA R2 §4.3.1): plain text only; other media types are not shown inline.
        out.sections.append(Section("", Markup(f"<pre>{escape(body.text)}</pre>"), 0))  # noqa: S704
    return out


def render_text(data: bytes) -> RenderedCda:
    """A plain-text document (text/plain attachment) shown as preformatted text."""
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines()
    title = lines[0].strip() if lines else ""
    return RenderedCda(title=title, code="", patient="", author="", custodian="", effective="",
                       sections=[Section("", Markup(f"<pre class=\"doc-text\">{escape(text)}</pre>"), 0)])  # noqa: S704


__all__ = ["CDA_CONTENT_TYPES", "CdaError", "RenderedCda", "Section", "render", "render_text"]
