"""The storage seam, as a contract (issue 13, item 1; DESIGN.md "Architecture").

SQL lives only in ``hutong/store/`` and in one data-access module per package
that owns tables (``hutong/security/*_store.py``, ``hutong/mpi/state.py``,
``hutong/ingest/inbox.py``, ``hutong/quality/quality_store.py``). Every other
module programs against the Protocols of ``hutong/store/repository.py``: it
writes no SQL and imports none of the store's concrete classes
(``SqlRepository``, ``SqlWriter``, ``Database``, ...) nor its private names.

The checker reads source, not running code (``ast``), so it also measures an
old commit: ``python tests/test_layering.py DIR`` prints, per module under
``DIR/hutong``, the SQL string literals and the concrete-store imports, and the
totals inside and outside the allowed modules.

Measured with this checker (SQL string literals / import statements of the
store's concrete classes or private names, outside the allowed modules):
bc329d5 130 statements in 18 modules / 40 imports in 35 modules (among them
fhir/bundle.py's ``_row`` and its SQLite planner hints); after issue 13 item 1,
0 / 0 (the composition root ``hutong/platform.py`` builds the one
``SqlRepository``). The data-access modules take the Protocols too and narrow
them with ``hutong.store.sql.sql_writer``/``sql_repository``/``sql_database``.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A string is an SQL statement when it starts with a statement keyword followed
# by the shape of a statement, so that prose ("Select a patient", the HTTP
# method "DELETE") is not taken for SQL.
SQL_START = re.compile(
    r"""^\s*(?:
        SELECT\s.*?\bFROM\b | SELECT\s+(?:\d|\(|COUNT|MAX|MIN|EXISTS|1\b|pg_|current_|version|sqlite_)
      | INSERT\s+(?:OR\s+\w+\s+)?INTO\s | UPDATE\s+["\w.]+\s+SET\s | DELETE\s+FROM\s
      | CREATE\s+(?:UNIQUE\s+|TEMP(?:ORARY)?\s+)?(?:TABLE|INDEX|VIEW|TRIGGER)\s
      | PRAGMA\s+\w | WITH\s+(?:RECURSIVE\s+)?\w+(?:\s*\([^)]*\))?\s+AS\s*\(
      | ALTER\s+TABLE\s | DROP\s+(?:TABLE|INDEX|VIEW|TRIGGER)\s | TRUNCATE\s | ANALYZE\b | VACUUM\b
    )""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)

STORE_IMPL = ("hutong.store.sql", "hutong.store.database")

# Where SQL belongs for good: the store and one data-access module per package
# that owns tables.
ALLOWED = (
    "hutong/store/*",
    "hutong/security/*_store.py",
    "hutong/mpi/state.py",
    "hutong/ingest/inbox.py",
    "hutong/quality/quality_store.py",
    "hutong/cds/knowledge_store.py",  # decision-support knowledge (issue 14, item 2)
)

# The composition root builds the concrete repository (DESIGN.md: platform.py),
# so it may import the store's classes; it writes no SQL either.
COMPOSITION_ROOT = ("hutong/platform.py",)

# Modules not yet moved behind the seam, each with its owner. Empty since the
# callers took the store Protocols (issue 13 item 1); it stays as the one place an
# exception would have to be argued, and it only shrinks.
NOT_YET_MOVED: dict[str, str] = {}


@dataclass(frozen=True)
class Finding:
    module: str
    line: int
    kind: str  # "sql" or "import"
    text: str


def _concrete_names(root: Path) -> set[str]:
    """The classes that ``hutong.store.sql`` and ``hutong.store.database`` define,
    except Protocols (interfaces are fine to import)."""
    names: set[str] = set()
    for mod in STORE_IMPL:
        path = root / (mod.replace(".", "/") + ".py")
        if not path.exists():
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                if "Protocol" not in bases:
                    names.add(node.name)
    return names


def _string_of(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):  # f"SELECT ... {x}": the constant parts with a placeholder
        return "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "x"
                       for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):  # "SELECT " + COLS + " FROM t"
        left, right = _string_of(node.left), _string_of(node.right)
        if left is None and right is None:
            return None
        return (left if left is not None else "x") + (right if right is not None else "x")
    return None


def _parts(node: ast.expr) -> list[ast.expr]:
    """The nodes a string expression is made of (counted once, as the whole)."""
    if isinstance(node, ast.JoinedStr):
        return list(node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return [node.left, node.right, *_parts(node.left), *_parts(node.right)]
    return []


def check_source(module: str, source: str, concrete: set[str]) -> list[Finding]:
    """Every SQL string literal and every concrete-store import in one module."""
    tree = ast.parse(source)
    inside = {id(p) for n in ast.walk(tree) if isinstance(n, (ast.JoinedStr, ast.BinOp)) for p in _parts(n)}
    found: list[Finding] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Constant, ast.JoinedStr, ast.BinOp)) and id(node) not in inside:
            text = _string_of(node)
            if text is not None and SQL_START.match(text):
                found.append(Finding(module, node.lineno, "sql", " ".join(text.split())[:70]))
        elif isinstance(node, ast.ImportFrom) and node.module in STORE_IMPL:
            bad = [a.name for a in node.names if a.name in concrete or a.name.startswith("_") or a.name == "*"]
            if bad:
                found.append(Finding(module, node.lineno, "import", f"{node.module}: {', '.join(bad)}"))
        elif isinstance(node, ast.ImportFrom) and node.module == "hutong.store":
            bad = [a.name for a in node.names if a.name in ("sql", "database") or a.name in concrete]
            if bad:
                found.append(Finding(module, node.lineno, "import", f"hutong.store: {', '.join(bad)}"))
        elif isinstance(node, ast.Import):
            bad = [a.name for a in node.names if a.name in STORE_IMPL]
            if bad:
                found.append(Finding(module, node.lineno, "import", ", ".join(bad)))
    return found


def scan(root: Path) -> dict[str, list[Finding]]:
    concrete = _concrete_names(root)
    out: dict[str, list[Finding]] = {}
    for path in sorted((root / "hutong").rglob("*.py")):
        module = path.relative_to(root).as_posix()
        out[module] = check_source(module, path.read_text(encoding="utf-8"), concrete)
    return out


def allowed(module: str) -> bool:
    return any(fnmatch(module, pattern) for pattern in ALLOWED)


def test_sql_and_concrete_store_imports_only_in_data_access_modules() -> None:
    found = scan(ROOT)
    offenders = {m: [x for x in f if not (m in COMPOSITION_ROOT and x.kind == "import")]
                 for m, f in found.items() if not allowed(m) and m not in NOT_YET_MOVED}
    offenders = {m: f for m, f in offenders.items() if f}
    assert not offenders, "\n".join(
        f"{x.module}:{x.line}: {x.kind}: {x.text}" for fs in offenders.values() for x in fs)


def test_no_module_outside_the_seam_names_the_sql_classes() -> None:
    """Not even through the ``hutong.store`` package or a type-checking import:
    callers take ``Repository``/``Writer``/``DatabaseHandle`` (hutong.store.repository)."""
    found = scan(ROOT)
    imports = [f for m, fs in found.items() if not allowed(m) and m not in COMPOSITION_ROOT
               for f in fs if f.kind == "import"]
    assert not imports, imports


def test_checker_catches_a_deliberate_violation() -> None:
    concrete = _concrete_names(ROOT)
    assert {"SqlRepository", "SqlWriter", "Database"} <= concrete
    source = '''
from hutong.store.sql import SqlRepository, _row
from hutong.store.repository import Repository
import hutong.store.database
from hutong.store import Database

def f(repo: SqlRepository, w, t: str) -> None:
    w.conn.exec_driver_sql("select pk from resource where fhir_id = ?", ("x",))
    w.conn.exec_driver_sql(f"DELETE FROM {t} WHERE pk = ?", (1,))
    w.conn.exec_driver_sql("""
        INSERT INTO audit_log (at) VALUES (?)""", (1,))
    label = "Select a patient"       # prose, not SQL
    method = "DELETE"                 # an HTTP method, not SQL
    """Update the index, then delete from the cache."""
'''
    found = check_source("hutong/fhir/evil.py", source, concrete)
    kinds = sorted((f.kind, f.line) for f in found)
    assert kinds == [("import", 2), ("import", 4), ("import", 5), ("sql", 8), ("sql", 9), ("sql", 10)], found
    assert "_row" in found[0].text or any("_row" in f.text for f in found)
    # and the contract itself fails on it: the module is neither allowed nor listed
    assert not allowed("hutong/fhir/evil.py") and "hutong/fhir/evil.py" not in NOT_YET_MOVED
    assert allowed("hutong/security/accounts_store.py") and allowed("hutong/store/sql.py")


def _report(root: Path) -> None:
    found = scan(root)
    inside = {m: f for m, f in found.items() if f and allowed(m)}
    outside = {m: f for m, f in found.items() if f and not allowed(m)}
    for title, group in (("outside the allowed modules", outside), ("inside the allowed modules", inside)):
        print(f"== {title}")
        for m, fs in sorted(group.items(), key=lambda kv: -len(kv[1])):
            sql = sum(f.kind == "sql" for f in fs)
            imp = sum(f.kind == "import" for f in fs)
            print(f"  {m:45s} sql {sql:3d}  concrete imports {imp:2d}")
        print(f"  total: {sum(f.kind == 'sql' for fs in group.values() for f in fs)} SQL statements in "
              f"{sum(any(f.kind == 'sql' for f in fs) for fs in group.values())} modules, "
              f"{sum(f.kind == 'import' for fs in group.values() for f in fs)} concrete-store import statements in "
              f"{sum(any(f.kind == 'import' for f in fs) for fs in group.values())} modules")
    # Not a failing test, because several engineers shrink the list at once: moved modules are named here.
    stale = [m for m in NOT_YET_MOVED if not found.get(m)]
    if stale:
        print(f"== moved, to remove from NOT_YET_MOVED: {stale}")


if __name__ == "__main__":
    _report(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
