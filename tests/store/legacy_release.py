"""Build a small region with an earlier release's code (run by test_migrations.py).

Run as ``python legacy_release.py URL DATA_DIR`` with that release's source
tree (``git archive <commit>``) first on PYTHONPATH and as the working
directory, so ``hutong`` below is the old code, not this checkout's.  Uses only
the old release's own command line, as an operator of that release would:
a bulk import (Patients, Organizations, Practitioners, Encounters, Conditions,
AllergyIntolerances; the MPI links every Patient as it is written), the
Patients imported a second time (second versions), a platform client and a
an auditor account (password and TOTP); each command leaves an audit row.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hutong.cli import main


def run(*argv: str) -> None:
    rc = main(list(argv))
    if rc != 0:
        raise SystemExit(f"hutong {' '.join(argv)} exited {rc}")


if __name__ == "__main__":
    url, data = sys.argv[1], Path(sys.argv[2])
    import hutong

    expected = os.environ["LEGACY_SOURCE"]
    if not str(Path(hutong.__file__).resolve()).startswith(str(Path(expected).resolve())):
        raise SystemExit(f"hutong imported from {hutong.__file__}, not from the release under {expected}")
    run("import", "--quiet", "--database", url, str(data))
    run("import", "--quiet", "--database", url, str(data / "Patient.000.ndjson"))
    run("accounts", "--database", url, "add-client", "Legacy platform engine", "--platform")
    run("accounts", "--database", url, "add-user", "auditor.legacy", "--role", "auditor", "--name", "Legacy Auditor")
