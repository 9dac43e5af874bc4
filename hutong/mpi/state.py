"""Reading and writing the MPI tables (hutong.mpi.schema).

``Reader`` runs read statements either inside an open write transaction (the
inline path: it must see this transaction's own links) or on the repository.
Features are stored through the store's codec (encrypted at rest once the
security layer installs its codec).  No SQL here is built from values: only
placeholders, and ``IN`` lists of placeholders.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from hutong.mpi.blocking import MAX_BLOCK
from hutong.mpi.features import Features, merge
from hutong.store.repository import Repository, Writer
from hutong.store.sql import sql_repository, sql_writer

Reader = Callable[[str, Sequence[Any]], list[Any]]
CHUNK = 400


def writer_reader(w: Writer) -> Reader:
    return lambda sql, args: list(sql_writer(w).execute(sql, args).fetchall())


def repo_reader(repo: Repository) -> Reader:
    return sql_repository(repo).query


@dataclass(slots=True)
class SourceRow:
    patient_id: str
    person_id: str
    state: str
    rule: str
    score: float | None
    seq: int
    updated: int
    features: Features

    def snapshot(self) -> dict[str, Any]:
        return {"patient": self.patient_id, "person": self.person_id, "state": self.state, "rule": self.rule,
                "score": self.score}


SOURCE_COLS = "patient_id, person_id, state, rule, score, seq, updated, features"


# Review items a sender's merge request opened (ADT^A40 that would retire a
# person other parties depend on) start with this; relinking keeps them.
MERGE_REQUEST = "merge request"

# Purposes bound into the ciphertexts (hutong.store.codec.Codec.with_purpose).
FEATURES, EVENT = "mpi-features", "mpi-event"


def decode_features(repo: Repository, blob: Any) -> Features:
    return Features.from_json(orjson.loads(repo.codec.with_purpose(FEATURES).decode(bytes(blob))))


def encode_features(repo: Repository, f: Features) -> bytes:
    return repo.codec.with_purpose(FEATURES).encode(orjson.dumps(f.to_json()))


def _source(repo: Repository, r: Sequence[Any]) -> SourceRow:
    return SourceRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], decode_features(repo, r[7]))


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(values), CHUNK):
        yield values[i:i + CHUNK]


def get_source(repo: Repository, read: Reader, patient_id: str) -> SourceRow | None:
    rows = read(f"SELECT {SOURCE_COLS} FROM mpi_source WHERE patient_id = ?", (patient_id,))
    return _source(repo, rows[0]) if rows else None


def sources_of(repo: Repository, read: Reader, person_ids: Sequence[str]) -> list[SourceRow]:
    out: list[SourceRow] = []
    for part in _chunks(sorted(set(person_ids))):
        out += [_source(repo, r) for r in read(
            f"SELECT {SOURCE_COLS} FROM mpi_source WHERE person_id IN ({_marks(len(part))}) ORDER BY seq",
            tuple(part))]
    return out


def candidate_persons(read: Reader, keys: Iterable[str], exclude_patient: str | None) -> set[str]:
    """Persons filed under any of ``keys`` (each key read at most MAX_BLOCK deep)."""
    persons: set[str] = set()
    for key in keys:
        rows = read("SELECT s.person_id, s.patient_id FROM mpi_block b JOIN mpi_source s "
                    "ON s.patient_id = b.patient_id WHERE b.key = ? LIMIT ?", (key, MAX_BLOCK))
        persons.update(p for p, src in rows if src != exclude_patient)
    return persons


def person_features(repo: Repository, read: Reader, person_ids: Iterable[str],
                    exclude_patient: str | None) -> dict[str, Features]:
    groups: dict[str, list[Features]] = defaultdict(list)
    for s in sources_of(repo, read, list(person_ids)):
        if s.patient_id != exclude_patient:
            groups[s.person_id].append(s.features)
    return {pid: merge(fs) for pid, fs in groups.items()}


def refused_patients(read: Reader, patient_id: str) -> set[str]:
    rows = read("SELECT a, b FROM mpi_nolink WHERE a = ? OR b = ?", (patient_id, patient_id))
    return {b if a == patient_id else a for a, b in rows}


def persons_of(read: Reader, patient_ids: Iterable[str]) -> dict[str, str]:
    ids = sorted(set(patient_ids))
    out: dict[str, str] = {}
    for part in _chunks(ids):
        out.update({r[0]: r[1] for r in read(
            f"SELECT patient_id, person_id FROM mpi_source WHERE patient_id IN ({_marks(len(part))})",
            tuple(part))})
    return out


# ------------------------------------------------------------------ writes
def put_source(w: Writer, row: SourceRow, *, blocks: set[str] | None, exists: bool) -> None:
    feats = encode_features(w.repo, row.features)
    if exists:
        sql_writer(w).execute("UPDATE mpi_source SET person_id = ?, state = ?, rule = ?, score = ?, updated = ?, features = ? "
                  "WHERE patient_id = ?",
                  (row.person_id, row.state, row.rule, row.score, row.updated, feats, row.patient_id))
    else:
        sql_writer(w).execute(f"INSERT INTO mpi_source ({SOURCE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                  (row.patient_id, row.person_id, row.state, row.rule, row.score, row.seq, row.updated, feats))
    if blocks is not None:
        if exists:
            sql_writer(w).execute("DELETE FROM mpi_block WHERE patient_id = ?", (row.patient_id,))
        if blocks:
            sql_writer(w).cur.executemany(sql_writer(w).db.sql("INSERT INTO mpi_block (key, patient_id) VALUES (?, ?)"),
                              [(k, row.patient_id) for k in sorted(blocks)])


def move_source(w: Writer, patient_id: str, person_id: str, state: str, rule: str, score: float | None) -> None:
    sql_writer(w).execute("UPDATE mpi_source SET person_id = ?, state = ?, rule = ?, score = ? WHERE patient_id = ?",
              (person_id, state, rule, score, patient_id))


def drop_source(w: Writer, patient_id: str) -> None:
    sql_writer(w).execute("DELETE FROM mpi_block WHERE patient_id = ?", (patient_id,))
    sql_writer(w).execute("DELETE FROM mpi_source WHERE patient_id = ?", (patient_id,))
    close_reviews(w, patient_id, "obsolete", None)


def close_reviews(w: Writer, patient_id: str, status: str, actor: str | None,
                  person_id: str | None = None, *, requests: bool = True) -> None:
    """Close the open review items of a source (of one candidate person).
    ``requests=False`` keeps merge requests a sender made (MERGE_REQUEST):
    those wait for a steward, whatever relinking does meanwhile."""
    sql = "UPDATE mpi_review SET status = ?, decided = ?, actor = ? WHERE patient_id = ? AND status = 'open'"
    args: list[Any] = [status, w.now, actor, patient_id]
    if not requests:
        sql += " AND reason NOT LIKE ?"
        args.append(MERGE_REQUEST + "%")
    if person_id is not None:
        sql += " AND person_id = ?"
        args.append(person_id)
    sql_writer(w).execute(sql, args)


def decide_reviews(w: Writer, patient_id: str, person_id: str | None, from_status: str, to_status: str,
                   actor: str, note: str | None, *, except_person: str | None = None) -> list[int]:
    """A human decision on the review items of a source (of one candidate
    person; or of every candidate but ``except_person``) in ``from_status``:
    each moves to ``to_status`` and gets a row in mpi_review_decision (who,
    when, note: the item's history, issue 16 item 6).  The item ids."""
    sql = "SELECT id FROM mpi_review WHERE patient_id = ? AND status = ?"
    args: list[Any] = [patient_id, from_status]
    if person_id is not None:
        sql += " AND person_id = ?"
        args.append(person_id)
    if except_person is not None:
        sql += " AND person_id <> ?"
        args.append(except_person)
    ids = [int(r[0]) for r in sql_writer(w).execute(sql + " ORDER BY id", args).fetchall()]
    for rid in ids:
        sql_writer(w).execute("UPDATE mpi_review SET status = ?, decided = ?, actor = ? WHERE id = ?",
                              (to_status, w.now, actor, rid))
        sql_writer(w).execute("INSERT INTO mpi_review_decision (review_id, at, decision, actor, note) "
                              "VALUES (?, ?, ?, ?, ?)", (rid, w.now, to_status, actor, note))
    return ids


def review_decisions(read: Reader, review_ids: Sequence[int]) -> dict[int, list[tuple[int, str, str, str | None]]]:
    """(at, decision, actor, note) of each item's decisions, newest first."""
    out: dict[int, list[tuple[int, str, str, str | None]]] = defaultdict(list)
    ids = sorted(set(review_ids))
    for i in range(0, len(ids), CHUNK):
        part = ids[i:i + CHUNK]
        for rid, at, decision, actor, note in read(
                "SELECT review_id, at, decision, actor, note FROM mpi_review_decision "
                f"WHERE review_id IN ({_marks(len(part))}) ORDER BY id DESC", tuple(part)):
            out[int(rid)].append((int(at), str(decision), str(actor), None if note is None else str(note)))
    return dict(out)


def open_review(w: Writer, patient_id: str, person_id: str, score: float | None, reason: str) -> None:
    if reason.startswith(MERGE_REQUEST) and sql_writer(w).execute(
            "SELECT 1 FROM mpi_review WHERE patient_id = ? AND person_id = ? AND status = 'open' AND reason LIKE ?",
            (patient_id, person_id, MERGE_REQUEST + "%")).fetchone():
        return  # the same request again (a resent or repeated merge): one item
    sql_writer(w).execute("INSERT INTO mpi_review (patient_id, person_id, score, reason, status, created) "
              "VALUES (?, ?, ?, ?, 'open', ?)", (patient_id, person_id, score, reason, w.now))


def add_nolink(w: Writer, a: str, b: str, actor: str, reason: str | None) -> bool:
    a, b = sorted((a, b))
    if sql_writer(w).execute("SELECT 1 FROM mpi_nolink WHERE a = ? AND b = ?", (a, b)).fetchone():
        return False
    sql_writer(w).execute("INSERT INTO mpi_nolink (a, b, at, actor, reason) VALUES (?, ?, ?, ?, ?)", (a, b, w.now, actor, reason))
    return True


def remove_nolink(w: Writer, a: str, b: str) -> bool:
    a, b = sorted((a, b))
    n = sql_writer(w).execute("DELETE FROM mpi_nolink WHERE a = ? AND b = ?", (a, b)).rowcount
    return bool(n)


def add_event(w: Writer, kind: str, actor: str, reason: str | None, detail: dict[str, Any]) -> int:
    blob = w.repo.codec.with_purpose(EVENT).encode(orjson.dumps(detail))
    sql_writer(w).execute("INSERT INTO mpi_event (at, kind, actor, reason, undone, detail) VALUES (?, ?, ?, ?, 0, ?)",
              (w.now, kind, actor, reason, blob))
    if w.repo.db.dialect == "postgresql":
        row = sql_writer(w).execute("SELECT lastval()").fetchone()
    else:
        row = sql_writer(w).execute("SELECT last_insert_rowid()").fetchone()
    return int(row[0])


def get_event(repo: Repository, read: Reader, event_id: int) -> tuple[str, int, dict[str, Any]] | None:
    rows = read("SELECT kind, undone, detail FROM mpi_event WHERE id = ?", (event_id,))
    if not rows:
        return None
    kind, undone, blob = rows[0]
    return kind, int(undone), orjson.loads(repo.codec.with_purpose(EVENT).decode(bytes(blob)))


def sources_after(read: Reader, patient_id: str, limit: int) -> list[tuple[str, Any]]:
    """(patient_id, encoded features) of source patients after ``patient_id``, in order."""
    return [(str(r[0]), r[1]) for r in read("SELECT patient_id, features FROM mpi_source WHERE patient_id > ? "
                                            "ORDER BY patient_id LIMIT ?", (patient_id, limit))]


def replace_blocks(w: Writer, patient_id: str, keys: Iterable[str]) -> None:
    """A source patient's blocking keys, replaced (e.g. made with another key)."""
    sql_writer(w).execute("DELETE FROM mpi_block WHERE patient_id = ?", (patient_id,))
    sql_writer(w).cur.executemany(sql_writer(w).db.sql("INSERT INTO mpi_block (key, patient_id) VALUES (?, ?)"),
                      [(k, patient_id) for k in sorted(keys)])


# ---------------------------------------------------------------- model, reviews, events (service, train, relink)
def active_model(read: Reader) -> tuple[int, bytes] | None:
    """(version, params JSON) of the active matching model."""
    rows = read("SELECT version, params FROM mpi_model WHERE active = 1 ORDER BY version DESC LIMIT 1", ())
    return (int(rows[0][0]), bytes(rows[0][1])) if rows else None


def save_model(w: Writer, created: int, params: bytes) -> int:
    """Store a new model version and make it the active one; its version."""
    row = sql_writer(w).execute("SELECT COALESCE(MAX(version), 0) FROM mpi_model").fetchone()
    version = int(row[0]) + 1
    sql_writer(w).execute("UPDATE mpi_model SET active = 0 WHERE active = 1")
    sql_writer(w).execute("INSERT INTO mpi_model (version, created, active, params) VALUES (?, ?, 1, ?)",
              (version, created, params))
    return version


def all_features(read: Reader) -> list[Any]:
    """Every source patient's encoded features, in link order."""
    return [r[0] for r in read("SELECT features FROM mpi_source ORDER BY seq, patient_id", ())]


def person_of(read: Reader, patient_id: str) -> str | None:
    rows = read("SELECT person_id FROM mpi_source WHERE patient_id = ?", (patient_id,))
    return str(rows[0][0]) if rows else None


def source_ids(read: Reader, person_id: str) -> list[str]:
    """The source patients linked to a person, in link order."""
    return [str(r[0]) for r in read("SELECT patient_id FROM mpi_source WHERE person_id = ? ORDER BY seq",
                                    (person_id,))]


def review_rows(read: Reader, status: str, after: int, limit: int) -> list[Any]:
    """(id, patient_id, person_id, score, reason, status, created, decided, actor) of review items."""
    return read("SELECT id, patient_id, person_id, score, reason, status, created, decided, actor FROM mpi_review "
                "WHERE status = ? AND id > ? ORDER BY id LIMIT ?", (status, after, limit))


def review_row(read: Reader, review_id: int) -> tuple[str, str, str] | None:
    """(patient_id, person_id, status) of one review item."""
    rows = read("SELECT patient_id, person_id, status FROM mpi_review WHERE id = ?", (review_id,))
    return (str(rows[0][0]), str(rows[0][1]), str(rows[0][2])) if rows else None


def open_review_pairs(read: Reader, reason_not_like: str) -> list[Any]:
    """(patient_id, person_id) of open review items whose reason is not like the pattern."""
    return read("SELECT patient_id, person_id FROM mpi_review WHERE status = 'open' AND reason NOT LIKE ?",
                (reason_not_like,))


def mark_undone(w: Writer, event_id: int) -> None:
    sql_writer(w).execute("UPDATE mpi_event SET undone = 1 WHERE id = ?", (event_id,))


def all_sources(read: Reader) -> list[Any]:
    """(patient_id, person_id, state, rule, score, features) of every source, in link order."""
    return read("SELECT patient_id, person_id, state, rule, score, features FROM mpi_source ORDER BY seq, "
                "patient_id", ())


def nolinks(read: Reader) -> list[Any]:
    """(a, b) of every pair reviewers said are not the same person."""
    return read("SELECT a, b FROM mpi_nolink", ())


def unlinked_patients(read: Reader, after_pk: int, limit: int) -> list[tuple[int, str]]:
    """(pk, id) of current Patients that are not source patients yet (stored before
    the MPI existed), golden records excluded, in pk order."""
    rows = read("SELECT r.pk, r.fhir_id FROM resource r LEFT JOIN mpi_source s ON s.patient_id = r.fhir_id "
                "WHERE r.type = 'Patient' AND r.deleted = 0 AND r.pk > ? AND s.patient_id IS NULL "
                "AND r.fhir_id NOT LIKE 'mpi-%' "
                "ORDER BY r.pk LIMIT ?", (after_pk, limit))
    return [(int(r[0]), str(r[1])) for r in rows]


def open_review_count(read: Reader) -> int:
    """Open review items: the MPI review queue's length (hutong.web.metrics)."""
    return int(read("SELECT COUNT(*) FROM mpi_review WHERE status = 'open'", ())[0][0])


def index_counts(read: Reader) -> dict[str, Any]:
    """Figures of the identity index: sources, persons, sources per link rule, open reviews."""
    return {
        "sources": read("SELECT COUNT(*) FROM mpi_source", ())[0][0],
        "persons": read("SELECT COUNT(DISTINCT person_id) FROM mpi_source", ())[0][0],
        "by_rule": {r: n for r, n in read("SELECT rule, COUNT(*) FROM mpi_source GROUP BY rule", ())},
        "open_reviews": read("SELECT COUNT(*) FROM mpi_review WHERE status = 'open'", ())[0][0],
    }
