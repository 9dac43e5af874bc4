"""The audit chain's rules: how a row, a node's chain and the ledger are hashed,
and how :meth:`hutong.security.audit.AuditLog.verify` checks them.

Split from hutong.security.audit (which appends, purges and queries) so that
the rules a verifier applies sit in one place.  The row hash is HMAC-SHA256
under the chain key (RFC 2104; issue 12, finding 7); a node's chain (issue 18,
item 2) also covers its name and each row's position; the ledger entries
every node appends are hash-chained under the same key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from hutong.security import audit_store
from hutong.security.auditheads import AuditKeys, Head, chain_mac, signature_ok

GENESIS = "0" * 64          # prev_hash of a chain's first row
VERIFY_PAGE = 2000
LOCK_KEY = "audit-chain"
SWITCH_ACTION = "audit-chain-keyed"    # the first keyed record of a chain begun unkeyed


class Codec(Protocol):
    def decode(self, data: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    rows: int                        # rows checked
    bad_seq: int | None = None       # first seq found wrong
    reason: str | None = None        # "hash mismatch at seq N", "gap between N and M", "anchor mismatch at seq N"
    first_seq: int | None = None
    head_seq: int | None = None      # last seq checked
    head_hash: str | None = None     # the signed heads (auditheads) carry it elsewhere
    anchor_seq: int | None = None
    keyed_from: int | None = None    # rows before this seq are legacy (unkeyed SHA-256)
    heads: int = 0                   # published heads checked
    chain: str = ""                  # the chain these figures are of ("": the single chain)
    chains: tuple[VerifyResult, ...] = ()   # each chain's result, when there are several

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "ok": self.ok, "rows": self.rows, "bad_seq": self.bad_seq, "reason": self.reason,
            "first_seq": self.first_seq, "head_seq": self.head_seq, "head_hash": self.head_hash,
            "anchor_seq": self.anchor_seq, "keyed_from": self.keyed_from, "heads": self.heads,
            "chain": self.chain or None, "chains": [c.to_json() | {"chain": c.chain} for c in self.chains] or None}
        return {k: v for k, v in d.items() if v is not None}


# --------------------------------------------------------------------------- hashes


def _field(v: str | int | bytes | None) -> bytes:
    """Length-prefixed encoding: no two different rows share canonical bytes
    (None is distinct from "" and field boundaries cannot shift)."""
    if v is None:
        return b"\xff\xff\xff\xff"
    b = v if isinstance(v, bytes) else str(v).encode()
    return len(b).to_bytes(4, "big") + b


def row_hash(prev_hash: str, seq: int, time_ms: int, action: str, outcome: str, account_id: str | None,
             role: str | None, organization: str | None, on_behalf_of: str | None, code: str | None,
             peer: str | None, purpose: str | None, flags: int, body: bytes, *, key: bytes | None = None,
             chain: str = "", chain_seq: int | None = None) -> str:
    """HMAC-SHA256 under the chain key (``key``) over prev_hash ‖ the canonical
    bytes of every stored column (body as stored, i.e. encrypted).

    ``key=None``: the legacy unkeyed SHA-256 of chains written before the
    chain key (verification of their rows up to the switch point only).

    A node's chain (``chain`` not ""; issue 18) also covers its name and the
    row's position in it ("hutong-audit-v3"): a row moved to another chain, or
    a young chain relabelled as another before any head or ledger entry names
    it, no longer verifies.  Rows of chain "" keep "v2", so every row written
    before there were several chains verifies unchanged; moving one of them
    elsewhere fails all the same (v2 bytes never match a v3 hash).
    """
    h: Any
    if key is None:
        h = hashlib.sha256(bytes.fromhex(prev_hash))
        h.update(b"hutong-audit-v1")
    else:
        h = chain_mac(key)
        h.update(bytes.fromhex(prev_hash))
        h.update(b"hutong-audit-v3" if chain else b"hutong-audit-v2")
    if chain and key is not None:
        h.update(_field(chain))
        h.update(_field(chain_seq))
    for v in (seq, time_ms, action, outcome, account_id, role, organization, on_behalf_of, code, peer, purpose,
              flags, body):
        h.update(_field(v))
    return str(h.hexdigest())


def hash_of_row(r: Sequence[Any], key: bytes | None) -> str:
    """The hash of a ROW_COLS row (EVENT_COLS, chain, chain_seq)."""
    chain = str(r[15]) if len(r) > 15 else ""
    cs = None if len(r) <= 16 or r[16] is None else int(r[16])
    return row_hash(str(r[13]), int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
                    int(r[11]), bytes(r[12]), key=key, chain=chain, chain_seq=cs)


def ledger_hash(key: bytes, prev_hash: str, id: int, chain: str, chain_seq: int, seq: int, hash: str,
                time_ms: int) -> str:
    """HMAC-SHA256 under the chain key over the previous entry's hash and this entry."""
    h = chain_mac(key)
    h.update(bytes.fromhex(prev_hash))
    h.update(b"hutong-audit-ledger-v1")
    for v in (id, chain, chain_seq, seq, hash, time_ms):
        h.update(_field(v))
    return str(h.hexdigest())


def chain_lock(chain: str) -> str:
    """The advisory-lock key of one chain's appends ("audit-chain" for chain "", as before)."""
    return f"{LOCK_KEY}:{chain}" if chain else LOCK_KEY




# --------------------------------------------------------------------------- verification


class ChainVerifier:
    """Checks every chain of one snapshot against the key directory's keys, the
    published heads and the ledger; ``node`` is the verifying node's chain
    (whose figures the result shows at the top)."""

    def __init__(self, keys: AuditKeys, codec: Codec, node: str) -> None:
        self.keys = keys
        self.codec = codec
        self.node = node

    def run(self, snap: audit_store.Snapshot, checkpoint: tuple[int, str] | None, from_checkpoint: bool,
                published: list[tuple[int, Head | None]]) -> VerifyResult:
        by_chain: dict[str, list[tuple[int, Head | None]]] = {}
        for line, head in published:
            by_chain.setdefault(head.chain if head is not None else "", []).append((line, head))
        names = sorted(snap.chains() | set(by_chain) | {"", self.node})
        check_chain = self.node
        if checkpoint is not None:
            at = snap.row_at(checkpoint[0])
            if at is not None:
                check_chain = at[0]
        results: list[VerifyResult] = []
        for name in names:
            cp = checkpoint if name == check_chain else None
            results.append(self._verify_chain(snap, name, cp, from_checkpoint and cp is not None,
                                              by_chain.get(name, [])))
        failed = next((r for r in results if not r.ok), None)
        bad: tuple[int, str] | None = None
        if failed is None:
            bad = self._verify_ledger(snap, {r.chain: r for r in results})
        if failed is None and bad is None:
            stray = snap.stray_person(0)
            if stray is not None:
                bad = (stray, f"person index mismatch at seq {stray}")
        mine = next(r for r in results if r.chain == self.node)
        top = failed or mine
        reason = top.reason if failed is None or not failed.chain else f"chain {failed.chain}: {failed.reason}"
        if bad is not None:
            top, reason = mine, bad[1]
        shown = tuple(results) if len(results) > 1 or results[0].chain else ()
        return VerifyResult(failed is None and bad is None, sum(r.rows for r in results),
                            bad[0] if bad is not None else top.bad_seq, reason, top.first_seq, top.head_seq,
                            top.head_hash, top.anchor_seq, top.keyed_from, sum(r.heads for r in results),
                            chain=top.chain, chains=shown)

    def _verify_ledger(self, snap: audit_store.Snapshot, chains: dict[str, VerifyResult]) -> tuple[int, str] | None:
        """Walk the ledger: its own hash chain, and every entry against its chain (bad seq, why)."""
        prev, last = GENESIS, 0
        while True:
            page = snap.ledger_after(last, VERIFY_PAGE)
            if not page:
                return None
            for id, chain, cs, seq, h, t, ph, eh in page:
                id, cs, seq = int(id), int(cs), int(seq)
                if id != last + 1:
                    return seq, f"ledger entries {last + 1}..{id - 1} are missing"
                if str(ph) != prev or ledger_hash(self.keys.chain_key, prev, id, str(chain), cs, seq, str(h),
                                                  int(t)) != str(eh):
                    return seq, f"ledger entry {id} does not verify (edited, or not written with this chain key)"
                c = chains.get(str(chain))
                anchor = (c.anchor_seq or 0) if c is not None else 0
                end = max(anchor, c.head_seq or 0) if c is not None else 0
                label = f"chain {chain}" if chain else "the chain"
                if seq > end:
                    return seq, (f"ledger entry {id} names seq {seq} of {label}, but it ends at seq {end}: "
                                 "rows were cut off the end or the chain was rebuilt")
                if seq > anchor:
                    row = snap.row_at(seq)
                    if row is None or row[0] != str(chain) or row[1] != cs or row[2] != str(h):
                        return seq, f"ledger entry {id} does not match seq {seq} of {label}"
                elif seq == anchor and (snap.anchor(str(chain)) or (0, 0, ""))[1:] != (cs, str(h)):
                    return seq, f"ledger entry {id} does not match the anchor of {label} at seq {seq}"
                # (below the anchor: purged rows, nothing left to compare)
                prev, last = str(eh), id

    def _verify_chain(self, snap: audit_store.Snapshot, chain: str, checkpoint: tuple[int, str] | None,
                      from_checkpoint: bool, published: list[tuple[int, Head | None]]) -> VerifyResult:
        anchor_seq, anchor_cs, prev_hash = snap.anchor(chain) or (0, 0, GENESIS)
        anchor_hash = prev_hash
        meta = snap.chain(chain)
        keyed_from = meta[0] if meta is not None else 1
        prev_seq, prev_cs = anchor_seq, anchor_cs
        rows = 0
        first: int | None = None
        seen_checkpoint = checkpoint is None or checkpoint[0] <= anchor_seq
        last_purge: dict[str, Any] | None = None
        n_heads = 0
        anchor_moved = False

        def bad(seq: int, why: str) -> VerifyResult:
            return VerifyResult(False, rows, seq, why, first, prev_seq if rows else None,
                                prev_hash if rows else None, anchor_seq or None, keyed_from, n_heads, chain=chain)

        if meta is not None and meta[1] != self.keys.chain_key_id:
            return bad(keyed_from, f"the chain key in {self.keys.dir} (id {self.keys.chain_key_id}) is not the key "
                                   f"the chain was written with (id {meta[1]}): wrong HUTONG_KEY_DIR?")
        # The published heads: each must carry a good signature by this key directory's signing key.
        want: dict[int, str] = {}
        top: Head | None = None
        for line, head in published:
            if head is None:
                return bad(0, f"published head on line {line} is malformed")
            if head.key != self.keys.signing_key_id or not signature_ok(self.keys.public, head):
                return bad(head.seq, f"published head on line {line} (seq {head.seq}) has no valid signature "
                                     "by this key directory's signing key")
            if head.keyed_from != keyed_from:
                return bad(head.seq, f"published head seq {head.seq} says the chain is keyed from seq "
                                     f"{head.keyed_from}, the database says {keyed_from}")
            n_heads += 1
            if want.get(head.seq, head.hash) != head.hash:
                return bad(head.seq, f"two published heads disagree about seq {head.seq}")
            want[head.seq] = head.hash
            if top is None or head.seq > top.seq:
                top = head
        if want.get(anchor_seq, anchor_hash) != anchor_hash and anchor_seq:
            return bad(anchor_seq, f"anchor mismatch at seq {anchor_seq}: a published head says otherwise")

        if checkpoint is not None and checkpoint[0] == anchor_seq and anchor_seq and checkpoint[1] != prev_hash:
            return bad(anchor_seq, f"checkpoint mismatch at seq {anchor_seq}")
        start_seq = anchor_seq
        if from_checkpoint and checkpoint is not None and checkpoint[0] > anchor_seq:
            c = snap.row_at(checkpoint[0])
            if c is None or c[0] != chain:
                return bad(checkpoint[0], f"checkpoint seq {checkpoint[0]} is missing")
            if c[2] != checkpoint[1]:
                return bad(checkpoint[0], f"checkpoint mismatch at seq {checkpoint[0]}")
            start_seq = prev_seq = checkpoint[0]
            prev_cs = c[1] if c[1] is not None else checkpoint[0]
            prev_hash = checkpoint[1]
            seen_checkpoint = True
        while True:
            page = snap.events_after(chain, prev_seq, VERIFY_PAGE)
            if not page:
                break
            hi = int(page[-1][0])
            people: dict[int, set[str]] = {}
            for pid, s in snap.persons_between(chain, prev_seq, hi):
                people.setdefault(int(s), set()).add(str(pid))
            for r in page:
                seq = int(r[0])
                cs = None if r[16] is None else int(r[16])
                if first is None:
                    first = seq
                if cs is not None and cs != prev_cs + 1:
                    # Chain "" written by one node: positions are seqs, and the missing one is named.
                    missing = prev_seq + 1 if cs == seq else seq
                    if rows == 0 and anchor_seq and start_seq == anchor_seq:
                        if str(r[13]) != prev_hash:
                            return bad(missing, f"anchor mismatch at seq {seq}: anchor is seq {anchor_seq}")
                        # Linked to the anchor but not after its position: the anchor row was
                        # edited; judged below with the audit-purge record that should have made it.
                        anchor_moved = True
                    elif cs == seq:
                        return bad(missing, f"gap between {prev_seq} and {seq}")
                    else:
                        return bad(seq, f"gap between positions {prev_cs} and {cs} (at seq {seq})")
                if str(r[13]) != prev_hash:
                    if rows == 0 and anchor_seq and start_seq == anchor_seq:
                        return bad(seq, f"anchor mismatch at seq {seq}")
                    return bad(seq, f"prev_hash mismatch at seq {seq}")
                pos = seq if cs is None else cs
                if hash_of_row(r, None if pos < keyed_from else self.keys.chain_key) != str(r[14]):
                    return bad(seq, f"hash mismatch at seq {seq}")
                if cs is None:
                    return bad(seq, f"seq {seq} has no position in its chain (a row not written by hutong)")
                if want.get(seq, str(r[14])) != str(r[14]):
                    return bad(seq, f"published head mismatch at seq {seq}: the chain was rewritten or rebuilt "
                                    "after that head was signed")
                try:
                    body = orjson.loads(self.codec.decode(bytes(r[12])))
                except Exception:  # wrong key or corrupt bytes; the hash matched, so the key is wrong
                    return bad(seq, f"undecodable body at seq {seq}")
                if set(body.get("persons", ())) != people.pop(seq, set()):
                    return bad(seq, f"person index mismatch at seq {seq}")
                extra = body.get("extra", {})
                if cs == keyed_from and keyed_from > 1 and (
                        r[2] != SWITCH_ACTION or extra.get("legacy_through") != str(cs - 1)):
                    return bad(seq, f"seq {seq} is not the record where the chain became keyed "
                                    "(the switch point was moved)")
                if r[2] == "audit-purge":
                    last_purge = extra
                if checkpoint is not None and checkpoint[0] == seq:
                    if checkpoint[1] != str(r[14]):
                        return bad(seq, f"checkpoint mismatch at seq {seq}")
                    seen_checkpoint = True
                prev_seq, prev_cs, prev_hash = seq, cs, str(r[14])
                rows += 1
            if people:  # person rows pointing at seqs that are not in the chain
                s = min(people)
                return bad(s, f"person index mismatch at seq {s}")
        if not seen_checkpoint:
            assert checkpoint is not None
            return bad(checkpoint[0], f"checkpoint seq {checkpoint[0]} is missing (head is seq {prev_seq})")
        if meta is None and (rows or anchor_seq):
            return bad(first or anchor_seq, "the audit_chain row is missing (chain metadata deleted)")
        if keyed_from > max(prev_cs, anchor_cs) + 1:
            return bad(keyed_from, f"the chain is keyed from seq {keyed_from}, which it does not have")
        if start_seq == anchor_seq and anchor_seq:
            # Only `hutong audit purge` moves the anchor, and it records where in a keyed row.
            named = None if last_purge is None else (last_purge.get("through_seq"), last_purge.get("through_hash"))
            if named is None or named[0] != str(anchor_seq) or named[1] not in (None, anchor_hash):
                return bad(anchor_seq, f"the anchor at seq {anchor_seq} is not the one the newest audit-purge record "
                                       "made (the oldest rows were deleted and an anchor planted?)")
            if anchor_moved or (last_purge or {}).get("through_chain_seq", str(anchor_cs)) != str(anchor_cs):
                return bad(anchor_seq, f"anchor mismatch at seq {anchor_seq}: its position in the chain ({anchor_cs}) "
                                       "is not the one the newest audit-purge record names")
        if top is not None and top.seq > prev_seq and top.seq > anchor_seq:
            return bad(prev_seq + 1, f"a published head (signed {top.time_ms} ms) names seq {top.seq}, but the chain "
                                     f"ends at seq {prev_seq}: rows were cut off the end or the chain was rebuilt")
        return VerifyResult(True, rows, None, None, first, prev_seq if rows else None,
                            prev_hash if rows else None, anchor_seq or None, keyed_from, n_heads, chain=chain)
