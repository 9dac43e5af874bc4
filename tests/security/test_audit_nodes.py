"""Issue 18, item 2: one audit chain per node, anchored into a shared ledger.

Several ``hutong serve`` nodes on one database each append to their own chain
(HUTONG_NODE_ID), under their own lock; ``hutong audit verify`` checks every
chain, every published head and every ledger entry.  Each node here is an
AuditLog on its own connection pool (what another process has); tampering is
done with direct SQL, as someone holding the database does.  Both databases
unless the test says otherwise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from hutong.cli import main
from hutong.errors import ConfigError
from hutong.fhir.assembly import open_repository
from hutong.security.audit import DAY_MS, EVENT_COLS, AuditLog, row_hash
from hutong.security.events import AuditRecord
from hutong.security.principal import Principal, Role
from hutong.security.settings import SecuritySettings
from hutong.store import migrations
from hutong.store.sql import SqlRepository

DOCTOR = Principal(account_id="acc-doc-n", role=Role.CLINICIAN, display="赵医生", organization="H003")


@pytest.fixture(autouse=True)
def key_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own key directory and heads file (shared by its nodes, as on one host)."""
    d = tmp_path / "keys"
    monkeypatch.setenv("HUTONG_KEY_DIR", str(d))
    for name in ("HUTONG_AUDIT_HEADS", "HUTONG_AUDIT_RETENTION_DAYS", "HUTONG_NODE_ID", "HUTONG_AUDIT_HEAD_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    return d


class Nodes:
    """AuditLogs of several nodes on one database, each on its own pool."""

    def __init__(self, db_url: str) -> None:
        self.url = db_url
        self.repos: list[SqlRepository] = []
        self.logs: dict[str, AuditLog] = {}

    def node(self, name: str, **settings: Any) -> AuditLog:
        repo = open_repository(self.url)
        self.repos.append(repo)
        log = AuditLog(repo, settings=SecuritySettings(node_id=name, **settings))
        self.logs[name] = log
        return log

    def close(self) -> None:
        for r in self.repos:
            r.db.close()


@pytest.fixture
def nodes(db_url: str) -> Iterator[Nodes]:
    n = Nodes(db_url)
    yield n
    n.close()


def read(person: str, **kw: Any) -> AuditRecord:
    return AuditRecord(action="read", principal=DOCTOR, persons=(person,), purpose="treatment",
                       entities=(f"Patient/{person}",), **kw)


def sql(repo: SqlRepository, statement: str, args: tuple[Any, ...] = ()) -> None:
    with repo.db.connection() as conn:
        conn.cursor().execute(repo.db.sql(statement), args)


def chain_rows(repo: SqlRepository, chain: str) -> list[tuple[int, int]]:
    return [(int(s), int(c)) for s, c in repo.query("SELECT seq, chain_seq FROM audit_event WHERE chain = ? "
                                                    "ORDER BY seq", (chain,))]


def cli_verify(capsys: pytest.CaptureFixture[str], url: str) -> dict[str, Any]:
    capsys.readouterr()
    rc = main(["audit", "--database", url, "verify"])
    out: dict[str, Any] = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == (0 if out["ok"] else 1)
    return out


def two_nodes(nodes: Nodes, n: int = 6) -> tuple[AuditLog, AuditLog]:
    """Nodes a and b, interleaved appends, each chain's head published (heads file and ledger)."""
    a, b = nodes.node("a"), nodes.node("b")
    for i in range(n):
        a.record(read(f"mpi-a{i}"))
        b.record(read(f"mpi-b{i}"))
    a.publish_head()
    b.publish_head()
    return a, b


# --------------------------------------------------------------------------- appends


def test_nodes_append_concurrently_each_chain_verifies(nodes: Nodes, capsys: pytest.CaptureFixture[str]) -> None:
    """Three nodes (a, b and the unnamed single chain), four threads each, interleaved:
    every record lands once in its node's chain, positions 1..N, the whole verifies."""
    logs = [nodes.node("a", audit_head_seconds=0), nodes.node("b"), nodes.node("")]
    per_thread = 25
    errors: list[BaseException] = []
    got: dict[str, list[int]] = {"a": [], "b": [], "": []}
    lock = threading.Lock()

    def worker(log: AuditLog, k: int) -> None:
        try:
            mine = [log.record(read(f"mpi-{log.chain}{k}")) for _ in range(per_thread)]
            with lock:
                got[log.chain] += mine
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(log, k)) for log in logs for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    repo = nodes.repos[0]
    all_seqs = [s for seqs in got.values() for s in seqs]
    assert len(set(all_seqs)) == len(all_seqs) == 3 * 4 * per_thread
    for chain, seqs in got.items():
        rows = chain_rows(repo, chain)
        assert [s for s, _c in rows] == sorted(seqs)                 # each record in its node's chain
        assert [c for _s, c in rows] == list(range(1, len(seqs) + 1))  # positions without gaps
    # node a published a head (and a ledger entry) after every batch: all of them check out
    assert int(repo.query("SELECT COUNT(*) FROM audit_ledger WHERE chain = 'a'")[0][0]) >= 1
    v = logs[0].verify()
    assert v.ok and v.rows == 300, v
    assert {c.chain: c.rows for c in v.chains} == {"": 100, "a": 100, "b": 100}
    assert v.chain == "a" and v.head_seq == max(got["a"])
    out = cli_verify(capsys, nodes.url)
    assert out["ok"] is True and out["rows"] == 300 and "chain" not in out
    assert {c["chain"]: c["rows"] for c in out["chains"]} == {"": 100, "a": 100, "b": 100}
    assert all(c["ok"] for c in out["chains"])


def test_a_node_does_not_wait_on_another_nodes_open_transaction(db_url: str, nodes: Nodes) -> None:
    """PostgreSQL: node a holds a write transaction with its audit row in it (so its
    chain lock) while node b records; b's record commits meanwhile.  The same wait on
    a's own chain does block (what every node did with one chain)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: there is nothing to wait on but the write lock")
    a, b = nodes.node("a"), nodes.node("b")
    a2 = nodes.node("a")   # a second process of node a (same chain)
    holding, release = threading.Event(), threading.Event()

    def hold(w: Any) -> int:
        s = a.record_in(w, read("mpi-held"))
        holding.set()
        assert release.wait(30)
        return s

    t = threading.Thread(target=lambda: a.repo.transact(hold))
    t.start()
    try:
        assert holding.wait(30)
        done: list[float] = []

        def timed(log: AuditLog) -> None:
            t0 = time.monotonic()
            log.record(read("mpi-other"))
            done.append(time.monotonic() - t0)

        other = threading.Thread(target=timed, args=(b,))
        other.start()
        other.join(10)
        assert done and done[0] < 5, "node b waited on node a's transaction"
        same = threading.Thread(target=timed, args=(a2,))
        same.start()
        same.join(1.5)
        assert len(done) == 1 and same.is_alive(), "the same chain's append did not wait on its lock"
    finally:
        release.set()
        t.join(30)
    same.join(30)
    assert len(done) == 2
    assert a.verify().ok


# --------------------------------------------------------------------------- tampering


def test_edit_of_a_row_of_another_nodes_chain_is_detected(nodes: Nodes, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = two_nodes(nodes)
    repo = a.repo
    assert a.verify().ok
    seq = chain_rows(repo, "b")[2][0]
    sql(repo, "UPDATE audit_event SET account_id = 'acc-nobody' WHERE seq = ?", (seq,))
    v = a.verify()
    assert not v.ok and v.bad_seq == seq and v.reason == f"chain b: hash mismatch at seq {seq}", v
    out = cli_verify(capsys, nodes.url)
    assert out["ok"] is False and out["bad_seq"] == seq
    assert [c["chain"] for c in out["chains"] if not c["ok"]] == ["b"]


def test_deleted_middle_row_of_a_chain_is_detected(nodes: Nodes) -> None:
    a, _b = two_nodes(nodes)
    rows = chain_rows(a.repo, "a")
    seq = rows[3][0]
    for t in ("audit_person", "audit_event"):
        sql(a.repo, f"DELETE FROM {t} WHERE seq = ?", (seq,))  # noqa: S608
    v = a.verify()
    assert not v.ok and v.bad_seq == rows[4][0], v
    assert v.reason == f"chain a: gap between positions 3 and 5 (at seq {rows[4][0]})"


def test_tail_cut_below_a_ledger_entry_is_detected(nodes: Nodes, key_dir: Path) -> None:
    """Rows cut off the end of chain a, below the head its node noted in the ledger;
    the heads file is gone too (another host's): the ledger alone shows it."""
    a, b = two_nodes(nodes)
    (key_dir / "audit-heads.ndjson").unlink()
    rows = chain_rows(a.repo, "a")
    for t in ("audit_person", "audit_event"):
        sql(a.repo, f"DELETE FROM {t} WHERE seq >= ?", (rows[-2][0],))  # noqa: S608  (b's last rows go too)
    v = a.verify()
    assert not v.ok and "rows were cut off the end" in (v.reason or ""), v
    assert v.bad_seq == rows[-1][0] and "ledger entry" in (v.reason or "")


def test_a_whole_chain_deleted_is_detected(nodes: Nodes, key_dir: Path) -> None:
    """Every row of chain b and its registration deleted, the heads file gone: the
    ledger still names b's head."""
    a, _b = two_nodes(nodes)
    (key_dir / "audit-heads.ndjson").unlink()
    for t in ("audit_person", "audit_event"):
        sql(a.repo, f"DELETE FROM {t} WHERE seq IN (SELECT seq FROM audit_event WHERE chain = 'b')")  # noqa: S608
    sql(a.repo, "DELETE FROM audit_chain WHERE chain = 'b'")
    v = a.verify()
    assert not v.ok and v.reason is not None and "of chain b, but it ends at seq 0" in v.reason, v


def test_row_moved_between_chains_is_detected(nodes: Nodes) -> None:
    """a's newest row (after its published head) moved to the end of chain b, its
    position and prev_hash fitted to b: chain a verifies as shorter (nothing named the
    row), but b does not: a node chain's hashes cover the chain's name and the position."""
    a, b = two_nodes(nodes)
    repo = a.repo
    seq = a.record(read("mpi-last"))
    b_seq, b_pos = chain_rows(repo, "b")[-1]
    b_hash = str(repo.query("SELECT hash FROM audit_event WHERE seq = ?", (b_seq,))[0][0])
    sql(repo, "UPDATE audit_event SET chain = 'b', chain_seq = ?, prev_hash = ? WHERE seq = ?",
        (b_pos + 1, b_hash, seq))
    v = a.verify()
    failed = {c.chain: c for c in v.chains if not c.ok}
    assert not v.ok and set(failed) == {"b"}, v
    assert v.bad_seq == seq and v.reason == f"chain b: hash mismatch at seq {seq}", v
    sql(repo, "DELETE FROM audit_person WHERE seq = ?", (seq,))
    sql(repo, "DELETE FROM audit_event WHERE seq = ?", (seq,))
    assert a.verify().ok
    # ... and a row of chain "" (hashed without a chain name) moved to the end of chain a, fitted, likewise
    s0 = nodes.node("").record(read("mpi-0"))
    a_seq, a_pos = chain_rows(repo, "a")[-1]
    a_hash = str(repo.query("SELECT hash FROM audit_event WHERE seq = ?", (a_seq,))[0][0])
    sql(repo, "UPDATE audit_event SET chain = 'a', chain_seq = ?, prev_hash = ? WHERE seq = ?",
        (a_pos + 1, a_hash, s0))
    v = a.verify()
    assert not v.ok and v.reason == f"chain a: hash mismatch at seq {s0}", v


def test_planted_chain_is_detected(nodes: Nodes) -> None:
    """A chain 'evil' made from a copy of chain a's rows (new seqs, the name changed):
    its hashes cover its name and seqs, so it fails at its first row; rows made up
    without the chain key fail too."""
    a, _b = two_nodes(nodes)
    repo = a.repo
    cols = EVENT_COLS + ", chain, chain_seq"
    top = int(repo.query("SELECT MAX(seq) FROM audit_event")[0][0])
    src = [tuple(r) for r in repo.query(f"SELECT {cols} FROM audit_event WHERE chain = 'a' ORDER BY seq")]  # noqa: S608
    marks = ", ".join("?" * 17)
    for k, r in enumerate(src):
        sql(repo, f"INSERT INTO audit_event ({cols}) VALUES ({marks})",  # noqa: S608
            (top + 1 + k, *r[1:15], "evil", r[16]))
    v = a.verify()
    assert not v.ok and v.reason == f"chain evil: hash mismatch at seq {top + 1}", v
    sql(repo, "DELETE FROM audit_event WHERE chain = 'evil'")
    body = b"J{}"
    h = row_hash("0" * 64, top + 1, 1, "read", "0", "acc-x", None, None, None, None, None, None, 0, body)
    sql(repo, f"INSERT INTO audit_event ({cols}) VALUES (?, 1, 'read', '0', 'acc-x', NULL, NULL, NULL, "  # noqa: S608
              "NULL, NULL, NULL, 0, ?, ?, ?, 'evil', 1)", (top + 1, body, "0" * 64, h))
    v = a.verify()
    assert not v.ok and v.reason == f"chain evil: hash mismatch at seq {top + 1}", v


def test_edited_ledger_is_detected(nodes: Nodes) -> None:
    a, _b = two_nodes(nodes)
    assert a.verify().ok
    sql(a.repo, "UPDATE audit_ledger SET chain_seq = chain_seq - 1 WHERE chain = 'b'")
    v = a.verify()
    assert not v.ok and "ledger entry" in (v.reason or "") and "does not verify" in (v.reason or ""), v


# --------------------------------------------------------------------------- purge


def test_purge_of_one_chain_leaves_the_others_verifiable(nodes: Nodes, capsys: pytest.CaptureFixture[str]) -> None:
    now = int(time.time() * 1000)
    a, b = nodes.node("a"), nodes.node("b")
    for age in (400, 300, 200):
        a.record(read("mpi-old", time_ms=now - age * DAY_MS))
    a.publish_head()                # a ledger entry naming the row that becomes a's anchor
    for i in range(3):
        a.record(read(f"mpi-a{i}"))
        b.record(read(f"mpi-b{i}"))
    a.publish_head()
    b.publish_head()
    old = chain_rows(a.repo, "a")[:3]
    res = b.purge()                 # any node purges every chain's old prefix, each in its own chain
    assert res.rows == 3 and res.through_seq == old[-1][0] and res.chains == {"a": 3}
    assert [s for s, _c in chain_rows(a.repo, "a")][:1] != [old[0][0]]
    v = a.verify()
    assert v.ok and {c.chain: c.anchor_seq for c in v.chains}["a"] == old[-1][0], v
    assert {c.chain: c.rows for c in v.chains} == {"": 0, "a": 4, "b": 3}   # a: 3 kept + its audit-purge record
    purge_rec = a.search(action="audit-purge")[0]
    assert purge_rec.extra["through_seq"] == str(old[-1][0]) and purge_rec.extra["through_chain_seq"] == "3"
    a.record(read("mpi-after"))
    b.record(read("mpi-after"))
    assert cli_verify(capsys, nodes.url)["ok"] is True
    # a planted anchor in chain a (older rows deleted, the anchor moved up) is still seen
    first_kept = chain_rows(a.repo, "a")[0][0]
    h = str(a.repo.query("SELECT hash FROM audit_event WHERE seq = ?", (first_kept,))[0][0])
    for t in ("audit_person", "audit_event"):
        sql(a.repo, f"DELETE FROM {t} WHERE seq = ?", (first_kept,))  # noqa: S608
    sql(a.repo, "UPDATE audit_anchor SET seq = ?, chain_seq = 4, hash = ? WHERE chain = 'a'", (first_kept, h))
    v = a.verify()
    assert not v.ok and v.reason is not None and v.reason.startswith("chain a: the anchor at seq"), v


# --------------------------------------------------------------------------- upgrade


def _back_to_0006(repo: SqlRepository) -> None:
    """What a database of the release before 0007 looks like: no chain columns, no
    ledger (the rows themselves are what that release wrote: chain "" hashes never
    covered the new columns)."""
    pg = repo.db.dialect == "postgresql"
    for stmt in ("DROP INDEX ix_audit_event_chain", "ALTER TABLE audit_event DROP COLUMN chain",
                 "ALTER TABLE audit_event DROP COLUMN chain_seq", "DROP INDEX ux_audit_anchor_chain",
                 "ALTER TABLE audit_anchor DROP COLUMN chain", "ALTER TABLE audit_anchor DROP COLUMN chain_seq",
                 "DROP INDEX ux_audit_chain_chain", "ALTER TABLE audit_chain DROP COLUMN chain",
                 "DROP TABLE audit_ledger", *(["DROP SEQUENCE audit_seq"] if pg else []),
                 f"UPDATE {migrations.VERSION_TABLE} SET version_num = '0006'"):  # noqa: S608
        sql(repo, stmt)


def test_single_chain_database_upgrades_then_gains_a_second_chain(
        db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    now = int(time.time() * 1000)
    repo = open_repository(db_url)
    old = AuditLog(repo)
    for age in (300, 250):
        old.record(read("mpi-old", time_ms=now - age * DAY_MS))
    old.purge()
    for i in range(4):
        old.record(read(f"mpi-{i}"))
    old.publish_head()
    before = [tuple(r) for r in repo.query(f"SELECT {EVENT_COLS} FROM audit_event ORDER BY seq")]  # noqa: S608
    # a row as the earlier release hashed it (v2, no chain): unchanged by this release
    r = before[-1]
    assert row_hash(str(r[13]), *r[:13], key=old.keys.chain_key) == str(r[14])
    _back_to_0006(repo)
    repo.db.close()

    capsys.readouterr()
    assert main(["db", "upgrade", "--database", db_url]) == 0
    assert "(head)" in capsys.readouterr().out
    repo = open_repository(db_url)
    try:
        assert [tuple(r) for r in repo.query(f"SELECT {EVENT_COLS} FROM audit_event ORDER BY seq")] == before  # noqa: S608
        assert [(s, c) for s, c in chain_rows(repo, "")] == [(int(r[0]), int(r[0])) for r in before]
        out = cli_verify(capsys, db_url)
        assert out["ok"] is True and out["rows"] == len(before) and out["anchor_seq"] == 2 and "chains" not in out
        # A second node joins: its own chain; the single chain goes on beside it.
        monkeypatch.setenv("HUTONG_NODE_ID", "node-2")
        second = AuditLog(repo)
        monkeypatch.delenv("HUTONG_NODE_ID")
        single = AuditLog(repo)
        for i in range(3):
            second.record(read(f"mpi-n{i}"))
            single.record(read(f"mpi-s{i}"))
        second.publish_head()
        single.publish_head()
        out = cli_verify(capsys, db_url)
        assert out["ok"] is True and out["rows"] == len(before) + 6, out
        assert {c["chain"]: c["rows"] for c in out["chains"]} == {"": len(before) + 3, "node-2": 3}
        assert [c for _s, c in chain_rows(repo, "")] == list(range(3, 3 + len(before) + 3))
    finally:
        repo.db.close()


# --------------------------------------------------------------------------- the setting


@pytest.mark.parametrize("value", ["Node-A", "a b", "-a", "x" * 33, "节点"])
def test_bad_node_id_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTONG_NODE_ID", value)
    with pytest.raises(ConfigError) as e:
        SecuritySettings.from_env()
    assert e.value.code == "HT-0149" and "HUTONG_NODE_ID" in e.value.message


def test_bad_node_id_in_code_made_settings_is_refused(repo: SqlRepository) -> None:
    with pytest.raises(ConfigError) as e:
        AuditLog(repo, settings=SecuritySettings(node_id="a:b"))
    assert e.value.code == "HT-0149"
    assert SecuritySettings(node_id="node-7").node_id == "node-7"
