"""What the matcher knows about a Patient: normalised, multi-valued features.

A source Patient (one institution's registration) and a person (the union of
its sources) have the same shape, so one comparison scores either against a
source.  Values are normalised once here (hutong.mpi.normalize), never in the
comparison loop.

ID numbers (GB 11643): only a *valid* number whose encoded birth date and sex
agree with the record's own demographics becomes ``ids`` (a deterministic
key).  Anything else is kept in ``bad_ids`` (canonical 18-character form when
one exists) so a transposed or mistyped number still counts as evidence in
the probabilistic score, but never as a key (issue 4: "never used as a
deterministic key").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hutong.mpi.idnumber import contradictions, parse_id_number
from hutong.mpi.normalize import (
    name_initials,
    name_pinyin,
    normalize_address,
    normalize_date,
    normalize_name,
    normalize_phone,
)
from hutong.systems import HEALTH_CARD, ID_CARD, PASSPORT

MRN_PREFIX = "urn:hutong:mrn:"


@dataclass(frozen=True, slots=True)
class Features:
    names: tuple[str, ...] = ()
    pinyins: tuple[str, ...] = ()
    initials: tuple[str, ...] = ()
    birth_dates: tuple[str, ...] = ()
    sexes: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()          # valid, self-consistent ID numbers (keys)
    bad_ids: tuple[str, ...] = ()      # invalid or contradicted: evidence only
    phones: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    health_cards: tuple[str, ...] = ()
    passports: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)  # why an ID was not used as a key

    # ---------------------------------------------------------------- JSON
    _KEYS = ("names", "pinyins", "initials", "birth_dates", "sexes", "ids", "bad_ids", "phones", "addresses",
             "health_cards", "passports", "notes")

    def to_json(self) -> dict[str, list[str]]:
        return {k: list(getattr(self, k)) for k in self._KEYS if getattr(self, k)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Features:
        return cls(**{k: tuple(data.get(k, ())) for k in cls._KEYS})

    def blocking_keys(self, secret: bytes) -> set[str]:
        """Keys under which this record is filed (hutong.mpi.blocking explains the choice),
        digested under ``secret`` (``Mpi.blind_key``)."""
        from hutong.mpi.blocking import keys_of
        return keys_of(self, secret)


def _uniq(values: Iterable[str | None]) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        if v and v not in out:
            out.append(v)
    return tuple(out)


def merge(parts: Sequence[Features]) -> Features:
    """A person's features: the union of its sources' (order: first seen first)."""
    if len(parts) == 1:
        return parts[0]
    return Features(**{k: _uniq(v for p in parts for v in getattr(p, k))
                       for k in Features._KEYS})


# ISO 21090 EN.representation (FHIR R4 extension-iso21090-en-representation): a name
# marked ABC (alphabetic: the pinyin a HIS sends beside the Han name) is a romanisation,
# compared only when the record has no other name.
EN_REPRESENTATION = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"


def is_romanisation(name: dict[str, Any]) -> bool:
    """A HumanName marked as the alphabetic (ABC) representation of another name."""
    return any(isinstance(e, dict) and e.get("url") == EN_REPRESENTATION and e.get("valueCode") == "ABC"
               for e in name.get("extension") or ())


def _name_texts(patient: dict[str, Any]) -> list[str]:
    out = []
    names = [n for n in patient.get("name") or () if isinstance(n, dict)]
    if any(not is_romanisation(n) for n in names):
        names = [n for n in names if not is_romanisation(n)]
    for n in names:
        if n.get("use") == "old":
            continue
        text = n.get("text")
        if not text:
            family = n.get("family") or ""
            given = "".join(n.get("given") or ())
            # Chinese order: family name first, no space (GB/T 28039 for pinyin display aside).
            text = family + given
        if text:
            out.append(str(text))
    return out


def _address_texts(patient: dict[str, Any]) -> list[str]:
    out = []
    for a in patient.get("address") or ():
        if not isinstance(a, dict) or a.get("use") == "old":
            continue
        text = a.get("text") or "".join(
            str(x) for x in (a.get("state"), a.get("city"), a.get("district"), *(a.get("line") or ())) if x)
        if text:
            out.append(str(text))
    return out


def extract(patient: dict[str, Any]) -> Features:
    """Features of one FHIR Patient resource (already validated)."""
    names = [normalize_name(t) for t in _name_texts(patient)]
    names = [n for n in names if n]
    bd = normalize_date(str(patient.get("birthDate") or "")) if patient.get("birthDate") else None
    gender = patient.get("gender")
    sex = gender if gender in ("male", "female") else None
    ids: list[str] = []
    bad: list[str] = []
    notes: list[str] = []
    cards: list[str] = []
    passports: list[str] = []
    for ident in patient.get("identifier") or ():
        if not isinstance(ident, dict):
            continue
        system, value = ident.get("system"), ident.get("value")
        if not value:
            continue
        value = str(value)
        if system == ID_CARD:
            idn = parse_id_number(value)
            if idn.valid and idn.value:
                why = contradictions(idn, birth_date=bd, gender=gender)
                if why:
                    bad.append(idn.value)
                    notes.append("ID number contradicts the record: " + "; ".join(why))
                else:
                    ids.append(idn.value)
            else:
                bad.append(idn.value or value.strip().upper())
                notes.append(f"ID number invalid: {idn.reason}")
        elif system == HEALTH_CARD:
            cards.append(value.strip().upper())
        elif system == PASSPORT:
            passports.append(value.strip().upper())
    phones = [normalize_phone(str(t.get("value") or "")) for t in patient.get("telecom") or ()
              if isinstance(t, dict) and t.get("system") in ("phone", "sms", None)]
    # A record whose only birth date comes from its ID number still has one.
    if bd is None and ids:
        idn = parse_id_number(ids[0])
        bd = idn.birth_date.isoformat() if idn.birth_date else None
    if sex is None and ids:
        sex = parse_id_number(ids[0]).sex
    return Features(
        names=_uniq(names),
        pinyins=_uniq(name_pinyin(n) for n in names),
        initials=_uniq(name_initials(n) for n in names),
        birth_dates=_uniq([bd]),
        sexes=_uniq([sex]),
        ids=_uniq(ids),
        bad_ids=_uniq(bad),
        phones=_uniq(phones),
        addresses=_uniq(normalize_address(t) for t in _address_texts(patient)),
        health_cards=_uniq(cards),
        passports=_uniq(passports),
        notes=_uniq(notes),
    )


def mrns(patient: dict[str, Any]) -> list[tuple[str, str]]:
    """(system, value) of every identifier, for PIX cross-referencing."""
    return [(str(i["system"]), str(i["value"])) for i in patient.get("identifier") or ()
            if isinstance(i, dict) and i.get("system") and i.get("value")]
