"""Keys for encryption at rest: where master keys come from, and the key ring.

Envelope encryption (NIST SP 800-57 part 1 §6.1.1 "key-wrapping keys"; the
pattern every cloud KMS uses):

- **Master keys** (key-encryption keys) come from a :class:`KeySource`, the
  one seam to the outside: a directory of files (:class:`FileKeySource`) or
  the environment (:class:`EnvKeySource`), or an operator's program that
  asks a KMS (:class:`CommandKeySource`, ``HUTONG_KEY_COMMAND``).  They never
  touch the database.  The newest one is *current*.
- **Data keys** (DEKs) are random 256-bit keys stored in the ``data_key``
  table, each wrapped (AES-256-GCM) by a master key.  Values are encrypted
  with the current data key and carry its id (:mod:`hutong.security.crypto`).
  ``hutong keys rotate`` wraps every data key again under a new master key
  -- a few rows, no data rewritten, readers keep their unwrapped keys -- and
  starts a new data key for new writes.
- One more wrapped key, purpose ``blind``, keys the blind indexes
  (:mod:`hutong.security.blindindex`).  It is re-wrapped on rotation like
  the data keys but never replaced: its digests are in every index row, and a
  new key would break exact search until everything was re-indexed.

Key material is never printed or logged; ``status`` shows ids only.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import BigInteger, Column, Integer, LargeBinary, String, Table
from sqlalchemy.engine import make_url

from hutong.errors import ConfigError
from hutong.security import keys_store
from hutong.security.settings import SecuritySettings
from hutong.store.repository import DatabaseHandle
from hutong.store.schema import metadata

KEY_BYTES = 32  # AES-256
DATA, BLIND = "data", "blind"
# How often a long-running process looks for a data key started by another
# process (``hutong keys rotate`` while the server runs).
REFRESH_S = 30.0

data_key = Table(
    "data_key",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # in every ciphertext (4 bytes)
    Column("purpose", String(8), nullable=False),                    # data | blind
    Column("wrapped", LargeBinary, nullable=False),                  # nonce + AES-GCM(master, key)
    Column("master_id", String(64), nullable=False),
    Column("created", BigInteger, nullable=False),                   # epoch ms
    Column("retired", BigInteger, nullable=True),                    # epoch ms: no rows left under it
)



# ------------------------------------------------------------------ key sources

class KeySource(Protocol):
    """Where master keys come from (DESIGN.md: one injected seam per outside thing)."""

    def master_keys(self) -> dict[str, bytes]:
        """Master keys by id, oldest first; the last one is current.  32 bytes each."""
        ...

    def new_master_key(self) -> str:
        """Make a new current master key and return its id (``hutong keys rotate``)."""
        ...

    def describe(self) -> str:
        """Where the keys are, for status output (no key material)."""
        ...


_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class FileKeySource:
    """Master keys as files ``master-<id>.key`` (base64) in one directory, mode 0600.

    Ids are UTC timestamps to the microsecond, so sorting them sorts by age.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def master_keys(self) -> dict[str, bytes]:
        if not self.dir.is_dir():
            return {}
        out: dict[str, bytes] = {}
        for p in sorted(self.dir.glob("master-*.key")):
            kid = p.name[len("master-"):-len(".key")]
            # Refused, not narrowed (as OpenSSH refuses an unprotected private key):
            # a key others could read may have been copied already, and the
            # operator must know it (and rotate), not have it quietly fixed.
            if p.stat().st_mode & 0o077:
                raise ConfigError("HT-0610", f"master key file {p.name} in {self.dir} is accessible to other "
                                             f"users (mode {p.stat().st_mode & 0o777:o}): chmod 600 it, and "
                                             "rotate (hutong keys rotate --reencrypt) if someone may have read it")
            try:
                key = base64.b64decode(p.read_bytes().strip(), validate=True)
            except ValueError as e:
                raise ConfigError("HT-0152", f"master key file {p.name} in {self.dir} is not base64") from e
            if len(key) != KEY_BYTES:
                raise ConfigError("HT-0152", f"master key file {p.name} in {self.dir} is not a 256-bit key")
            out[kid] = key
        return out

    def new_master_key(self) -> str:
        private_dir(self.dir)
        existing = list(self.master_keys())
        while True:
            ns = time.time_ns()
            kid = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9 // 1000:06d}Z"
            # Newest must sort last even if the clock stepped back.
            if not existing or kid > existing[-1]:
                break
            time.sleep(0.001)
        path = self.dir / f"master-{kid}.key"
        # O_EXCL: never overwrite a key; 0600 from the start (no window with wider rights).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, base64.b64encode(os.urandom(KEY_BYTES)) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        return kid

    def describe(self) -> str:
        return f"file:{self.dir}"

    def retire_master_key(self, kid: str) -> Path:
        """Delete the file of master key ``kid`` (the caller checked that no data key is wrapped by it)."""
        path = self.dir / f"master-{kid}.key"
        if not _ID.match(kid) or not path.is_file():
            raise ConfigError("HT-0606", f"no master key {kid!r} in {self.dir}")
        path.unlink()
        return path


class EnvKeySource:
    """``HUTONG_MASTER_KEYS="id1:base64,id2:base64"`` (oldest first; the last is current).

    For deployments whose secrets manager injects environment variables.  It
    cannot make keys: to rotate, the operator appends a new key and runs
    ``hutong keys rotate``.
    """

    VAR = "HUTONG_MASTER_KEYS"

    def __init__(self, value: str | None = None) -> None:
        self.value = value if value is not None else os.environ.get(self.VAR, "")

    def master_keys(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for item in (x.strip() for x in self.value.split(",")):
            if not item:
                continue
            kid, sep, b64 = item.partition(":")
            try:
                key = base64.b64decode(b64, validate=True) if sep else b""
            except ValueError:
                key = b""
            if not _ID.match(kid) or len(key) != KEY_BYTES:
                # The message names the entry's position, never its content.
                raise ConfigError("HT-0155", f"{self.VAR} entry {len(out) + 1} is not id:base64-of-32-bytes")
            out[kid] = key
        return out

    def new_master_key(self) -> str:
        raise ConfigError("HT-0154", f"keys from {self.VAR} are made outside Hutong: append a new id:key "
                                     "to the variable, then run hutong keys rotate")

    def describe(self) -> str:
        return f"env:{self.VAR}"


def parse_key_lines(text: str, what: str, code: str) -> dict[str, bytes]:
    """``id:base64`` entries, comma- or newline-separated, oldest first.  An error
    names the entry's position, never its content (it may be a key)."""
    out: dict[str, bytes] = {}
    for n, item in enumerate((x.strip() for x in text.replace("\n", ",").split(",")), 1):
        if not item:
            continue
        kid, sep, b64 = item.partition(":")
        try:
            key = base64.b64decode(b64, validate=True) if sep else b""
        except ValueError:
            key = b""
        if not _ID.match(kid) or len(key) != KEY_BYTES:
            raise ConfigError(code, f"{what} entry {n} is not id:base64-of-32-bytes")
        out[kid] = key
    return out


class CommandKeySource:
    """Master keys from an operator's program: the seam to a KMS, any vendor's.

    ``HUTONG_KEY_COMMAND`` is a command line (split as a shell would, run
    without a shell) that prints the master keys on stdout as ``id:base64``
    lines, oldest first; the last is current.  Hutong never holds them at
    rest: the program fetches or unwraps them each time (``vault kv get
    -field=...``, ``aws kms decrypt``, a PKCS#11 tool, an HSM vendor's CLI),
    so revoking this host in the KMS revokes it here within REFRESH_S.

    The program runs at start and whenever the key ring reloads (every
    REFRESH_S while serving).  It gets HUTONG_KEY_COMMAND_TIMEOUT seconds; its
    process group is killed after that.  A failure is a ConfigError that names
    the exit status or the timeout only: its stdout holds keys and its stderr
    may, so neither is shown or logged.  Hutong cannot make keys here: to
    rotate, the operator adds a new key in the KMS (the program prints it
    last) and runs ``hutong keys rotate``.
    """

    def __init__(self, command: str, timeout: float = 10.0) -> None:
        import shlex

        try:
            self.argv = shlex.split(command)
        except ValueError:  # an unbalanced quote; the value itself is not shown (it may carry a token)
            raise ConfigError("HT-0607", "HUTONG_KEY_COMMAND cannot be split into a program and its arguments "
                                         "(an unbalanced quote?)") from None
        self.timeout = timeout
        if not self.argv:
            raise ConfigError("HT-0607", "HUTONG_KEY_COMMAND is empty")
        self._lock = threading.Lock()
        self._last: tuple[float, dict[str, bytes]] | None = None

    def master_keys(self) -> dict[str, bytes]:
        # Every thread whose key ring is due for a reload asks at once (REFRESH_S passes for
        # all writers together): a run that ended after a caller asked answers it too, so
        # those who waited while it ran do not each start the program again.  Failures
        # are not kept: the next caller tries again.
        asked = time.monotonic()
        with self._lock:
            if self._last is not None and self._last[0] >= asked:
                return dict(self._last[1])
            keys = self._run()
            self._last = (time.monotonic(), keys)
            return dict(keys)

    def _run(self) -> dict[str, bytes]:
        import signal
        import subprocess

        try:
            proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            raise ConfigError("HT-0607", f"HUTONG_KEY_COMMAND ({Path(self.argv[0]).name}) cannot be started: "
                                         f"{type(e).__name__}") from None
        try:
            out, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            # The whole group: a shell script's children would otherwise hold stdout open.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise ConfigError("HT-0608", f"HUTONG_KEY_COMMAND ({Path(self.argv[0]).name}) did not answer within "
                                         f"{self.timeout:g} s (HUTONG_KEY_COMMAND_TIMEOUT)") from None
        if proc.returncode != 0:
            raise ConfigError("HT-0607", f"HUTONG_KEY_COMMAND ({Path(self.argv[0]).name}) exited with status "
                                         f"{proc.returncode} (its output is not shown: it may hold keys)")
        try:
            text = out.decode("ascii")
        except UnicodeDecodeError:
            raise ConfigError("HT-0609", "HUTONG_KEY_COMMAND printed something that is not id:base64 lines") from None
        keys = parse_key_lines(text, "HUTONG_KEY_COMMAND output", "HT-0609")
        if not keys:
            raise ConfigError("HT-0609", "HUTONG_KEY_COMMAND printed no master key")
        return keys

    def new_master_key(self) -> str:
        raise ConfigError("HT-0154", "keys from HUTONG_KEY_COMMAND are made in the KMS: add a new key there "
                                     "(printed last), then run hutong keys rotate")

    def describe(self) -> str:
        return f"command:{Path(self.argv[0]).name}"


def default_key_dir(database_url: str) -> Path:
    """Where a database's key files live unless HUTONG_KEY_DIR says otherwise.

    Never inside the database's directory (issue 12, finding 11): whoever
    copies that directory -- a backup, a volume snapshot, a stolen disk image
    of the data volume -- must not get the keys with it.

    - SQLite ``<dir>/<file>``: ``<dir>-keys/<file>/``, a sibling of the
      database directory.  A deployment from before this rule that has
      ``<dir>/<file>.keys/`` keeps using it (:func:`legacy_key_dir`; ``hutong
      keys status`` warns) until the operator moves it.
    - PostgreSQL: ``~/.hutong/keys/<host>-<port>-<dbname>/``.

    Production sets HUTONG_KEY_DIR to a directory on other media and backs it
    up separately from the database (README, "Keys").
    """
    u = make_url(database_url)
    if u.get_backend_name() == "sqlite":
        db = Path(str(u.database)).absolute()
        legacy = legacy_key_dir(database_url)
        if legacy is not None and legacy.is_dir():
            return legacy
        return db.parent.with_name(db.parent.name + "-keys") / db.name
    name = f"{u.host or 'localhost'}-{u.port or 5432}-{u.database or 'postgres'}"
    return Path.home() / ".hutong" / "keys" / re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def legacy_key_dir(database_url: str) -> Path | None:
    """The key directory of earlier releases, ``<file>.keys/`` beside a SQLite database."""
    u = make_url(database_url)
    if u.get_backend_name() != "sqlite":
        return None
    return Path(str(Path(str(u.database)).absolute()) + ".keys")


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) for key material, mode 0700.

    An existing directory is narrowed to 0700 when we own it: key files are
    0600 each, but a listable directory still tells who may read which.
    """
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.stat().st_uid == os.geteuid() and path.stat().st_mode & 0o077:
            path.chmod(0o700)
    except OSError as e:
        raise ConfigError("HT-0156", f"key directory {path} cannot be created or secured: "
                                     f"{type(e).__name__}; set HUTONG_KEY_DIR") from e
    return path


def key_source_for(database_url: str, settings: SecuritySettings | None = None) -> KeySource:
    """The configured key source: HUTONG_KEY_COMMAND if set (a KMS), else
    HUTONG_MASTER_KEYS if set, else files."""
    s = settings or SecuritySettings.from_env()
    if s.key_command:
        return CommandKeySource(s.key_command, s.key_command_timeout)
    if os.environ.get(EnvKeySource.VAR):
        return EnvKeySource()
    return FileKeySource(s.key_dir or default_key_dir(database_url))


# ------------------------------------------------------------------ the key ring

def _wrap_aad(kid: int, purpose: str) -> bytes:
    # Binds a wrapped key to its row: a wrapped blind key copied into a data key's row does not unwrap.
    return b"hutong-data-key:" + purpose.encode() + b":" + str(kid).encode()


def wrap(master: bytes, kid: int, purpose: str, key: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(master).encrypt(nonce, key, _wrap_aad(kid, purpose))


def unwrap(master: bytes, kid: int, purpose: str, wrapped: bytes) -> bytes:
    return AESGCM(master).decrypt(wrapped[:12], wrapped[12:], _wrap_aad(kid, purpose))


@dataclass(frozen=True, slots=True)
class DataKeyInfo:
    id: int
    purpose: str
    master_id: str
    created: int
    retired: int | None


class KeyRing:
    """The unwrapped data keys of one database, and which one is current.

    Thread-safe; reloads from ``data_key`` when it meets an unknown key id
    (written by a process that rotated) and every REFRESH_S before encrypting,
    so a server picks up a rotation without a restart.
    """

    def __init__(self, db: DatabaseHandle, source: KeySource) -> None:
        self.db = db
        self.source = source
        self._lock = threading.Lock()
        self._keys: dict[int, AESGCM] = {}
        self._current: int | None = None
        self._blind: bytes | None = None
        self._loaded_at = 0.0
        # True when this call made the database's first keys: a database that already
        # held data then still has clear index rows (hutong.security.blindindex.reindex).
        self.created = self._ensure()
        self.reload()

    # ---------------------------------------------------------- reading
    def _rows(self, cur: Any | None = None) -> list[tuple[Any, ...]]:
        return keys_store.key_rows(self.db, cur)

    def reload(self) -> None:
        rows = self._rows()
        masters = self.source.master_keys()
        keys: dict[int, AESGCM] = {}
        current: int | None = None
        blind: bytes | None = None
        for kid, purpose, wrapped, master_id, _created, retired in rows:
            master = masters.get(master_id)
            if master is None:
                raise ConfigError("HT-0152", f"data key {kid} is wrapped by master key {master_id!r}, which the "
                                             f"key source ({self.source.describe()}) does not have")
            try:
                key = unwrap(master, int(kid), purpose, bytes(wrapped))
            except InvalidTag as e:
                raise ConfigError("HT-0152", f"data key {kid} does not unwrap with master key {master_id!r} "
                                             "(wrong key file or tampered row)") from e
            if purpose == BLIND:
                blind = key
            else:
                keys[int(kid)] = AESGCM(key)
                if retired is None:
                    current = int(kid)
        if current is None or blind is None:
            raise ConfigError("HT-0152", "the data_key table has no current data key or no blind-index key")
        with self._lock:
            self._keys, self._current, self._blind = keys, current, blind
            self._loaded_at = time.monotonic()

    def current(self) -> tuple[int, AESGCM]:
        if time.monotonic() - self._loaded_at > REFRESH_S:
            self.reload()
        with self._lock:
            assert self._current is not None
            return self._current, self._keys[self._current]

    def get(self, kid: int) -> AESGCM | None:
        k = self._keys.get(kid)
        if k is None:
            self.reload()
            k = self._keys.get(kid)
        return k

    @property
    def blind_key(self) -> bytes:
        assert self._blind is not None
        return self._blind

    def info(self) -> list[DataKeyInfo]:
        return [DataKeyInfo(int(r[0]), r[1], r[3], int(r[4]), r[5]) for r in self._rows()]

    # ---------------------------------------------------------- writing
    def _ensure(self) -> bool:
        """A database with no keys gets a blind key and a first data key (and,
        when the key source is empty, a first master key).  True if it made them."""
        if self._rows():
            return False
        with keys_store.key_transaction(self.db) as cur:
            if self._rows(cur):  # another process got there first
                return False
            masters = self.source.master_keys()
            if not masters:
                self.source.new_master_key()
                masters = self.source.master_keys()
            mid, master = list(masters.items())[-1]
            self._insert(cur, 1, BLIND, master, mid)
            self._insert(cur, 2, DATA, master, mid)
        return True

    def _insert(self, cur: Any, kid: int, purpose: str, master: bytes, master_id: str) -> None:
        keys_store.insert_key(self.db, cur, kid, purpose, wrap(master, kid, purpose, os.urandom(KEY_BYTES)),
                              master_id, time.time_ns() // 1_000_000)

    def rotate(self, *, new_master: bool = True) -> tuple[str, int]:
        """Re-wrap every key under a new current master key and start a new data key.

        One short transaction over ``data_key`` only: readers holding unwrapped
        keys are unaffected, readers that reload see either the old wrapping or
        the new (the old master key stays in the source until the operator
        removes it).  Returns (master key id, new data key id).
        """
        mid = self.source.new_master_key() if new_master else list(self.source.master_keys())[-1]
        masters = self.source.master_keys()
        master = masters[mid]
        with keys_store.key_transaction(self.db) as cur:
            rows = self._rows(cur)
            for kid, purpose, wrapped, old_mid, _c, _r in rows:
                old = masters.get(old_mid)
                if old is None:
                    raise ConfigError("HT-0152", f"data key {kid} is wrapped by master key {old_mid!r}, which "
                                                 f"the key source ({self.source.describe()}) does not have")
                key = unwrap(old, int(kid), purpose, bytes(wrapped))
                keys_store.rewrap_key(self.db, cur, int(kid), wrap(master, int(kid), purpose, key), mid)
            new_id = max(int(r[0]) for r in rows) + 1
            self._insert(cur, new_id, DATA, master, mid)
        self.reload()
        return mid, new_id

    def retire(self, kids: Iterable[int]) -> None:
        """Mark data keys as no longer used by any row (after re-encryption).
        Retired keys stay in the table: a process that has not yet reloaded may
        still write one value under an old key, which then still decrypts."""
        with keys_store.key_transaction(self.db) as cur:
            for kid in kids:
                keys_store.retire_key(self.db, cur, kid, DATA, time.time_ns() // 1_000_000)
        self.reload()
