"""Recent equivalent results elsewhere (检查检验结果互认, mutual recognition of results).

For each lab code (LOINC when coded so) the newest result from an institution
other than the viewer's own within :data:`LAB_WINDOW_DAYS`, and for each
imaging modality (DICOM CT, MR, DX ...) the newest study from another
institution within :data:`IMAGING_WINDOW_DAYS`: what a clinician about to
order the same test should see first.  Today this is the clinician record's
passive panel; the order-time CDS hook (order-select / order-sign, CDS Hooks
2.0) will apply the same rule.

It works on any items shaped like the record model's (structural Protocols,
so the rule does not depend on where the items came from).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol

LAB_WINDOW_DAYS = 30       # a lab value older than this is not "recent" for mutual recognition
IMAGING_WINDOW_DAYS = 180  # imaging stays relevant longer


class SourceLike(Protocol):
    @property
    def org_id(self) -> str: ...
    @property
    def name(self) -> str: ...


class LabLike(Protocol):
    @property
    def code(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def date(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def source(self) -> SourceLike: ...


class ImagingLike(Protocol):
    @property
    def started(self) -> str: ...
    @property
    def modalities(self) -> list[str]: ...
    @property
    def description(self) -> str: ...
    @property
    def conclusion(self) -> str: ...
    @property
    def source(self) -> SourceLike: ...


@dataclass(frozen=True, slots=True)
class Equivalent:
    """The newest comparable result from another institution."""

    kind: str            # lab | imaging
    code: str            # the lab code, or the imaging modality
    name: str
    date: str
    value: str           # the lab value with its unit, or the imaging conclusion
    age_days: int
    source: SourceLike


def recent_equivalents(labs: Iterable[LabLike], imaging: Iterable[ImagingLike], own_org: str | None,
                       now: datetime) -> list[Equivalent]:
    """Labs by code within LAB_WINDOW_DAYS, imaging by modality within IMAGING_WINDOW_DAYS, each the newest
    from an institution other than ``own_org`` (items of unknown institution never count)."""
    today = now.date()
    lab_cut = (today - timedelta(days=LAB_WINDOW_DAYS)).isoformat()
    img_cut = (today - timedelta(days=IMAGING_WINDOW_DAYS)).isoformat()
    out: list[Equivalent] = []
    seen: set[str] = set()
    for x in sorted(labs, key=lambda x: x.date, reverse=True):
        if not x.code or x.code in seen or x.source.org_id in ("", own_org) or x.date[:10] < lab_cut:
            continue
        seen.add(x.code)
        out.append(Equivalent("lab", x.code, x.name, x.date, f"{x.value} {x.unit}".strip(), _age(today, x.date),
                              x.source))
    seen.clear()
    for s in sorted(imaging, key=lambda s: s.started, reverse=True):
        if s.source.org_id in ("", own_org) or s.started[:10] < img_cut:
            continue
        for m in s.modalities or [""]:
            if m in seen:
                continue
            seen.add(m)
            out.append(Equivalent("imaging", m, s.description, s.started, s.conclusion, _age(today, s.started),
                                  s.source))
    return out


def _age(today: date, when: str) -> int:
    try:
        return max((today - datetime.fromisoformat(when[:10]).date()).days, 0)
    except ValueError:
        return 0
