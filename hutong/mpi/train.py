"""``hutong mpi train``: estimate the model from the region's own records.

- u (how often two *different* people agree by chance) from comparison
  vectors of random pairs of source records (Splink's
  estimate_u_using_random_sampling; almost every random pair is a non-match).
- m (how often the *same* person's records agree) and the match rate by EM
  over the pairs that share a blocking key, u held fixed (Winkler 1988).
- The prior for a random pair: EM's match share among blocked pairs times
  the number of blocked pairs, over all pairs.
- Name frequencies for the term-frequency adjustment: only names given by at
  least MIN_PUBLISHED_NAME_COUNT records are stored.
The ground truth of the synthetic region is never used here.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import orjson

from hutong.mpi import state as st
from hutong.mpi.blocking import MAX_BLOCK, raw_keys
from hutong.mpi.comparisons import COMPARISONS, gamma
from hutong.mpi.features import Features
from hutong.mpi.fellegi_sunter import Model, estimate_u, expectation_maximisation
from hutong.mpi.model import MIN_PUBLISHED_NAME_COUNT, MpiModel, default_model
from hutong.mpi.service import Mpi
from hutong.mpi.state import decode_features
from hutong.store.repository import Writer


@dataclass
class TrainReport:
    version: int
    sources: int
    random_pairs: int
    blocked_pairs: int
    iterations: int
    converged: bool
    prior: float


def fit(feats: list[Features], *, random_pairs: int = 200_000, max_blocked_pairs: int = 2_000_000,
        seed: int = 1, base: MpiModel | None = None) -> MpiModel:
    """A model estimated from ``feats`` (no storage)."""
    base = base or default_model()
    n = len(feats)
    if n < 50:
        raise ValueError(f"too few records to train on ({n}); at least 50 are needed")
    rng = random.Random(seed)
    rand = np.array([gamma(feats[a], feats[b]) for a, b in
                     ((rng.randrange(n), rng.randrange(n)) for _ in range(random_pairs)) if a != b], dtype=np.int8)
    u = estimate_u(COMPARISONS, rand)
    blocks: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(feats):
        for k in raw_keys(f):
            blocks[k].append(i)
    pairs: set[tuple[int, int]] = set()
    for members in blocks.values():
        members = members[:MAX_BLOCK]
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                pairs.add((members[x], members[y]))
        if len(pairs) >= max_blocked_pairs:
            break
    blocked = np.array([gamma(feats[a], feats[b]) for a, b in sorted(pairs)], dtype=np.int8)
    start = Model(COMPARISONS, [list(r) for r in base.fs.m], u, prior=0.5)
    em = expectation_maximisation(start, blocked, fix_u=True)
    total_pairs = n * (n - 1) / 2
    prior = max(min(em.prior * len(pairs) / total_pairs, 0.5), 1e-12)
    fs = Model(COMPARISONS, em.m, em.u, prior, version=em.version, trained={
        **em.trained, "random_pairs": int(rand.shape[0]), "blocked_pairs": len(pairs), "sources": n})
    counts = Counter(name for f in feats for name in f.names)
    name_u = {name: c / n for name, c in counts.items() if c >= MIN_PUBLISHED_NAME_COUNT}
    return MpiModel(fs=fs, upper=base.upper, lower=base.lower, name_u=name_u)


def load_features(mpi: Mpi) -> list[Features]:
    return [decode_features(mpi.repo, blob) for blob in st.all_features(st.repo_reader(mpi.repo))]


def train(mpi: Mpi, *, seed: int = 1, random_pairs: int = 200_000) -> TrainReport:
    """Fit on the stored sources and store the result as the new active version."""
    model = fit(load_features(mpi), seed=seed, random_pairs=random_pairs, base=mpi.model())
    version = store(mpi, model)
    t = model.fs.trained
    return TrainReport(version, int(t["sources"]), int(t["random_pairs"]), int(t["blocked_pairs"]),
                       int(t["iterations"]), bool(t["converged"]), model.fs.prior)


def store(mpi: Mpi, model: MpiModel) -> int:
    def run(w: Writer) -> int:
        return st.save_model(w, w.now, orjson.dumps(model.to_json()))
    version = mpi.repo.transact(run)
    mpi.forget_model()
    return version
