"""``hutong mpi relink``: re-run linkage over every source after the rules or
the model changed, report what changed, keep every human decision.

The replay is the inline algorithm itself (hutong.mpi.matcher.decide), fed
from memory instead of SQL, over the sources in arrival order: each record
sees exactly the records that had arrived before it, as it did inline.
Human decisions survive: a ``manual`` source stays with its person and
"not the same person" pairs (mpi_nolink) still bar each other.  New clusters
keep the person id most of their members had, so a relink that changes
nothing rewrites nothing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from hutong.mpi import state as st
from hutong.mpi.blocking import MAX_BLOCK, raw_keys
from hutong.mpi.features import Features, merge
from hutong.mpi.matcher import decide
from hutong.mpi.service import Mpi, new_person_id
from hutong.store.repository import Writer


@dataclass
class RelinkReport:
    sources: int = 0
    backfilled: int = 0     # Patients stored before the MPI existed, linked first
    persons_before: int = 0
    persons_after: int = 0
    moved: int = 0
    manual_kept: int = 0
    persons_created: int = 0
    persons_retired: int = 0
    reviews_opened: int = 0
    reviews_closed: int = 0
    model_version: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Assign:
    person: str
    state: str
    rule: str
    score: float | None


def relink(mpi: Mpi, *, dry_run: bool = False, actor: str = "mpi-relink",
           clock: Callable[[], float] | None = None) -> RelinkReport:
    import time
    tick = clock or time.perf_counter
    t0 = tick()
    repo = mpi.repo
    model = mpi.model()
    rep = RelinkReport(model_version=model.version, dry_run=dry_run)
    if not dry_run:
        rep.backfilled = mpi.backfill()
    rows = st.all_sources(st.repo_reader(repo))
    ids: list[str] = []
    old: dict[str, _Assign] = {}
    feats: dict[str, Features] = {}
    for pid, person, state, rule, score, blob in rows:
        ids.append(pid)
        old[pid] = _Assign(person, state, rule, score)
        feats[pid] = st.decode_features(repo, blob)
    refused: dict[str, set[str]] = defaultdict(set)
    for a, b in st.nolinks(st.repo_reader(repo)):
        refused[a].add(b)
        refused[b].add(a)
    rep.sources = len(ids)
    rep.persons_before = len({a.person for a in old.values()})
    t1 = tick()
    rep.seconds["load"] = t1 - t0

    # Replay.  Persons are labelled by a temporary key until ids are settled.
    blocks: dict[str, list[str]] = defaultdict(list)
    member: dict[str, str] = {}            # source -> temporary person key
    members: dict[str, list[str]] = defaultdict(list)
    merged: dict[str, Features] = {}
    new: dict[str, _Assign] = {}
    reviews: dict[str, list[tuple[str, float, str]]] = {}
    pinned_key: dict[str, str] = {}        # old person id of manual sources -> key
    by_old: dict[str, Counter[str]] = defaultdict(Counter)  # old person -> keys its sources got
    counter = 0

    def features_of(key: str) -> Features:
        f = merged.get(key)
        if f is None:
            f = merged[key] = merge([feats[s] for s in members[key]])
        return f

    for pid in ids:
        f = feats[pid]
        keys = raw_keys(f)
        a = old[pid]
        if a.state == "manual":
            key = pinned_key.get(a.person)
            if key is None:
                # Join the cluster the person's earlier sources formed in this
                # replay (if no other pinned person holds it), else start one.
                claimed = set(pinned_key.values())
                seen = [k for k, _n in by_old.get(a.person, Counter()).most_common() if k not in claimed]
                if seen:
                    key = seen[0]
                else:
                    key = f"k{counter}"
                    counter += 1
                pinned_key[a.person] = key
            new[pid] = _Assign(key, "manual", a.rule, a.score)
            rep.manual_kept += 1
        else:
            cands: set[str] = set()
            for k in keys:
                for other in blocks.get(k, ())[:MAX_BLOCK]:
                    cands.add(member[other])
            persons = {c: features_of(c) for c in cands}
            bar = frozenset(member[o] for o in refused.get(pid, ()) if o in member)
            d = decide(model, f, persons, bar)
            if d.person_id is None:
                key = f"k{counter}"
                counter += 1
            else:
                key = d.person_id
            new[pid] = _Assign(key, "review" if d.review and d.person_id is None else "auto", d.rule, d.weight)
            if d.review:
                reviews[pid] = d.review
        member[pid] = new[pid].person
        by_old[a.person][new[pid].person] += 1
        members[new[pid].person].append(pid)
        merged.pop(new[pid].person, None)
        for k in keys:
            blocks[k].append(pid)
    t2 = tick()
    rep.seconds["match"] = t2 - t1

    # Settle ids: pinned keys keep their person; others keep the id most of
    # their members had (if still free), else get a new one.
    name_of: dict[str, str] = {key: old_id for old_id, key in pinned_key.items()}
    taken = set(pinned_key)
    for key, srcs in sorted(members.items(), key=lambda kv: -len(kv[1])):
        if key in name_of:
            continue
        for old_id, _n in Counter(old[s].person for s in srcs).most_common():
            if old_id not in taken:
                name_of[key] = old_id
                taken.add(old_id)
                break
        else:
            name_of[key] = new_person_id()
            rep.persons_created += 1
    changed_persons: set[str] = set()
    moves: list[tuple[str, _Assign]] = []
    for pid in ids:
        n = new[pid]
        n.person = name_of[n.person]
        o = old[pid]
        if n.person != o.person:
            rep.moved += 1
            changed_persons.update((n.person, o.person))
            moves.append((pid, n))
        elif (n.state, n.rule) != (o.state, o.rule) or (n.score is not None and o.score != n.score):
            moves.append((pid, n))
    review_new = {(pid, member_person) for pid, items in reviews.items()
                  for member_person in (name_of.get(p, p) for p, _w, _r in items)}
    # Merge requests a sender made wait for a steward: a replay neither opens nor closes them.
    open_rows = st.open_review_pairs(st.repo_reader(repo), st.MERGE_REQUEST + "%")
    review_old = {(r[0], r[1]) for r in open_rows}
    rep.reviews_opened = len(review_new - review_old)
    rep.reviews_closed = len(review_old - review_new)
    rep.persons_after = len({n.person for n in new.values()})
    rep.persons_retired = len({a.person for a in old.values()} - {n.person for n in new.values()})
    t3 = tick()
    rep.seconds["settle"] = t3 - t2
    if dry_run:
        return rep

    review_detail = {(pid, name_of.get(p, p)): (w, r) for pid, items in reviews.items() for p, w, r in items}

    def apply(w: Writer) -> None:
        for pid, n in moves:
            st.move_source(w, pid, n.person, n.state, n.rule, n.score)
            if n.person != old[pid].person:
                mpi._relink_source(w, pid, n.person)
        for pid, person in sorted(review_old - review_new):
            st.close_reviews(w, pid, "obsolete", actor, person)
        for pid, person in sorted(review_new - review_old):
            weight, why = review_detail[(pid, person)]
            st.open_review(w, pid, person, weight, why)
        mpi._refresh(w, sorted(changed_persons))
        st.add_event(w, "relink", actor, f"model version {model.version}",
                     {"report": {k: v for k, v in rep.to_json().items() if k != "seconds"},
                      "moved": [[pid, old[pid].person, n.person] for pid, n in moves
                                if n.person != old[pid].person]})

    repo.transact(apply)
    rep.seconds["write"] = tick() - t3
    return rep
