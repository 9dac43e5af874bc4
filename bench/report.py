"""How every benchmark hands over its result: JSON on stdout and, with --out, in a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def emit(doc: dict[str, Any], out: str | Path | None) -> None:
    # numpy scalars and arrays appear in the record-linkage results
    text = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
