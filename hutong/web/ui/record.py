"""The longitudinal record's presentation, shared by both portals.

The record itself is :mod:`hutong.record` (one model, built once from
``$everything``); this module holds what both portals show of it the same
way: the words of a result's flag (templates/_record.html renders them with
the disagreement note of hutong.record.flags) and a trend chart's Chart.js
configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hutong.record.model import LabResult
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


def trend_chart(points: Sequence[LabResult], t: i18n.Translator) -> dict[str, Any]:
    """A Chart.js 4 line chart of one test's values over time (oldest first),
    with the reference range of the newest value as two dashed lines."""
    last = points[-1]
    n = len(points)
    datasets: list[dict[str, Any]] = [{
        "label": f"{last.name} ({last.unit})" if last.unit else last.name, "data": [p.number for p in points],
        "borderColor": "#0b5cad", "backgroundColor": "#0b5cad", "tension": 0, "pointRadius": 3}]
    if last.high is not None:
        datasets.append({"label": t("rec.upper"), "data": [last.high] * n, "borderColor": "#a40e26",
                         "borderDash": [6, 4], "pointRadius": 0, "borderWidth": 1, "fill": False})
    if last.low is not None:
        datasets.append({"label": t("rec.lower"), "data": [last.low] * n, "borderColor": "#8a4b00",
                         "borderDash": [2, 3], "pointRadius": 0, "borderWidth": 1, "fill": False})
    return {"type": "line", "data": {"labels": [p.date[:10] for p in points], "datasets": datasets},
            "options": {"animation": False, "maintainAspectRatio": False, "responsive": True,
                        "plugins": {"legend": {"display": True, "position": "bottom"}}}}
