"""Per-institution figures for the commission's dashboard (issue 7: "the
information centre must see the region"): connection status, message volume,
dead letters, next-day timeliness (次日归集率) and the records each
institution holds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hutong.quality.connection import DOWN, ONLINE, SILENT, status_of
from hutong.quality.quality_store import RecordCounts, record_counts, timeliness
from hutong.systems import ORGANIZATION

__all__ = ["InstitutionRow", "RecordCounts", "institution_rows", "record_counts", "timeliness"]


@dataclass
class InstitutionRow:
    id: str
    name: str
    code: str
    status: str
    last_ms: int | None
    last_kind: str
    messages: int
    dead: int
    timely: float | None
    patients: int
    records: int
    stored_ms: int | None


def _parse_iso_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def institution_rows(orgs: list[dict[str, Any]], report: dict[str, Any],
                     counts: RecordCounts, now_ms: int) -> list[InstitutionRow]:
    """One row per registered Organization: inbox figures joined by its code
    (the HL7 sender / CDA custodian is the institution identifier)."""
    per: dict[str, dict[str, Any]] = {}
    for d in report["days"]:
        p = per.setdefault(d["institution"], {"messages": 0, "dead": 0, "within": 0.0, "known": 0})
        p["messages"] += d["messages"]
        p["dead"] += d["dead_letters"]
        hist = d["delay_hours"]
        known = sum(v for k, v in hist.items() if k != "unknown")
        p["known"] += known
        p["within"] += hist["lt1h"] + hist["lt6h"] + hist["lt24h"]
    rows = []
    for o in orgs:
        code = next((i.get("value", "") for i in o.get("identifier") or () if i.get("system") == ORGANIZATION), "")
        last_ms: int | None = None
        last_kind = ""
        for ch in (report["last_seen"].get(code) or {}).values():
            t = _parse_iso_ms(ch["received"])
            if last_ms is None or t > last_ms:
                last_ms, last_kind = t, ch["kind"]
        p = per.get(code, {"messages": 0, "dead": 0, "within": 0.0, "known": 0})
        patients, records, stored = counts.get(o["id"], (0, 0, None))
        rows.append(InstitutionRow(
            id=o["id"], name=o.get("name") or code or o["id"], code=code, status=status_of(last_ms, now_ms),
            last_ms=last_ms, last_kind=last_kind, messages=p["messages"], dead=p["dead"],
            timely=round(100 * p["within"] / p["known"], 1) if p["known"] else None,
            patients=patients, records=records, stored_ms=stored))
    rows.sort(key=lambda r: ({DOWN: 0, SILENT: 1, ONLINE: 2}[r.status], r.name))
    return rows
