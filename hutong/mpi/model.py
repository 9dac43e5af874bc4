"""The matching model in force: Fellegi-Sunter parameters, thresholds, name
frequencies, and the version they are stored under (table ``mpi_model``).

Before any training the shipped defaults apply: m and u set by hand for a
city of about a million residents (u of an exact ID number or phone is about
one in a million; birth dates spread over ~30,000 days; m reflects the noise
rates seen in registrations).  ``hutong mpi train`` re-estimates u from
random pairs and m by EM from blocked pairs (hutong.mpi.train) and stores a
new version; every link records the version that made it.

Match weights are log2 Bayes factors including the prior odds, so the
thresholds read as probabilities: weight 9 is p = 0.998, weight -4 is
p = 0.06.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hutong.mpi.comparisons import COMPARISONS, NAME, Gamma
from hutong.mpi.fellegi_sunter import Model

# Auto-link at or above (p >= 0.998).  Not lower: the model assumes fields
# agree independently among different people, and namesakes born the same day
# break that.  A pair agreeing on name, birth date and sex only (no ID number on
# one side, phone and address differ) is such a namesake about as often as the
# same person (hutong.synth's hard negatives, bench/bench_mpi.py), yet a model
# trained on a region of 2,000-20,000 residents scores it about 7: at 6 it was
# auto-merged, at 9 it goes to review (chosen on seed 2, reported on seed 1).
UPPER = 9.0
LOWER = -4.0  # review between LOWER and UPPER; new person below
# Two candidates both above UPPER within this many bits of each other: a human decides.
AMBIGUITY_MARGIN = 4.0
# Names given by fewer people than this are not published in the stored model
# (a frequency table of rare names would say who is in the region).
MIN_PUBLISHED_NAME_COUNT = 20

DEFAULT_M = [
    [0.95, 0.03, 0.02],                 # id: exact, close, else
    [0.94, 0.03, 0.02, 0.01],           # name: exact, pinyin, similar, else
    [0.97, 0.01, 0.01, 0.01],           # birth date: exact, swapped, close, else
    [0.995, 0.005],                     # sex
    [0.85, 0.15],                       # phone (people change numbers)
    [0.85, 0.05, 0.10],                 # address (people move)
    [0.99, 0.01],                       # health card
    [0.99, 0.01],                       # passport
]
DEFAULT_U = [
    [1e-7, 1e-6, 1 - 1.1e-6],
    [1e-4, 2e-4, 5e-4, 1 - 8e-4],
    [3e-5, 3e-5, 1e-3, 1 - 1.06e-3],
    [0.5, 0.5],
    [1e-6, 1 - 1e-6],
    [1e-5, 1e-4, 1 - 1.1e-4],
    [1e-7, 1 - 1e-7],
    [1e-7, 1 - 1e-7],
]
DEFAULT_PRIOR = 1e-6


@dataclass
class MpiModel:
    fs: Model
    upper: float = UPPER
    lower: float = LOWER
    name_u: dict[str, float] = field(default_factory=dict)  # exact-agreement u of common names
    version: int = 0

    def _tf(self, g: Gamma, names: tuple[str, ...]) -> list[float | None] | None:
        """The term-frequency u of an exact name agreement on a common name (None: none applies)."""
        if g[NAME] == 0 and names and self.name_u:
            u = max((self.name_u.get(n, 0.0) for n in names), default=0.0)
            if u > 0:
                tf: list[float | None] = [None] * len(g)
                tf[NAME] = u
                return tf
        return None

    def weight(self, g: Gamma, names: tuple[str, ...] = ()) -> float:
        return self.fs.match_weight(g, self._tf(g, names))

    def explain(self, g: Gamma, names: tuple[str, ...] = ()) -> list[tuple[str, str | None, float]]:
        """Every term of :meth:`weight`, in order: ("prior", ..., log2 of the prior
        odds), one (comparison, level or None, log2(m/u)) per comparison, and,
        when the name agreed exactly on a common name, ("name_frequency", None,
        the term-frequency adjustment: log2(m/f) - log2(m/u), Winkler 2000).
        The terms add up to ``weight(g, names)`` (issue 16, item 6: the review
        screen shows each of them, so the total is their sum)."""
        terms = self.fs.explain(g)
        tf = self._tf(g, names)
        if tf is not None:
            adjusted = self.fs.explain(g, tf)[NAME + 1][2]  # +1: the prior comes first
            terms.append(("name_frequency", None, adjusted - terms[NAME + 1][2]))
        return terms

    def to_json(self) -> dict[str, Any]:
        return {"fs": self.fs.to_json(), "upper": self.upper, "lower": self.lower, "name_u": self.name_u}

    @classmethod
    def from_json(cls, data: dict[str, Any], version: int) -> MpiModel:
        return cls(fs=Model.from_json(data["fs"]), upper=float(data["upper"]), lower=float(data["lower"]),
                   name_u={str(k): float(v) for k, v in data.get("name_u", {}).items()}, version=version)


def default_model() -> MpiModel:
    return MpiModel(fs=Model(comparisons=COMPARISONS, m=[list(r) for r in DEFAULT_M],
                             u=[list(r) for r in DEFAULT_U], prior=DEFAULT_PRIOR))
