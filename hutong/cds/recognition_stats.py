"""The 互认 dashboard's figures: what mutual recognition did, per ordering institution, item and month.

国卫医发〔2022〕6号 (第二十七条起) and 国卫医政发〔2024〕37号 ask regions to measure recognition:
how many orders were checked, how often an equivalent result existed, how many were recognised
(the examination avoided) and why a clinician did not recognise one.  The figures come only from
what the CDS Hooks service records on the audit trail (hutong.cds.service, CDS Hooks 2.0
"Feedback"):

- ``cds-cards`` rows: per hook call, the draft orders the recognition rule checked (``checked``:
  rule, item, order) and the cards given (``cards``: uuid, rule, item, order);
- ``cds-feedback`` rows: per card, ``accepted`` (its suggestion removed the draft order: the
  result is recognised, the examination avoided) or ``overridden`` with the 不互认理由 code.

One order is one order however many hooks saw it: order-select and order-sign of the same draft
(same caller, same order id, same item) count once, and the last decision about it wins (an
info card dismissed at selection, then accepted at signing, is recognised).  The institution is
the caller's (where the examination would have been done); the month is the Beijing month of the
call.  Cost saved = examinations avoided x the item's price from the price table
(:func:`load_prices`: hutong/cds/seed/prices.json, or the file ``HUTONG_HR_PRICES`` names).

Pure apart from :func:`read_entries`, which pages through hutong.security.audit.AuditLog.search
(no SQL here).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol

import orjson

from hutong.cds.recognition import OVERRIDE_REASONS, RULE_ID
from hutong.cds.service import CARDS_ACTION, FEEDBACK_ACTION
from hutong.config import env
from hutong.errors import InvalidRequest
from hutong.security.audit import AuditEntry
from hutong.security.events import SUCCESS
from hutong.systems import REGION_TZ

PRICES = Path(__file__).resolve().parent / "seed" / "prices.json"
PRICES_ENV = "HUTONG_HR_PRICES"
NO_REASON = "none"        # an information card dismissed without a reason (order-select)
REASON_CODES = tuple(c.code for c in OVERRIDE_REASONS)
MAX_ROWS = 200_000        # audit rows read for one dashboard (newest first)
PAGE = 500


class AuditReader(Protocol):
    """What of hutong.security.audit.AuditLog this module reads."""

    def search(self, *, account: str | None = None, person: str | None = None, action: str | None = None,
               outcome: str | None = None, since: int | None = None, until: int | None = None,
               purpose: str | None = None, limit: int = 50, after_seq: int | None = None) -> list[AuditEntry]: ...


@dataclass(frozen=True, slots=True)
class Prices:
    currency: str
    title: str
    source: str
    path: str
    by_item: Mapping[str, Decimal]

    def of(self, item: str) -> Decimal | None:
        return self.by_item.get(item)


def load_prices(path: str | Path | None = None) -> Prices:
    """The price table (yuan per examination, by item key).  HT-0570 names what is wrong."""
    p = Path(path or env(PRICES_ENV) or PRICES)
    try:
        data = orjson.loads(p.read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise InvalidRequest("HT-0570", f"price table {p.name}: cannot be read as JSON ({type(e).__name__})") from e
    raw = data.get("prices") if isinstance(data, dict) else None
    if not isinstance(raw, dict):
        raise InvalidRequest("HT-0570", f"price table {p.name}: 'prices' must be an object of item -> yuan")
    out: dict[str, Decimal] = {}
    for k, v in raw.items():
        try:
            d = Decimal(str(v))
        except InvalidOperation:
            d = Decimal(-1)
        if isinstance(v, bool) or not isinstance(v, int | float | str) or not d.is_finite() or d < 0:
            raise InvalidRequest("HT-0570", f"price table {p.name}: price of {k!r} must be a number >= 0")
        out[str(k)] = d
    return Prices(str(data.get("currency") or "CNY"), str(data.get("title") or ""), str(data.get("source") or ""),
                  str(p), out)


@dataclass(slots=True)
class Cell:
    """The figures of one (month, institution, item)."""

    checked: int = 0
    found: int = 0
    recognised: int = 0
    overridden: dict[str, int] = field(default_factory=dict)   # reason code (or NO_REASON) -> orders
    saved: Decimal = Decimal(0)
    priced: bool = True

    @property
    def overridden_total(self) -> int:
        return sum(self.overridden.values())

    @property
    def avoided(self) -> int:
        """An accepted suggestion removes the draft order: the examination is not done."""
        return self.recognised

    def add(self, other: Cell) -> None:
        self.checked += other.checked
        self.found += other.found
        self.recognised += other.recognised
        for k, n in other.overridden.items():
            self.overridden[k] = self.overridden.get(k, 0) + n
        self.saved += other.saved
        self.priced = self.priced and other.priced


Key = tuple[str, str, str]   # (month YYYY-MM, ordering institution's Organization id, item key)


@dataclass(frozen=True, slots=True)
class Stats:
    cells: dict[Key, Cell]

    def months(self) -> list[str]:
        return sorted({k[0] for k in self.cells})

    def total(self, month: str | None = None, org: str | None = None, item: str | None = None) -> Cell:
        out = Cell()
        for (m, o, i), c in self.cells.items():
            if (month is None or m == month) and (org is None or o == org) and (item is None or i == item):
                out.add(c)
        return out

    def rows(self) -> list[tuple[Key, Cell]]:
        """Newest month first, then institution, then item."""
        return sorted(self.cells.items(), key=lambda kv: (tuple(-ord(ch) for ch in kv[0][0]), kv[0][1], kv[0][2]))


def month_of(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, REGION_TZ).strftime("%Y-%m")


def _json_list(v: str | None) -> list[dict[str, Any]]:
    try:
        out = orjson.loads(v or "[]")
    except orjson.JSONDecodeError:
        return []
    return [x for x in out if isinstance(x, dict)] if isinstance(out, list) else []


def tally(cards: Iterable[AuditEntry], feedback: Iterable[AuditEntry], prices: Prices, *,
          month: str | None = None, org: str | None = None) -> Stats:
    """The figures from ``cds-cards`` and ``cds-feedback`` rows (any order; see the module docstring)."""
    checked: dict[Key, set[tuple[str, str]]] = {}
    found: dict[Key, set[tuple[str, str]]] = {}
    card_of: dict[str, tuple[Key, tuple[str, str]]] = {}
    for e in cards:
        if e.outcome != SUCCESS or not e.organization_id:
            continue
        m = month_of(e.time_ms)
        who = e.account_id or ""
        for ck in _json_list(e.extra.get("checked")):
            if ck.get("rule") == RULE_ID and ck.get("item") and ck.get("order"):
                checked.setdefault((m, e.organization_id, str(ck["item"])), set()).add((who, str(ck["order"])))
        for cd in _json_list(e.extra.get("cards")):
            if cd.get("rule") != RULE_ID or not cd.get("item"):
                continue
            key = (m, e.organization_id, str(cd["item"]))
            order = (who, str(cd.get("order") or cd.get("uuid")))
            found.setdefault(key, set()).add(order)
            checked.setdefault(key, set()).add(order)   # a card's order was checked (rows before 'checked')
            card_of[str(cd.get("uuid"))] = (key, order)
    decided: dict[tuple[Key, tuple[str, str]], tuple[int, str, str]] = {}
    for e in feedback:
        if e.outcome != SUCCESS or e.extra.get("rule") != RULE_ID:
            continue
        hit = card_of.get(e.extra.get("card", ""))
        if hit is None:
            continue   # a card given before the period read
        outcome = e.extra.get("outcome", "")
        reason = e.extra.get("overrideReason") or NO_REASON
        prev = decided.get(hit)
        if prev is None or prev[0] < e.seq:
            decided[hit] = (e.seq, outcome, reason)
    cells: dict[Key, Cell] = {}
    for key, orders in checked.items():
        cells.setdefault(key, Cell()).checked = len(orders)
    for key, orders in found.items():
        cells.setdefault(key, Cell()).found = len(orders)
    for (key, _order), (_seq, outcome, reason) in decided.items():
        c = cells.setdefault(key, Cell())
        if outcome == "accepted":
            c.recognised += 1
        elif outcome == "overridden":
            c.overridden[reason] = c.overridden.get(reason, 0) + 1
    for key, c in cells.items():
        price = prices.of(key[2])
        c.priced = price is not None
        c.saved = (price or Decimal(0)) * c.avoided
    keep = {k: c for k, c in cells.items() if (month is None or k[0] == month) and (org is None or k[1] == org)}
    return Stats(keep)


def read_entries(audit: AuditReader, action: str, since: int | None, limit: int = MAX_ROWS) -> list[AuditEntry]:
    """The audit rows of ``action`` since ``since`` (epoch ms), newest first, at most ``limit``."""
    out: list[AuditEntry] = []
    after: int | None = None
    while len(out) < limit:
        page = audit.search(action=action, since=since, limit=PAGE, after_seq=after)
        out += page
        if len(page) < PAGE:
            break
        after = page[-1].seq
    return out[:limit]


def read(audit: AuditReader, prices: Prices, *, since: int | None, month: str | None = None,
         org: str | None = None) -> Stats:
    """:func:`tally` over the audit trail since ``since`` (cards given up to a week earlier are read
    too, so feedback on them is matched: hutong.cds.service.FEEDBACK_WINDOW_MS)."""
    from hutong.cds.service import FEEDBACK_WINDOW_MS

    cards = read_entries(audit, CARDS_ACTION, None if since is None else since - FEEDBACK_WINDOW_MS)
    feedback = read_entries(audit, FEEDBACK_ACTION, since)
    stats = tally(cards, feedback, prices, month=month, org=org)
    if since is None:
        return stats
    first = month_of(since)
    return Stats({k: c for k, c in stats.cells.items() if k[0] >= first})
