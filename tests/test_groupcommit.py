"""Group commit keeps each request all-or-nothing while sharing COMMITs."""

from __future__ import annotations

import threading

import pytest
from fhirapi import patient

from hutong.errors import PreconditionFailed
from hutong.security.guard import as_operator
from hutong.store.sql import SqlRepository, SqlWriter


@pytest.fixture
def repo(repo: SqlRepository) -> SqlRepository:
    """The suite's repository, its writes acting as the local operator (an explicit principal)."""
    return as_operator(repo)


def test_concurrent_batches_commit_exactly_the_successful_requests(repo: SqlRepository) -> None:
    n_threads, per_thread = 12, 25
    errors: list[BaseException] = []
    ok: list[str] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        for i in range(per_thread):
            rid = f"t{t}-{i}"

            def op(w: SqlWriter, rid: str = rid, i: int = i) -> str:
                w.insert("Patient", rid, patient(idno=rid))
                # a second write in the same request, then a failure for every 5th request:
                w.insert("Patient", rid + "-b", patient(idno=rid + "b"))
                if i % 5 == 0:
                    raise PreconditionFailed("HT-0012", "deliberate failure")
                return rid

            try:
                r = repo.transact(op)
                with lock:
                    ok.append(r)
            except PreconditionFailed as e:
                with lock:
                    errors.append(e)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(errors) == n_threads * per_thread // 5
    stored = {s.split("-b")[0] for s in repo.existing_ids("Patient", [f"t{t}-{i}{x}" for t in range(n_threads)
                                                                    for i in range(per_thread) for x in ("", "-b")])}
    assert stored == set(ok)
    # both writes of each successful request are there, none of a failed one
    for rid in ok:
        assert repo.read("Patient", rid) is not None and repo.read("Patient", rid + "-b") is not None
    for t in range(n_threads):
        assert repo.read("Patient", f"t{t}-0") is None and repo.read("Patient", f"t{t}-0-b") is None


def test_transact_returns_and_raises(repo: SqlRepository) -> None:
    assert repo.transact(lambda w: w.insert("Patient", "one", patient()).id) == "one"
    with pytest.raises(ZeroDivisionError):
        repo.transact(lambda w: (w.insert("Patient", "two", patient()), 1 / 0))
    assert repo.read("Patient", "two") is None
