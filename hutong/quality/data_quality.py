"""Data quality of what institutions send: the warnings their accepted messages carried.

A message that is stored but not as sent (a demographic code outside its table
mapped or left unknown, CDA sections outside ``structuredBody`` so nothing was
extracted, a re-used MSH-10) is answered with a warning (HL7 AA with an ERR of
severity W, ch. 2.15.5.4; the CDA answer's ``warning``) and its inbox row keeps
the note's stable code.  The commission sees the counts per institution and
code, and the rows behind them (``hutong ingest flagged``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from hutong.errors import CODES
from hutong.quality.quality_store import note_counts
from hutong.store.repository import Repository

# The notes that say something about the data an institution sends (the HT-0195 note,
# a merge waiting for review, is a process state, not a data problem).
DATA_QUALITY = ("HT-0260", "HT-0264", "HT-0265")


@dataclass(frozen=True, slots=True)
class QualityCount:
    institution: str
    code: str
    label: str
    messages: int


def data_quality(repo: Repository, *, start: date, end: date) -> list[QualityCount]:
    """Per institution and data-quality code: how many messages received in the period
    (Beijing days, inclusive) were stored with that warning."""
    out = []
    for inst, per in sorted(note_counts(repo, start=start, end=end).items()):
        for code in DATA_QUALITY:
            if per.get(code):
                out.append(QualityCount(inst, code, CODES[code], per[code]))
    return out
