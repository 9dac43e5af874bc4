"""The master patient index as the store sees it: a write hook on Patient,
plus the operations people and systems call (link, unlink, merge, undo,
review, match, cross-reference).

Inline matching (issue 4) runs in :meth:`Mpi.on_write`, called by the store
inside the transaction of every Patient write whatever the path (REST,
transaction bundle, bulk import, HL7): the source gets its ``link`` to the
person before its row is written, the golden record is written in the same
transaction, so a failure anywhere leaves neither.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from hutong.errors import Conflict, InvalidRequest, NotFound
from hutong.mpi import explain
from hutong.mpi import state as st
from hutong.mpi.blocking import LEGACY_KEY
from hutong.mpi.comparisons import COMPARISONS, Gamma, gamma
from hutong.mpi.features import Features, extract
from hutong.mpi.golden import PERSON_PREFIX, SourceView, build, is_golden, retired, with_person_link
from hutong.mpi.matcher import Decision, Scored, decide
from hutong.mpi.model import MpiModel, default_model
from hutong.store.repository import Repository, Stored, Writer

MODEL_TTL_S = 30.0
UNDO_KIND = {"merge": "unmerge", "link": "undo-link", "unlink": "undo-unlink"}
SYSTEM_ACTOR = "mpi"


def new_person_id() -> str:
    return PERSON_PREFIX + uuid.uuid4().hex[:20]


# A candidate at least this probable is graded "probable", not "possible" (see Mpi._grade).
PROBABLE_AT = 0.9


@dataclass(frozen=True, slots=True)
class MergeOutcome:
    """What a sender's merge of two of its registrations did to the persons."""

    status: str            # merged | queued | unchanged (already one person, or a registration not indexed)
    event: int | None = None
    note: str = ""         # queued: why a steward has to decide


def managing_org(body: dict[str, Any]) -> str | None:
    """The Organization id a source Patient names as its manager (its owner: the
    policy stamps it on every institution write and keeps it fixed)."""
    ref = (body.get("managingOrganization") or {}).get("reference")
    return ref[len("Organization/"):] if isinstance(ref, str) and ref.startswith("Organization/") else None


@dataclass(frozen=True, slots=True)
class MatchResult:
    person_id: str
    weight: float
    probability: float
    grade: str  # certain | probable | possible | certainly-not (PDQm match-grade)
    gamma: Gamma


class Mpi:
    types = frozenset({"Patient"})

    def __init__(self, repo: Repository, blind_key: bytes = LEGACY_KEY) -> None:
        self.repo = repo
        self.blind_key = blind_key  # blocking-key digests (hutong.mpi.blocking)
        self._model: MpiModel | None = None
        self._model_at = 0.0
        self._lock = threading.Lock()

    # ------------------------------------------------------------ model
    def model(self, read: st.Reader | None = None) -> MpiModel:
        now = time.monotonic()
        with self._lock:
            if self._model is not None and now - self._model_at < MODEL_TTL_S:
                return self._model
        row = st.active_model(read or st.repo_reader(self.repo))
        m = MpiModel.from_json(orjson.loads(row[1]), row[0]) if row is not None else default_model()
        with self._lock:
            self._model, self._model_at = m, now
        return m

    def forget_model(self) -> None:
        with self._lock:
            self._model = None

    # ------------------------------------------------------------ the hook
    def on_write(self, w: Writer, type: str, id: str, resource: dict[str, Any] | None,
                 current: Stored | None) -> bool:
        if id.startswith(PERSON_PREFIX) or (resource is not None and is_golden(resource)):
            raise InvalidRequest("HT-0055", "golden person records (ids starting with 'mpi-', tag golden) are "
                                 "maintained by the master patient index; use the $mpi-* operations")
        read = st.writer_reader(w)
        existing = st.get_source(self.repo, read, id)
        if resource is None:
            if existing is not None:
                st.drop_source(w, id)
                self._refresh(w, [existing.person_id])
            return False
        f = extract(resource)
        w.ctx.unlinked[id] = resource
        blocks = f.blocking_keys(self.blind_key)
        # PostgreSQL: writers that could match each other queue (advisory locks,
        # sorted so two writers never wait on each other crosswise); otherwise two
        # registrations of one new person arriving together would both start a
        # person.  SQLite writers are serialised already.
        for k in sorted(blocks):
            w.lock_key("mpi:" + k)
        if existing is not None and (existing.state == "manual" or
                                     (existing.features == f and existing.state == "auto")):
            existing.features = f
            existing.updated = w.now
            st.put_source(w, existing, blocks=blocks, exists=True)
            with_person_link(resource, existing.person_id)
            self._refresh(w, [existing.person_id])
            return True
        d = self._decide(w, read, id, f, blocks)
        person = d.person_id
        old_person = existing.person_id if existing is not None else None
        if person is None:
            alone = old_person is not None and not [
                s for s in st.sources_of(self.repo, read, [old_person]) if s.patient_id != id]
            person = old_person if alone and old_person else new_person_id()
        row = st.SourceRow(id, person, "review" if d.review and d.person_id is None else "auto", d.rule, d.weight,
                           existing.seq if existing else self._seq(w), w.now, f)
        st.put_source(w, row, blocks=blocks, exists=existing is not None)
        st.close_reviews(w, id, "obsolete", None, requests=False)
        for pid, weight, why in d.review:
            st.open_review(w, id, pid, weight, why)
        with_person_link(resource, person)
        self._refresh(w, [person] + ([old_person] if old_person and old_person != person else []))
        return True

    def _seq(self, w: Writer) -> int:
        n = w.ctx.link_seq
        w.ctx.link_seq = n + 1
        return w.now * 1000 + n

    def _decide(self, w: Writer, read: st.Reader, id: str, f: Features, blocks: set[str]) -> Decision:
        persons = st.candidate_persons(read, blocks, id)
        feats = st.person_features(self.repo, read, persons, id)
        refused_src = st.refused_patients(read, id)
        refused = frozenset(st.persons_of(read, refused_src).values()) if refused_src else frozenset()
        return decide(self.model(read), f, feats, refused)

    # ------------------------------------------------------------ golden records
    def _bodies(self, w: Writer, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        pending = w.ctx.unlinked
        out = {i: pending[i] for i in ids if i in pending}
        for i in ids:
            if i not in out:
                s = w.read_current("Patient", i)
                if s is not None and s.body is not None:
                    out[i] = orjson.loads(s.body)
        return out

    def _refresh(self, w: Writer, person_ids: Iterable[str], *, merged_into: dict[str, str] | None = None) -> None:
        """Rewrite the golden record of each person from its current sources."""
        read = st.writer_reader(w)
        for pid in dict.fromkeys(person_ids):
            sources = st.sources_of(self.repo, read, [pid])
            bodies = self._bodies(w, [s.patient_id for s in sources])
            views = [SourceView(s.patient_id, bodies[s.patient_id], s.features, s.updated)
                     for s in sources if s.patient_id in bodies]
            body = build(pid, views) if views else retired(pid, (merged_into or {}).get(pid))
            current = w.read_current("Patient", pid, lock=True)
            if current is None:
                if views:
                    w.insert("Patient", pid, body, hooks=False)
            else:
                old = orjson.loads(current.body) if current.body else None
                if old is not None:
                    old.pop("meta", None)
                    cmp = dict(body)
                    cmp.pop("meta", None)
                    if old == cmp:
                        continue
                w.replace(current, body, hooks=False)

    def _relink_source(self, w: Writer, patient_id: str, person_id: str | None) -> None:
        """Rewrite a stored source's ``refer`` link (a new version of it)."""
        cur = w.read_current("Patient", patient_id)
        if cur is None or cur.body is None:
            # Not written yet: a body a batch insert is about to write.
            pending = w.ctx.unlinked
            if patient_id in pending:
                with_person_link(pending[patient_id], person_id)
            return
        body = orjson.loads(cur.body)
        before = list(body.get("link") or ())
        with_person_link(body, person_id)
        if list(body.get("link") or ()) != before:
            w.replace(cur, body, hooks=False)

    # ------------------------------------------------------------ reads
    def person_of(self, patient_id: str) -> str | None:
        return st.person_of(st.repo_reader(self.repo), patient_id)

    def persons_of(self, patient_ids: Iterable[str]) -> dict[str, str]:
        """person_of for many source patients in one query (those linked to a person)."""
        return st.persons_of(st.repo_reader(self.repo), patient_ids)

    def person_of_in(self, w: Writer, patient_id: str) -> str | None:
        """person_of inside an open write transaction (sees its own links)."""
        return st.person_of(st.writer_reader(w), patient_id)

    def sources(self, person_id: str) -> list[str]:
        return st.source_ids(st.repo_reader(self.repo), person_id)

    def patient_ids(self, id: str) -> list[str]:
        """$everything: a golden person's record is the records of all its sources."""
        if id.startswith(PERSON_PREFIX):
            return [id, *self.sources(id)]
        return [id]

    def match(self, resource: dict[str, Any], *, count: int = 10) -> list[MatchResult]:
        """Score a (not stored) Patient against the index: PDQm $match (ITI-119)."""
        read = st.repo_reader(self.repo)
        f = extract(resource)
        persons = st.candidate_persons(read, f.blocking_keys(self.blind_key), None)
        feats = st.person_features(self.repo, read, persons, None)
        model = self.model(read)
        d = decide(model, f, feats)
        out = []
        for s in d.scored[:count]:
            grade = self._grade(model, s, d)
            out.append(MatchResult(s.person_id, s.weight, model.fs.probability(s.weight), grade, s.gamma))
        return out

    @staticmethod
    def _grade(model: MpiModel, s: Scored, d: Decision) -> str:
        """PDQm match-grade (ITI-119 3.119.4.1.3.2): ``certain`` only for what the
        index would link on its own; ``probable`` ("a close match ... review may
        be required") for a weight above the auto-link threshold that was not
        linked (ambiguous) or a posterior probability of at least PROBABLE_AT, so
        a candidate shown at 99.9 % is never called merely ``possible`` (issue 16,
        item 7); ``possible`` for the rest above the review threshold."""
        if d.person_id == s.person_id:
            return "certain"
        if s.barred is None and s.weight >= model.lower:
            probable = s.weight >= model.upper or model.fs.probability(s.weight) >= PROBABLE_AT
            return "probable" if probable else "possible"
        return "certainly-not" if s.barred else "possible"

    def compare(self, patient_id: str, person_id: str) -> dict[str, Any]:
        """Field-by-field comparison of a source and a person (review screens)."""
        read = st.repo_reader(self.repo)
        src = st.get_source(self.repo, read, patient_id)
        if src is None:
            raise NotFound("HT-0056", f"Patient/{patient_id} is not in the index")
        feats = st.person_features(self.repo, read, [person_id], patient_id)
        if person_id not in feats:
            raise NotFound("HT-0056", f"person {person_id} has no other sources")
        p = feats[person_id]
        g = gamma(src.features, p)
        model = self.model(read)
        # explain() lists the prior first, then one entry per comparison.
        expl = {name: (label, weight) for name, label, weight in model.fs.explain(g)}
        fields = []
        for spec in COMPARISONS:
            attrs = _FIELD_ATTRS[spec.name]
            fields.append({"field": spec.name, "source": [v for a in attrs for v in getattr(src.features, a)],
                           "person": [v for a in attrs for v in getattr(p, a)], "level": expl[spec.name][0],
                           "weight": round(expl[spec.name][1], 2)})
        names = tuple(set(src.features.names) & set(p.names))
        w = model.weight(g, names)
        # Every term of w (prior, fields, name frequency), rounded together so the shown
        # rows add up to the shown total (issue 16, item 6; hutong.mpi.explain).
        parts = explain.breakdown(model, g, names)
        return {"patient": patient_id, "person": person_id, "weight": round(w, 2),
                "probability": model.fs.probability(w), "fields": fields, "notes": list(src.features.notes),
                "breakdown": parts.to_json()}

    def review_items(self, *, status: str = "open", limit: int = 50, after: int = 0) -> list[dict[str, Any]]:
        rows = st.review_rows(st.repo_reader(self.repo), status, after, limit)
        out = []
        history = st.review_decisions(st.repo_reader(self.repo), [int(r[0]) for r in rows])
        for rid, pat, per, sc, reason, stt, created, decided, actor in rows:
            item = {"id": int(rid), "patient": pat, "person": per, "score": sc, "reason": reason, "status": stt,
                    "created": int(created), "history": self._history(int(rid), stt, decided, actor, history)}
            try:
                item["comparison"] = self.compare(pat, per)
            except NotFound:
                item["comparison"] = None
            out.append(item)
        return out

    def review_item(self, review_id: int) -> dict[str, Any] | None:
        """One review item, whatever its status (None: no such item)."""
        row = st.review_row(st.repo_reader(self.repo), review_id)
        if row is None:
            return None
        items = self.review_items(status=row[2], limit=1, after=review_id - 1)
        return items[0] if items and items[0]["id"] == review_id else None

    @staticmethod
    def _history(rid: int, status: str, decided: Any, actor: Any,
                 rows: dict[int, list[tuple[int, str, str, str | None]]]) -> list[dict[str, Any]]:
        """An item's decisions, newest first (mpi_review_decision); an item decided
        before that table existed shows its last decision from mpi_review, without a note."""
        out = [{"at": at, "decision": d, "actor": a, "note": n} for at, d, a, n in rows.get(rid, ())]
        if not out and decided is not None and actor and status in ("linked", "rejected"):
            out.append({"at": int(decided), "decision": status, "actor": str(actor), "note": None})
        return out

    # ------------------------------------------------------------ operations
    def link(self, patient_id: str, person_id: str, *, actor: str, reason: str | None = None) -> int:
        """A human says: this source is that person (pinned across relinks)."""
        return self.repo.transact(lambda w: self._link(w, patient_id, person_id, actor, reason))

    def _link(self, w: Writer, patient_id: str, person_id: str, actor: str, reason: str | None) -> int:
        src = self._locked_source(w, patient_id, person_id)
        read = st.writer_reader(w)
        members = st.sources_of(self.repo, read, [person_id])
        if not members:
            raise NotFound("HT-0056", f"person {person_id} not found (it has no sources)")
        before = [src.snapshot()]
        removed = []
        for m in members:
            if st.remove_nolink(w, patient_id, m.patient_id):
                removed.append(sorted((patient_id, m.patient_id)))
        st.move_source(w, patient_id, person_id, "manual", "manual", None)
        st.decide_reviews(w, patient_id, person_id, "open", "linked", actor, reason)
        # An item that linked this source to another person is no longer true: off 已关联.
        st.decide_reviews(w, patient_id, None, "linked", "unlinked", actor, reason, except_person=person_id)
        st.close_reviews(w, patient_id, "obsolete", actor)
        self._relink_source(w, patient_id, person_id)
        self._refresh(w, [person_id, src.person_id])
        after = [{**src.snapshot(), "person": person_id, "state": "manual", "rule": "manual", "score": None}]
        return st.add_event(w, "link", actor, reason, {"before": before, "after": after, "nolink_added": [],
                                                       "nolink_removed": removed})

    def unlink(self, patient_id: str, *, actor: str, reason: str | None = None,
               from_person: str | None = None) -> int:
        """A human says: this source is not the person it is linked to.
        ``from_person``: only if it is linked to that person now (HT-0441 otherwise:
        the review screen unlinks the pair it shows, not whatever the source became)."""
        return self.repo.transact(lambda w: self._unlink(w, patient_id, actor, reason, from_person))

    def _unlink(self, w: Writer, patient_id: str, actor: str, reason: str | None,
                from_person: str | None = None) -> int:
        src = self._locked_source(w, patient_id)
        read = st.writer_reader(w)
        if from_person is not None and src.person_id != from_person:
            raise Conflict("HT-0441", f"Patient/{patient_id} is not linked to {from_person} now")
        others = [s for s in st.sources_of(self.repo, read, [src.person_id]) if s.patient_id != patient_id]
        if not others:
            raise InvalidRequest("HT-0057", f"Patient/{patient_id} is the only source of its person")
        added = []
        for o in others:
            if st.add_nolink(w, patient_id, o.patient_id, actor, reason):
                added.append(sorted((patient_id, o.patient_id)))
        person = new_person_id()
        st.move_source(w, patient_id, person, "manual", "manual", None)
        st.close_reviews(w, patient_id, "obsolete", actor)
        # The items that linked this source are undone: off the linked list, with who and why.
        st.decide_reviews(w, patient_id, None, "linked", "unlinked", actor, reason)
        self._relink_source(w, patient_id, person)
        self._refresh(w, [person, src.person_id])
        after = [{**src.snapshot(), "person": person, "state": "manual", "rule": "manual", "score": None}]
        return st.add_event(w, "unlink", actor, reason, {"before": [src.snapshot()], "after": after,
                                                         "nolink_added": added, "nolink_removed": []})

    def merge(self, source_person: str, target_person: str, *, actor: str, reason: str | None = None) -> int:
        """Two persons are one: every source of ``source_person`` moves to
        ``target_person``; the former golden record stays, inactive, with
        ``replaced-by`` (Patient.link) so references to it still resolve."""
        if source_person == target_person:
            raise InvalidRequest("HT-0057", "cannot merge a person into itself")
        return self.repo.transact(lambda w: self._merge(w, source_person, target_person, actor, reason))

    def merge_in(self, w: Writer, source_person: str, target_person: str, *, actor: str,
                 reason: str | None = None) -> int:
        """merge inside an open write transaction (HL7 ADT^A40 with its message)."""
        return self._merge(w, source_person, target_person, actor, reason)

    def merge_registrations_in(self, w: Writer, prior: str, survivor: str, *, institution: str,
                               protected: Callable[[str], bool], actor: str, reason: str) -> MergeOutcome:
        """An institution says two of its registrations are one person (HL7 v2.5.1
        ch. 3.3.40 ADT^A40: ``prior`` from MRG-1 merges into ``survivor`` from
        PID-3; the caller has checked both are the institution's).

        The persons merge at once only when nothing but the institution's own
        registrations would move and nobody depends on the retired person: the
        person the prior registration belongs to is retired by a merge, so when
        it also holds another institution's registration, or a resident or
        delegate signs in as it, one institution's say-so would take over
        someone's identity (issue 12, finding 4).  Then the request becomes a
        review item (the prior registration, the survivor's person) a steward
        decides with $mpi-link / $mpi-merge, or rejects."""
        p, s = self.person_of_in(w, prior), self.person_of_in(w, survivor)
        if p is None or s is None or p == s:
            return MergeOutcome("unchanged")
        moving = st.sources_of(self.repo, st.writer_reader(w), [p])
        bodies = self._bodies(w, [m.patient_id for m in moving])
        foreign = [m.patient_id for m in moving if managing_org(bodies.get(m.patient_id) or {}) != institution]
        why = []
        if foreign:
            why.append(f"{len(foreign)} registration(s) another institution manages")
        if protected(p):
            why.append("a resident's or delegate's account")
        if not why:
            return MergeOutcome("merged", self._merge(w, p, s, actor, reason))
        note = (f"{st.MERGE_REQUEST} by {actor} ({reason}): Patient/{prior} into Patient/{survivor} would retire "
                f"{p}, which has " + " and ".join(why))
        st.open_review(w, prior, s, None, note[:500])
        return MergeOutcome("queued", note=note)

    def _merge(self, w: Writer, source_person: str, target_person: str, actor: str, reason: str | None) -> int:
        self._lock_persons(w, source_person, target_person)
        read = st.writer_reader(w)
        moving = st.sources_of(self.repo, read, [source_person])
        staying = st.sources_of(self.repo, read, [target_person])
        if not moving:
            raise NotFound("HT-0056", f"person {source_person} not found (it has no sources)")
        if not staying:
            raise NotFound("HT-0056", f"person {target_person} not found (it has no sources)")
        removed = []
        for m in moving:
            for s in staying:
                if st.remove_nolink(w, m.patient_id, s.patient_id):
                    removed.append(sorted((m.patient_id, s.patient_id)))
        before = [s.snapshot() for s in moving + staying]
        for m in moving:
            st.move_source(w, m.patient_id, target_person, "manual", "manual", None)
            st.close_reviews(w, m.patient_id, "linked", actor, target_person)
            self._relink_source(w, m.patient_id, target_person)
        for s in staying:
            if s.state != "manual":
                st.move_source(w, s.patient_id, target_person, "manual", "manual", None)
            st.close_reviews(w, s.patient_id, "linked", actor, source_person)
        self._refresh(w, [target_person, source_person], merged_into={source_person: target_person})
        after = [{**s.snapshot(), "person": target_person, "state": "manual", "rule": "manual", "score": None}
                 for s in moving + staying]
        return st.add_event(w, "merge", actor, reason, {"before": before, "after": after, "nolink_added": [],
                                                        "nolink_removed": removed})

    def undo(self, event_id: int, *, actor: str, reason: str | None = None) -> int:
        """Reverse a link, unlink or merge exactly (an unmerge restores both
        persons: same sources, same states, same golden content), provided
        nothing touched those sources since."""
        return self.repo.transact(lambda w: self._undo(w, event_id, actor, reason))

    def _undo(self, w: Writer, event_id: int, actor: str, reason: str | None) -> int:
        read = st.writer_reader(w)
        ev = st.get_event(self.repo, read, event_id)
        if ev is None:
            raise NotFound("HT-0056", f"MPI event {event_id} not found")
        kind, undone, detail = ev
        if undone:
            raise Conflict("HT-0058", f"MPI event {event_id} was already undone")
        if kind not in ("link", "unlink", "merge"):
            raise InvalidRequest("HT-0057", f"an MPI {kind} event cannot be undone")
        now = {s.patient_id: s for s in (st.get_source(self.repo, read, a["patient"]) for a in detail["after"])
               if s is not None}
        for a in detail["after"]:
            s = now.get(a["patient"])
            if s is None or s.person_id != a["person"] or s.state != a["state"]:
                raise Conflict("HT-0058", f"cannot undo event {event_id}: Patient/{a['patient']} changed since")
        touched: list[str] = []
        for b in detail["before"]:
            st.move_source(w, b["patient"], b["person"], b["state"], b["rule"], b["score"])
            self._relink_source(w, b["patient"], b["person"])
            # The review items follow the source back (undoing a link unlinks its item; undoing an
            # unlink links it again), each with who and why in its history (issue 16, item 6).
            why = reason or f"撤销主索引操作 #{event_id}"
            st.decide_reviews(w, b["patient"], None, "linked", "unlinked", actor, why, except_person=b["person"])
            st.decide_reviews(w, b["patient"], b["person"], "unlinked", "linked", actor, why)
            touched += [b["person"], now[b["patient"]].person_id]
        for a, b in detail["nolink_added"]:
            st.remove_nolink(w, a, b)
        for a, b in detail["nolink_removed"]:
            st.add_nolink(w, a, b, actor, f"restored by undoing event {event_id}")
        self._refresh(w, touched)
        st.mark_undone(w, event_id)
        return st.add_event(w, UNDO_KIND[kind], actor, reason, {"undoes": event_id, "before": detail["after"],
                                                           "after": detail["before"], "nolink_added": [],
                                                           "nolink_removed": []})

    def reject(self, review_id: int, *, actor: str, reason: str | None = None) -> None:
        """A reviewer says the pair is not the same person (remembered: no relink will pair them)."""
        def run(w: Writer) -> None:
            row = st.review_row(st.writer_reader(w), review_id)
            if row is None:
                raise NotFound("HT-0056", f"review item {review_id} not found")
            patient_id, person_id, status = row
            if status != "open":
                raise Conflict("HT-0058", f"review item {review_id} is {status}, not open")
            for m in st.sources_of(self.repo, st.writer_reader(w), [person_id]):
                if m.patient_id != patient_id:
                    st.add_nolink(w, patient_id, m.patient_id, actor, reason)
            st.decide_reviews(w, patient_id, person_id, "open", "rejected", actor, reason)
        self.repo.transact(run)

    def _need_source(self, read: st.Reader, patient_id: str) -> st.SourceRow:
        src = st.get_source(self.repo, read, patient_id)
        if src is None:
            raise NotFound("HT-0056", f"Patient/{patient_id} is not a source patient in the index")
        return src

    @staticmethod
    def _lock_persons(w: Writer, *persons: str) -> None:
        """A human decision (link, unlink, merge) holds the persons it changes until it
        commits.  SQLite writers are serialised already; on PostgreSQL two sessions
        (two nodes, or two connections of one) merging X into Y and Y into X at once
        each moved the other's sources and left two persons replaced by each other.
        Sorted, so two decisions never wait on each other crosswise."""
        for p in sorted(set(persons)):
            w.lock_key("mpi-person:" + p)

    def _locked_source(self, w: Writer, patient_id: str, *persons: str) -> st.SourceRow:
        """The source row, read again once its person (and ``persons``) are locked; a
        source another decision moved meanwhile is a conflict, not a stale decision."""
        src = self._need_source(st.writer_reader(w), patient_id)
        self._lock_persons(w, src.person_id, *persons)
        now = self._need_source(st.writer_reader(w), patient_id)
        if now.person_id != src.person_id:
            raise Conflict("HT-0443", f"Patient/{patient_id} was linked elsewhere meanwhile; look again")
        return now

    # ------------------------------------------------------------ backfill
    def backfill(self, batch: int = 500) -> int:
        """Link the Patients stored before the MPI existed (a database from an
        earlier version): each gets the inline treatment, one batch per
        transaction, and a new version carrying its person link."""
        done = 0
        after = 0
        while True:
            rows = st.unlinked_patients(st.repo_reader(self.repo), after, batch)
            if not rows:
                return done
            after = rows[-1][0]
            ids = [r[1] for r in rows]
            done += self.repo.transact(functools.partial(self._backfill_batch, ids=ids))

    def _backfill_batch(self, w: Writer, ids: list[str]) -> int:
        n = 0
        for pid in ids:
            cur = w.read_current("Patient", pid, lock=True)
            if cur is None or cur.body is None or pid.startswith(PERSON_PREFIX):
                continue
            body = orjson.loads(cur.body)
            if is_golden(body):
                continue
            body.pop("meta", None)
            self.on_write(w, "Patient", pid, body, cur)
            w.replace(cur, body, hooks=False)
            n += 1
        return n


_FIELD_ATTRS = {"id_number": ("ids", "bad_ids"), "name": ("names",), "birth_date": ("birth_dates",),
                "sex": ("sexes",), "phone": ("phones",), "address": ("addresses",),
                "health_card": ("health_cards",), "passport": ("passports",)}
