"""Every HUTONG_* setting is registered in one typed place (hutong.config.VARIABLES)
and documented in the README's "Settings" table (issue 13, item 7).

The check reads source text, not running code: any ``HUTONG_<NAME>`` anywhere in
``hutong/`` (code, help text, docstrings) must be a registered setting that the
README documents, and every registered setting must be in that table.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hutong.config import REGISTERED, VARIABLES, env
from hutong.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
# A whole name: HUTONG_MLLP_TLS_* in help text names a family, not a variable.
NAME = re.compile(r"\bHUTONG_[A-Z0-9]+(?:_[A-Z0-9]+)*\b(?![_*])")


def names_in(source: str) -> set[str]:
    return set(NAME.findall(source))


def settings_section(readme: str) -> str:
    start = readme.index("\n## Settings")
    end = readme.find("\n## ", start + 1)
    return readme[start:end if end >= 0 else None]


def undocumented(sources: dict[str, str], readme: str) -> dict[str, set[str]]:
    """Per module, the HUTONG_* names that are not registered or not in the README's table."""
    table = names_in(settings_section(readme))
    out: dict[str, set[str]] = {}
    for module, text in sources.items():
        bad = {n for n in names_in(text) if n not in REGISTERED or n not in table}
        if bad:
            out[module] = bad
    return out


def _sources() -> dict[str, str]:
    return {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted((ROOT / "hutong").rglob("*.py"))}


def test_every_hutong_variable_is_registered_and_documented() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert not undocumented(_sources(), readme), undocumented(_sources(), readme)


def test_every_registered_variable_is_in_the_table() -> None:
    table = settings_section((ROOT / "README.md").read_text(encoding="utf-8"))
    for v in VARIABLES:
        assert f"`{v.name}`" in table, f"{v.name} is missing from the README's Settings table"
    assert len(REGISTERED) == len(VARIABLES), "a variable is registered twice"


def test_a_deliberate_undocumented_variable_fails() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    evil = {"hutong/web/evil.py": 'import os\nLIMIT = os.environ.get("HUTONG_SECRET_KNOB", "3")\n'}
    assert undocumented(evil, readme) == {"hutong/web/evil.py": {"HUTONG_SECRET_KNOB"}}
    # registered and documented: passes; a family in help text is not a name
    fine = {"hutong/web/ok.py": 'x = env("HUTONG_BASE_URL")  # see HUTONG_MLLP_TLS_* too\n'}
    assert undocumented(fine, readme) == {}
    # and the typed reader refuses an unregistered name outright
    with pytest.raises(ConfigError) as e:
        env("HUTONG_SECRET_KNOB")
    assert e.value.code == "HT-0340"
