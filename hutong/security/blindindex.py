"""Blind indexes: keyed digests in place of direct identifiers in the search index.

The search index (``idx_string``, ``idx_token``) would otherwise hold every
resident's name, ID number, phone and address in plaintext beside the
encrypted bodies.  For the *protected* parameters below the index holds
HMAC-SHA256 digests (RFC 2104) under the database's blind-index key instead,
truncated to 128 bits (hex).  The query side digests the searched value with
the same function, so matching stays an indexed equality:

- token (``identifier``, ``telecom``, ``phone``, ``email``; search.html#token):
  two rows per value, HMAC(system|value) for ``system|value`` and ``|value``
  searches and HMAC(value) for a search without system.  The system itself
  (an OID such as 2.16.156.10011.1.3) stays in clear: ``system|`` searches work.
- string (names, addresses; search.html#string, default "starts with"):
  HMAC of every prefix of the normalised value up to PREFIX_MAX characters
  (addresses: PREFIX_LIMITS) plus the whole value, so ``name=王`` and ``family=欧阳`` work; the row of
  the whole value also carries HMAC(value as written) for ``:exact``.
  A search longer than PREFIX_MAX characters matches whole values only.
  ``:contains`` cannot be answered from digests and is refused (HT-0150);
  so is ``_sort`` on these parameters (HT-0151: digests have no order).

The blind-index key is a dedicated random key wrapped in ``data_key``
(purpose ``blind``, :mod:`hutong.security.keys`), not derived from the
master key: ``hutong keys rotate`` re-wraps it but never changes it, so
exact search keeps working across rotations without re-indexing.  The MPI's
blocking keys (:mod:`hutong.mpi.blocking`) are keyed by a subkey of it.

Clinical text (issue 12, finding 11): the index also held diagnosis names,
result texts and document descriptions in clear.  Now

- every token's text (Coding.display, CodeableConcept.text, Identifier.type.text),
  on every resource type, is stored as a space-separated list of digests:
  one per prefix (up to TEXT_PREFIX_MAX characters) of the normalised text and
  of each of its first TEXT_WORDS words, plus one of the whole text.  ``:text``
  (search.html#token, "a string search against the text") matches the start of
  the text or of a word in it; a search longer than TEXT_PREFIX_MAX characters
  matches the whole text only.  (It used to be "contains" in clear.)
- the string parameters that carry free clinical text (CLINICAL_TEXT below)
  are blind-indexed like names: start of the value, ``:exact``, no
  ``:contains``, no ``_sort``.

Codes (ICD-10, LOINC) stay in clear: search by code needs them and they are
public vocabularies; which rows carry which code is the price of search, as
with the frequency of names below.

Digests of the same value are equal, so someone holding the database alone
sees which records share a name (frequency analysis) but not the name; that
is the price of exact search over encrypted data, and the reason these
digests are keyed rather than plain hashes (a plain hash of an 18-digit ID
number with a checksum is brute-forced in minutes).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any

import orjson

from hutong.errors import NotSupported
from hutong.mpi import state as mpi_state
from hutong.mpi.blocking import keys_of
from hutong.mpi.service import Mpi
from hutong.store import reindex as store_reindex
from hutong.store.query import StringMatch, TokenMatch
from hutong.store.repository import Repository
from hutong.store.sql import Indexer, IndexRow, Prepared, compartment_of

PREFIX_MAX = 16
# Addresses are long and searched by their start (province, city, district):
# prefix digests stop here; a longer search matches whole values only.  This
# halves the index rows of a Patient write (the encryption benchmark's worst case).
PREFIX_LIMITS = {"address": 6, "address-city": 4, "address-state": 4, "address-postalcode": 6}
DIGEST_BYTES = 16
CACHE_MAX = 200_000

# Direct identifiers of people (GB/T 35273-2020 §3.5 and appendix A: name, ID
# number, phone, address).  address-country is left in clear (it is "CN").
PROTECTED_TYPES = frozenset({"Patient", "RelatedPerson", "Person", "Practitioner"})
PROTECTED_PARAMS = frozenset({"identifier", "name", "family", "given", "phonetic", "telecom", "phone", "email",
                              "address", "address-city", "address-state", "address-postalcode"})


# String parameters whose values are clinical free text (FHIR R4 search parameters).
CLINICAL_TEXT = frozenset({("Condition", "abatement-string"), ("Condition", "onset-info"),
                           ("Observation", "value-string"), ("DocumentReference", "description")})
TEXT_PREFIX_MAX = 12
TEXT_WORDS = 8


def is_protected(type: str, name: str) -> bool:
    return (type in PROTECTED_TYPES and name in PROTECTED_PARAMS) or (type, name) in CLINICAL_TEXT


def subkey(key: bytes, label: str) -> bytes:
    """A key for another use derived from the blind-index key (HMAC as a PRF, RFC 5869 §2.3 style)."""
    return hmac.digest(key, b"hutong-subkey:" + label.encode(), "sha256")


class BlindIndex:
    """Digests for one database (one blind-index key).  The indexer and the
    query compiler both call these methods, so stored and searched values
    cannot drift apart."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        # Cities, districts, postcodes, common surnames and their prefixes recur in
        # almost every Patient (and its golden record): most digests are cache hits.
        self._cache: dict[bytes, str] = {}

    def _h(self, tag: bytes, value: str) -> str:
        msg = tag + value.encode()
        d = self._cache.get(msg)
        if d is None:
            d = hmac.digest(self._key, msg, "sha256")[:DIGEST_BYTES].hex()
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()  # cheaper than LRU bookkeeping on every hit
            self._cache[msg] = d
        return d

    # ---------------------------------------------------------- one value
    def token_with_system(self, system: str, value: str) -> str:
        return self._h(b"ts\x00" + system.encode() + b"\x00", value)

    def token_any_system(self, value: str) -> str:
        return self._h(b"tv\x00", value)

    def prefix(self, norm: str) -> str:
        return self._h(b"sp\x00", norm)

    def exact(self, raw: str) -> str:
        return self._h(b"se\x00", raw)

    def text(self, norm: str) -> str:
        """The digest a ``:text`` search for ``norm`` (normalised) looks for."""
        if len(norm) > TEXT_PREFIX_MAX:
            return self._h(b"tw\x00", norm)
        return self._h(b"tp\x00", norm)

    def text_digests(self, norm: str) -> str:
        """What the ``text`` column of a token row holds: the digests of every
        prefix of the text and of its first words, and of the whole text."""
        starts = [0]
        for i, c in enumerate(norm):
            if c == " " and len(starts) < TEXT_WORDS:
                starts.append(i + 1)
        out: dict[str, None] = {}
        for st in starts:
            word = norm[st:]
            for k in range(1, min(len(word), TEXT_PREFIX_MAX) + 1):
                out[self._h(b"tp\x00", word[:k])] = None
        if len(norm) > TEXT_PREFIX_MAX:
            out[self._h(b"tw\x00", norm)] = None
        return " ".join(out)

    # ---------------------------------------------------------- index rows
    def string_rows(self, norm: str, raw: str, name: str = "") -> list[tuple[str, str]]:
        """(norm, exact) rows of one string value: every prefix (up to the
        parameter's limit), whole value last with its exact digest."""
        limit = PREFIX_LIMITS.get(name, PREFIX_MAX)
        rows = [(self.prefix(norm[:k]), "") for k in range(1, min(len(norm), limit) + 1)]
        whole = (self.prefix(norm), self.exact(raw))
        if len(norm) <= limit and rows:
            rows[-1] = whole
        else:
            rows.append(whole)
        return rows

    def token_rows(self, system: str | None, code: str, text: str | None) -> list[tuple[Any, ...]]:
        return [(system, self.token_with_system(system or "", code), text),
                (system, self.token_any_system(code), text)]

    def seal(self, type: str, rows: Iterable[IndexRow]) -> list[IndexRow]:
        """The index rows of one resource with protected values, and every token's text, replaced by digests."""
        out: list[IndexRow] = []
        seen: set[tuple[str, tuple[Any, ...]]] = set()
        for ptype, name, row in rows:
            if ptype == "token" and row[2]:
                row = (row[0], row[1], self.text_digests(row[2]))
            if not is_protected(type, name):
                out.append((ptype, name, row))
                continue
            if ptype == "string":
                new: list[tuple[Any, ...]] = list(self.string_rows(row[0], row[1], name))
            elif ptype == "token" and row[1] is not None:
                new = self.token_rows(row[0], row[1], row[2])
            else:
                new = [row]
            for r in new:
                if (name, r) not in seen:
                    seen.add((name, r))
                    out.append((ptype, name, r))
        return out

    # ---------------------------------------------------------- queries
    def protects(self, type: str, name: str) -> bool:
        return is_protected(type, name)

    def token(self, m: TokenMatch) -> TokenMatch:
        if m.text is not None or m.code is None:
            return m  # :text searches the identifier type's text; system| alone matches the clear system
        if m.system is None:
            return TokenMatch(None, self.token_any_system(m.code))
        return TokenMatch(m.system, self.token_with_system(m.system, m.code))

    def string(self, name: str, m: StringMatch) -> tuple[str, str]:
        """(column, digest) to compare for equality."""
        if m.mode == "contains":
            raise NotSupported("HT-0150", f"{name}:contains is not supported: names, addresses and other direct "
                                          "identifiers are stored as keyed hashes; search by the start of the "
                                          f"value ({name}=...) or the whole value ({name}:exact=...)")
        if m.mode == "exact":
            return "exact", self.exact(m.value)
        return "norm", self.prefix(m.value)

    def refuse_sort(self, name: str) -> None:
        raise NotSupported("HT-0151", f"_sort={name} is not supported: the values of {name} are stored as "
                                      "keyed hashes, which have no meaningful order")


class BlindIndexer:
    """The store's Indexer with protected values sealed (wraps the FHIR indexer)."""

    def __init__(self, inner: Indexer, blind: BlindIndex) -> None:
        self.inner = inner
        self.blind = blind

    def params(self) -> Iterable[tuple[str, str, str]]:
        return self.inner.params()

    def index(self, type: str, resource: dict[str, Any]) -> Prepared:
        rows, patients = self.inner.index(type, resource)
        return self.blind.seal(type, rows), patients

    def compartment(self, type: str, resource: dict[str, Any]) -> set[str]:
        # Patient references are not protected values: the inner indexer's answer stands.
        return compartment_of(self.inner, type, resource)

    def seal_prepared(self, type: str, prepared: Prepared) -> Prepared:
        """Seal rows extracted elsewhere (bulk import workers hold no keys)."""
        return self.blind.seal(type, prepared[0]), prepared[1]


def reindex(repo: Repository, mpi: Mpi, *, batch: int = 500) -> int:
    """Replace clear index rows of protected parameters and of clinical text, and
    MPI blocking keys made with the public LEGACY_KEY, by digests: what a database
    written before encryption at rest needs once (``open_repository`` runs it when
    it makes a database's first keys and finds resources already there).  Bodies
    stay readable as they are (``J``); ``hutong keys reencrypt`` encrypts them.
    Returns the number of resources re-indexed.  The rows are rewritten by the
    store (hutong.store.reindex) and the MPI's data access (hutong.mpi.state)."""
    n = _reseal(repo, {(t, n) for (t, n) in store_reindex.param_ids(repo) if is_protected(t, n)}, batch)
    last = ""
    while True:
        srcs = mpi_state.sources_after(mpi_state.repo_reader(repo), last, batch)
        if not srcs:
            break
        last = srcs[-1][0]
        with repo.write() as w:
            for pid, blob in srcs:
                mpi_state.replace_blocks(w, pid, keys_of(mpi_state.decode_features(repo, blob), mpi.blind_key))
    return n


def reseal_text(repo: Repository, *, batch: int = 500) -> int:
    """Replace clinical text left in clear in the index by digests: every token
    row's text and the CLINICAL_TEXT string rows (issue 12, finding 11).  What a
    database indexed by an earlier release needs once (``hutong keys reindex``);
    until then ``:text`` and those string searches do not find its older rows.
    Returns the number of resources re-indexed."""
    return _reseal(repo, set(CLINICAL_TEXT), batch)


def _reseal(repo: Repository, strings: set[tuple[str, str]], batch: int) -> int:
    """Re-index every resource, ``batch`` at a time (each batch one transaction):
    all its token rows (digested codes' text and protected identifiers), and its
    string rows of the ``strings`` parameters."""
    assert isinstance(repo.indexer, BlindIndexer)
    pids = store_reindex.param_ids(repo)
    string_pids = sorted(i for key, i in pids.items() if key in strings)
    n = 0
    after = 0
    while True:
        rows = store_reindex.resources_after(repo, after, batch)
        if not rows:
            break
        after = rows[-1][0]
        with repo.write() as w:
            for pk, type, body in rows:
                resource = orjson.loads(repo.codec.decode(body))
                sealed, _patients = repo.indexer.index(type, resource)
                store_reindex.replace_index_rows(
                    w, pk, [(ptype, pids[(type, name)], row) for ptype, name, row in sealed
                            if ptype == "token" or (ptype == "string" and (type, name) in strings)],
                    string_params=string_pids, token_params=None)
                n += 1
    return n
