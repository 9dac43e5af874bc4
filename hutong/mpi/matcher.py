"""The linkage decision for one source record against its candidate persons.

Used unchanged by the inline path (candidates from SQL) and by relink
(candidates from memory), so a relink reproduces exactly what inline matching
would have decided.  Order of the rules (issue 4):

1. Deterministic: a person holding the same valid ID number is this person,
   unless the demographics flatly contradict (names completely different):
   then a new person and a review item with the reason -- never a merge.
2. Two different valid ID numbers are two people: such a candidate can reach
   the review queue but is never auto-linked.
3. Fellegi-Sunter: best candidate at or above the upper threshold is linked,
   unless a second one is within AMBIGUITY_MARGIN (review); candidates between
   the thresholds go to review and the record starts a new person.
4. A human "not the same person" decision (mpi_nolink) removes a candidate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hutong.mpi.comparisons import ID, NAME, Gamma, gamma
from hutong.mpi.features import Features
from hutong.mpi.model import AMBIGUITY_MARGIN, MpiModel

MAX_REVIEW_ITEMS = 3


@dataclass(frozen=True, slots=True)
class Scored:
    person_id: str
    weight: float
    gamma: Gamma
    barred: str | None  # why this candidate may not be auto-linked


@dataclass(slots=True)
class Decision:
    person_id: str | None          # None: start a new person
    rule: str                      # id | fs | new
    weight: float | None
    review: list[tuple[str, float, str]] = field(default_factory=list)  # (person, weight, reason)
    scored: list[Scored] = field(default_factory=list)


def score(model: MpiModel, f: Features, persons: Mapping[str, Features]) -> list[Scored]:
    out = []
    for pid, p in persons.items():
        g = gamma(f, p)
        barred = None
        if f.ids and p.ids and set(f.ids).isdisjoint(p.ids):
            barred = "different valid ID numbers"
        out.append(Scored(pid, model.weight(g, tuple(set(f.names) & set(p.names))), g, barred))
    out.sort(key=lambda s: (-s.weight, s.person_id))
    return out


def decide(model: MpiModel, f: Features, persons: Mapping[str, Features],
           refused: frozenset[str] = frozenset()) -> Decision:
    """``persons``: candidate persons' merged features; ``refused``: persons a
    human said this record is not."""
    scored = score(model, f, {k: v for k, v in persons.items() if k not in refused})
    if f.ids:
        same = [s for s in scored if not set(f.ids).isdisjoint(persons[s.person_id].ids)]
        if same:
            best = same[0]
            if best.gamma[NAME] == 3:
                return Decision(None, "new", None, [(best.person_id, best.weight,
                                                     "same ID number, but the names disagree completely")],
                                scored)
            return Decision(best.person_id, "id", best.weight, [], scored)
    linkable = [s for s in scored if s.barred is None and s.weight >= model.upper]
    reviews: list[tuple[str, float, str]] = []
    if linkable:
        best = linkable[0]
        if len(linkable) > 1 and best.weight - linkable[1].weight < AMBIGUITY_MARGIN:
            for s in linkable[:MAX_REVIEW_ITEMS]:
                reviews.append((s.person_id, s.weight, "several persons match about equally well"))
            return Decision(None, "new", None, reviews, scored)
        for s in scored:
            if s.barred and s.weight >= model.upper and len(reviews) < MAX_REVIEW_ITEMS:
                reviews.append((s.person_id, s.weight, f"also matches, but {s.barred}"))
        return Decision(best.person_id, "fs", best.weight, reviews, scored)
    for s in scored:
        # A candidate with another valid ID number is a namesake unless
        # everything else agrees strongly: only then is it worth a human look.
        floor = model.upper if s.barred else model.lower
        if s.weight >= floor and len(reviews) < MAX_REVIEW_ITEMS:
            why = "probable match below the auto-link threshold"
            if s.barred:
                why = f"demographics agree, but {s.barred}"
            elif s.gamma[ID] == 1:
                why = "probable match; ID numbers differ by one or two digits"
            reviews.append((s.person_id, s.weight, why))
    return Decision(None, "new", None, reviews, scored)
