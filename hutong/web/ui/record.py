"""The longitudinal record's presentation, shared by both portals.

The record itself is :mod:`hutong.record` (one model, built once from
``$everything``); this module holds what both portals show of it the same
way: the words of a result's flag (templates/_record.html renders them with
the disagreement note of hutong.record.flags), a trend chart's Chart.js
configuration and the lab results grouped by report.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from hutong.record.model import LabReport, LabResult
from hutong.web.ui import i18n

i18n.add({
    # hutong.record.flags verdicts: a word and an arrow, never colour alone
    "rec.flag.H": ("偏高 ↑", "High ↑"),
    "rec.flag.L": ("偏低 ↓", "Low ↓"),
    "rec.flag.A": ("异常 !", "Abnormal !"),
    "rec.flag.N": ("正常", "Normal"),
    "rec.flag.unknown": ("—", "—"),
    "rec.word.H": ("偏高", "high"),
    "rec.word.L": ("偏低", "low"),
    "rec.word.A": ("异常", "abnormal"),
    "rec.word.N": ("正常", "normal"),
    "rec.disagree": ("判读不一致（{sender}；{range}）", "Readings disagree ({sender}; {range})"),
    "rec.sender_said": ("院方判读：{v}", "the institution reported it {v}"),
    "rec.range.H": ("超出参考范围 {range}", "outside the reference range {range}"),
    "rec.range.L": ("超出参考范围 {range}", "outside the reference range {range}"),
    "rec.range.N": ("在参考范围 {range} 内", "within the reference range {range}"),
    "rec.unit_mismatch": ("单位与参考范围不同，未作比较", "unit differs from the reference range: not compared"),
    "rec.critical": ("危急值", "critical value"),
    "rec.upper": ("参考上限", "Upper limit"),
    "rec.lower": ("参考下限", "Lower limit"),
})


def _day(when: str) -> float:
    """Days since 1970-01-01 of a result's date ('YYYY-MM-DD' or 'YYYY-MM-DD HH:MM',
    the institution's local time), for a time axis."""
    try:
        t = datetime.fromisoformat(when[:16].replace(" ", "T")) if len(when) >= 16 else None
    except ValueError:
        t = None
    if t is not None:
        return (t - datetime(1970, 1, 1)).total_seconds() / 86400
    try:
        return float(date.fromisoformat(when[:10]).toordinal() - date(1970, 1, 1).toordinal())
    except ValueError:
        return 0.0


def trend_chart(points: Sequence[LabResult], t: i18n.Translator) -> dict[str, Any]:
    """A Chart.js 4 line chart of one test's values over time (oldest first),
    with the reference range of the newest value as two dashed lines.

    The x axis is time (days since 1970; static/app.js writes the ticks as dates):
    values a week apart and a year apart are not drawn the same distance apart
    (issue 16, item 5), which an evenly spaced category axis did."""
    last = points[-1]
    days = [_day(p.date) for p in points]
    ends = [days[0], days[-1]]
    datasets: list[dict[str, Any]] = [{
        "label": f"{last.name} ({last.unit})" if last.unit else last.name,
        "data": [{"x": d, "y": p.number} for d, p in zip(days, points, strict=True)],
        "borderColor": "#0b5cad", "backgroundColor": "#0b5cad", "tension": 0, "pointRadius": 3}]
    if last.high is not None:
        datasets.append({"label": t("rec.upper"), "data": [{"x": d, "y": last.high} for d in ends],
                         "borderColor": "#a40e26", "borderDash": [6, 4], "pointRadius": 0, "borderWidth": 1,
                         "fill": False})
    if last.low is not None:
        datasets.append({"label": t("rec.lower"), "data": [{"x": d, "y": last.low} for d in ends],
                         "borderColor": "#8a4b00", "borderDash": [2, 3], "pointRadius": 0, "borderWidth": 1,
                         "fill": False})
    return {"type": "line", "data": {"datasets": datasets},
            "options": {"animation": False, "maintainAspectRatio": False, "responsive": True,
                        "scales": {"x": {"type": "linear", "hutongDays": True}},
                        "plugins": {"legend": {"display": True, "position": "bottom"}}}}


def grouped_labs(reports: Sequence[LabReport], limit: int) -> tuple[list[tuple[LabReport, list[LabResult]]], int]:
    """Lab results as the reports that hold them, newest report first, each with
    its out-of-range results first (issue 16, item 5: a flat table of 239 rows
    hid the abnormal ones); whole reports up to about ``limit`` results.
    Returns the groups and the number of results they show."""
    out: list[tuple[LabReport, list[LabResult]]] = []
    shown = 0
    for rep in reports:  # hutong.record keeps them newest first
        if out and shown + len(rep.results) > limit:
            break
        ordered = sorted(rep.results, key=lambda x: not x.flag.abnormal)  # stable: the report's own order
        out.append((rep, ordered))
        shown += len(ordered)
    return out, shown
