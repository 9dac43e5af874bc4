"""A match weight taken apart for the people who decide on it (issue 16, item 6).

The review screen shows every term that enters the score as its own row --
the prior (the base rate: the log-odds that two records picked at random are
one person), one row per compared field, and the name-frequency adjustment
when a common name agreed -- and the total as their sum, then the probability
the total stands for.  Fellegi & Sunter (JASA 64(328), 1969) in log form:

    weight = log2(lambda / (1 - lambda)) + sum_i log2(m_i / u_i)
    P(same person | comparison) = 2^weight / (1 + 2^weight)

(hutong.mpi.fellegi_sunter).  Rows are shown to two decimals; rounding each
on its own could make the shown rows miss the shown total by a few hundredths,
so they are rounded together (largest remainder): the shown rows add up to the
shown total exactly, and the shown total is the matcher's weight rounded.

The verdict follows the probability and the model's thresholds, never the
review reason: a pair at 8 % is not called a probable match.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hutong.mpi.comparisons import Gamma
from hutong.mpi.fellegi_sunter import Model
from hutong.mpi.model import MpiModel

PLACES = 2
SCALE = 10 ** PLACES

# Verdicts (the words are the console's: hutong.web.ui.identity_review).
AUTO = "auto"                        # at or above the auto-link threshold
REVIEW_LIKELY = "review_likely"      # between the thresholds, more likely the same person than not
REVIEW_UNLIKELY = "review_unlikely"  # between the thresholds, more likely two people
UNLIKELY = "unlikely"                # below the review threshold


@dataclass(frozen=True, slots=True)
class Term:
    name: str           # "prior", a comparison's name (hutong.mpi.comparisons), or "name_frequency"
    level: str | None   # the comparison's level (exact, pinyin, ...); None: missing (or not a field)
    weight: float       # as the matcher computes it
    shown: int          # hundredths, as displayed (the shown terms add up to the shown total)


@dataclass(frozen=True, slots=True)
class Breakdown:
    terms: list[Term]
    weight: float        # the matcher's total (MpiModel.weight)
    shown: int           # hundredths: round(weight, 2) * 100
    probability: float   # 2^weight / (1 + 2^weight)
    upper: float         # auto-link threshold (weight)
    lower: float         # review threshold (weight)
    verdict: str
    prior: float         # lambda: P(same person) for two registrations picked at random

    def to_json(self) -> dict[str, Any]:
        """Plain data (review items travel as JSON: /mpi/review, hutong mpi review)."""
        return {"terms": [{"name": t.name, "level": t.level, "weight": t.weight, "shown": t.shown}
                          for t in self.terms],
                "weight": self.weight, "shown": self.shown, "probability": self.probability,
                "upper": self.upper, "lower": self.lower, "upper_probability": Model.probability(self.upper),
                "lower_probability": Model.probability(self.lower), "verdict": self.verdict,
                "prior": self.prior}


def rounded_together(values: Sequence[float], total: float) -> list[int]:
    """``values`` in hundredths, rounded so that they add up to ``round(total * 100)``
    (largest-remainder method: each value rounded down, the hundredths still
    missing go to the largest remainders).  ``total`` is the sum of ``values``
    up to floating-point error."""
    target = round(total * SCALE)
    floors = [math.floor(v * SCALE) for v in values]
    missing = target - sum(floors)
    order = sorted(range(len(values)), key=lambda i: (-(values[i] * SCALE - floors[i]), i))
    if missing >= 0:
        for i in order[:missing]:
            floors[i] += 1
    else:  # floating-point error only: take from the smallest remainders
        for i in order[::-1][:-missing]:
            floors[i] -= 1
    return floors


def verdict(model: MpiModel, weight: float) -> str:
    if weight >= model.upper:
        return AUTO
    if weight < model.lower:
        return UNLIKELY
    return REVIEW_LIKELY if Model.probability(weight) >= 0.5 else REVIEW_UNLIKELY


def breakdown(model: MpiModel, g: Gamma, names: tuple[str, ...]) -> Breakdown:
    """Every term of ``model.weight(g, names)`` with its shown value, the total and the verdict."""
    raw = model.explain(g, names)
    total = model.weight(g, names)
    shown = rounded_together([w for _n, _l, w in raw], total)
    terms = [Term(n, level if n != "prior" else None, w, s) for (n, level, w), s in zip(raw, shown, strict=True)]
    return Breakdown(terms, total, round(total * SCALE), Model.probability(total), model.upper, model.lower,
                     verdict(model, total), model.fs.prior)
