"""NDJSON output written atomically: a temporary sibling directory renamed at the end.

Layout of the output directory (FHIR Bulk Data NDJSON, one resource per line):

- ``<ResourceType>.ndjson``: UTF-8, compact JSON (orjson), keys in the fixed
  order the builders insert them, one file per resource type present.
- ``ground_truth.ndjson``: ``{"patient", "resident", "noise"}`` per source Patient.
- ``hard_negatives.ndjson``: pairs of distinct residents sharing name and birth date.
- ``manifest.json``: configuration, counts, noise rates configured and observed.

Nothing appears at the destination until everything is written: a crash or
an error leaves at most a ``.<name>.tmp-*`` directory, removed on the way out.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

from hutong.synth.records import RESOURCE_TYPES, ChunkOutput

_LINE = orjson.OPT_APPEND_NEWLINE
PARTS = ".parts"  # where worker processes leave their chunks, inside the temporary directory


def dumps_lines(items: list[dict[str, Any]]) -> bytes:
    dumps = orjson.dumps
    return b"".join([dumps(x, option=_LINE) for x in items])


class SerializedChunk:
    """A chunk as bytes per file, ready to append (what worker processes send back)."""

    __slots__ = ("files", "parts", "counts", "noise_applicable", "noise_applied", "repeat_visits", "source_patients",
                 "hard_negatives")

    def __init__(self, out: ChunkOutput) -> None:
        self.files: dict[str, bytes] = {}
        self.parts: dict[str, Path] = {}
        self.counts: dict[str, int] = {}
        for t in RESOURCE_TYPES:
            items = out.resources[t]
            if items:
                self.files[f"{t}.ndjson"] = dumps_lines(items)
                self.counts[t] = len(items)
        self.files["ground_truth.ndjson"] = dumps_lines(out.truth)
        if out.hard_negatives:
            self.files["hard_negatives.ndjson"] = dumps_lines(out.hard_negatives)
        self.noise_applicable = out.noise_applicable
        self.noise_applied = out.noise_applied
        self.repeat_visits = out.repeat_visits
        self.source_patients = len(out.truth)
        self.hard_negatives = len(out.hard_negatives)

    def spill(self, parts_dir: Path, chunk: int) -> None:
        """Write the bytes to part files (a worker process does this, so that only paths travel back)."""
        for name, data in self.files.items():
            path = parts_dir / f"{chunk:07d}.{name}"
            path.write_bytes(data)
            self.parts[name] = path
        self.files = {}


def check_destination(dest: Path, overwrite: bool) -> None:
    """Refuse to replace anything but nothing, an empty directory or an earlier synth output."""
    if overwrite or not dest.exists():
        return
    if not dest.is_dir():
        raise FileExistsError(f"{dest} exists and is not a directory")
    if not any(dest.iterdir()):
        return
    manifest = dest / "manifest.json"
    try:
        if orjson.loads(manifest.read_bytes()).get("generator") == "hutong.synth":
            return  # our own earlier output: regenerating replaces it
    except (OSError, orjson.JSONDecodeError, AttributeError):
        pass
    raise FileExistsError(f"{dest} exists, is not empty and is not an earlier hutong synth output")


class AtomicOutput:
    """Files appended under a temporary directory that becomes ``dest`` on ``commit``."""

    def __init__(self, dest: Path, *, overwrite: bool = False) -> None:
        self.dest = dest
        self.overwrite = overwrite
        parent = dest.parent
        parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=parent))
        self.files: dict[str, IO[bytes]] = {}
        self.bytes = 0
        self.committed = False

    def append(self, name: str, data: bytes) -> None:
        f = self.files.get(name)
        if f is None:
            f = open(self.tmp / name, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in commit/abort
            self.files[name] = f
        f.write(data)
        self.bytes += len(data)

    def append_part(self, name: str, part: Path) -> None:
        """Append a part file written by a worker, copied inside the kernel, then delete it."""
        f = self.files.get(name)
        if f is None:
            f = open(self.tmp / name, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in commit/abort
            self.files[name] = f
        f.flush()
        with open(part, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            left = size
            try:
                while left > 0:
                    n = os.copy_file_range(src.fileno(), f.fileno(), left)
                    if n == 0:
                        break
                    left -= n
            except OSError:  # no copy_file_range here (old kernel, other filesystem)
                left = size
            if left:
                src.seek(size - left)
                shutil.copyfileobj(src, f)
        f.seek(0, os.SEEK_END)  # resynchronise the buffered writer with the file offset
        self.bytes += size
        part.unlink()

    def write(self, name: str, data: bytes) -> None:
        (self.tmp / name).write_bytes(data)
        self.bytes += len(data)

    def commit(self) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()
        parts = self.tmp / PARTS
        if parts.exists():
            parts.rmdir()
        dest = self.dest
        old: Path | None = None
        if dest.exists():
            check_destination(dest, self.overwrite)
            old = dest.parent / f".{dest.name}.old-{os.getpid()}"
            os.rename(dest, old)
        os.rename(self.tmp, dest)
        self.committed = True
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()

    def abort(self) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> AtomicOutput:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self.committed:
            self.abort()
