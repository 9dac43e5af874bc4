"""Property-based attack run against the server's own OpenAPI description
(issue 6, "schemathesis run against the OpenAPI description").

Schemathesis reads /openapi.json from the live server and, for every
operation, generates requests (paths, methods, query strings, bodies; valid
and invalid ones) that are sent with a resident's token and with no token
at all.  Every answer must be no server error (its ``not_a_server_error``
check); without a token, every non-public operation must be a 401
OperationOutcome; with the resident's token nothing of another resident may
come back.  SQLite only, a bounded number of examples per operation: the
deep fuzzing of search parameters is test_attacks.py's.

The Python API is used directly (not the pytest plugin) because the schema
is only known once the test's server runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import requests
import schemathesis
from harness import Server
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from region import S_ID, Region, build
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from hutong.web.gate import is_public

MAX_EXAMPLES = 15
EXAMPLE_SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                            suppress_health_check=list(HealthCheck), print_blob=False)


@pytest.fixture
def region(server: Server) -> Iterator[Region]:
    yield build(server)


def header(response: schemathesis.Response, name: str) -> str:
    """A response header (schemathesis keeps each as a list of values)."""
    for k, v in response.headers.items():
        if k.lower() == name:
            return v[0] if isinstance(v, list) else str(v)
    raise AssertionError(f"no {name} header")


def operations(server: Server) -> list[Any]:
    schema = schemathesis.openapi.from_url(server.root + "/openapi.json", timeout=30)
    ops = []
    for result in schema.get_all_operations():
        ops.append(result.ok())  # an operation schemathesis cannot read is a failure of its own
    return ops


def fuzz(server: Server, headers: dict[str, str], judge: Any,
         modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)) -> dict[str, int]:
    """Run every operation's examples (positive and negative generation);
    returns how many requests each operation got.  The first bad answer of
    each operation is kept (not raised: no shrinking, and every operation
    still gets its turn)."""
    sent: dict[str, int] = {}
    failures: dict[str, str] = {}

    def examples(op: Any, mode: GenerationMode, session: requests.Session) -> None:
        @EXAMPLE_SETTINGS
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            response = case.call(base_url=server.root, session=session, headers=headers, timeout=30)
            sent[op.label] = sent.get(op.label, 0) + 1
            try:
                case.validate_response(response, checks=[not_a_server_error])
                judge(case, response)
            except Exception as e:  # check failures and assertions alike
                failures.setdefault(op.label, f"{case.method} {case.formatted_path} {case.query or ''}: "
                                              f"{response.status_code} {type(e).__name__}: {str(e)[:300]}")

        try:
            run()
        except Unsatisfiable:
            # Negative generation of an operation with nothing to break (no
            # parameters, no body): there is no invalid request to make.
            assert mode == GenerationMode.NEGATIVE, op.label

    with requests.Session() as session:
        for op in operations(server):
            for mode in modes:
                examples(op, mode, session)
    assert not failures, f"{len(failures)} operations failed:\n" + "\n".join(failures.values())
    return sent


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_schemathesis_without_a_token(server: Server) -> None:
    def judge(case: Any, response: schemathesis.Response) -> None:
        path = case.formatted_path
        if response.status_code == 404 or is_public(path):
            return  # an unmatched path (generated ids with "/") or a public route
        assert response.status_code == 401, (path, response.status_code, response.text[:200])
        assert header(response, "content-type").startswith("application/fhir+json")
        assert orjson.loads(response.content)["resourceType"] == "OperationOutcome"
        assert header(response, "www-authenticate").startswith("Bearer")

    # The gate answers before any input is read, so invalid inputs add
    # nothing here; they are generated for the resident below.
    sent = fuzz(server, {}, judge, (GenerationMode.POSITIVE,))
    assert len(sent) >= 40, sorted(sent)  # every operation was tried
    assert server.app.platform.audit.verify().ok


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_schemathesis_as_a_resident(region: Region) -> None:
    server = region.server
    token = server.token(region.accounts["R"])
    s_markers = (region.ids["S"], region.ids["obsS"], region.ids["encS"], S_ID, "李")

    def judge(case: Any, response: schemathesis.Response) -> None:
        assert response.status_code != 401, (case.formatted_path, response.text[:200])  # the token is good
        if response.status_code < 400:
            # Generated requests never name S, so nothing of S may appear at all
            # (S's source Patient id is left out: R's own "trap" Observation names it).
            text = response.text
            found = {m for m in s_markers if m in text}
            assert not found, (case.formatted_path, found)

    sent = fuzz(server, {"authorization": f"Bearer {token}"}, judge)
    assert len(sent) >= 40, sorted(sent)
    assert server.app.platform.audit.verify().ok
