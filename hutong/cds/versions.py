"""Knowledge versions: drafted, approved by a committee member who is not the author, retired.

Seed 004 (国卫办医发〔2018〕20号) asks that decision-support rules be approved by the institution's
committee; for the region's 互认 list that is the regional committee (质控中心 / 专家委员会).
Every knowledge set is a version with effective dates (Beijing days, both inclusive)::

    draft --approve (a committee account other than the author)--> active --retire--> retired
      \\--retire (withdrawn)------------------------------------------------------------^

Only an ``active`` version fires, and only on the days it is effective; of several, the one that
started latest is in force (a version approved now for next January leaves this year's in force
until then).  An unapproved, retired or not-yet-effective version never fires.

Four-eyes is enforced twice: here (HT-0503, audited as refused) and in the UPDATE itself
(``author <> approver``), so no path around this class approves its own work.  Approving or
retiring needs an active account of role ``committee`` (hutong.security.principal.Role.COMMITTEE;
HT-0504).  Drafting needs a committee or commission account, or the local operator loading a
file at the command line.  Each step writes its audit row in the same transaction as the state
change (all-or-nothing), with the version's SHA-256 digest, so the trail says exactly what text
was approved.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from hutong.cds import knowledge_store as store
from hutong.cds.knowledge import KIND, Knowledge, KnowledgeSet, parse
from hutong.errors import Conflict, Forbidden, InvalidRequest, NotFound
from hutong.security.events import REFUSED, SUCCESS, AuditRecord
from hutong.security.principal import Principal, Role
from hutong.store.repository import Repository, Writer
from hutong.systems import REGION_TZ

AUTHOR_ROLES = (Role.COMMITTEE, Role.COMMISSION, Role.PLATFORM)
DECIDER_ROLES = (Role.COMMITTEE,)
STATUSES = ("draft", "active", "retired")


class AuditSink(Protocol):
    """What of hutong.security.audit.AuditLog this module uses."""

    def record(self, rec: AuditRecord) -> int: ...

    def record_in(self, w: Writer, rec: AuditRecord) -> int: ...


@dataclass(frozen=True, slots=True)
class Version:
    id: str
    kind: str
    seq: int
    title: str
    status: str
    effective_from: str
    effective_to: str | None
    author: str
    approver: str | None
    retired_by: str | None
    created: int
    approved: int | None
    retired: int | None
    note: str | None
    digest: str

    def in_effect(self, day: str) -> bool:
        return self.status == "active" and self.effective_from <= day and \
            (self.effective_to is None or day <= self.effective_to)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "version": self.seq, "title": self.title, "status": self.status,
                "effective_from": self.effective_from, "effective_to": self.effective_to, "author": self.author,
                "approver": self.approver, "retired_by": self.retired_by, "created": self.created,
                "approved": self.approved, "retired": self.retired, "note": self.note, "digest": self.digest}


def _version(r: Sequence[Any]) -> Version:
    return Version(str(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4]), str(r[5]), r[6], str(r[7]), r[8], r[9],
                   int(r[10]), None if r[11] is None else int(r[11]), None if r[12] is None else int(r[12]), r[13],
                   str(r[14]))


def region_day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, REGION_TZ).date().isoformat()


def _check_day(v: str | None, what: str, *, required: bool) -> str | None:
    if v in (None, ""):
        if required:
            raise InvalidRequest("HT-0507", f"{what} is required (YYYY-MM-DD)")
        return None
    try:
        return datetime.strptime(str(v), "%Y-%m-%d").date().isoformat()
    except ValueError:
        raise InvalidRequest("HT-0507", f"{what} must be a date YYYY-MM-DD") from None


# Knowledge of a version never changes once drafted, so a snapshot is kept per version id.
_CACHE: OrderedDict[tuple[str, str], Knowledge] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 16


class KnowledgeVersions:
    """The versions of one kind of knowledge over one repository."""

    def __init__(self, repo: Repository, audit: AuditSink, *, kind: str = KIND,
                 clock: Callable[[], int] | None = None) -> None:
        self.repo = repo
        self.audit = audit
        self.kind = kind
        self.clock = clock or repo.clock

    # -------------------------------------------------------------- reads
    def get(self, version_id: str) -> Version:
        r = store.version_row(self.repo, version_id)
        if r is None or r[1] != self.kind:
            raise NotFound("HT-0502", f"no knowledge version {version_id[:40]!r}")
        return _version(r)

    def list(self) -> list[Version]:
        return [_version(r) for r in store.version_rows(self.repo, self.kind)]

    def body(self, version_id: str) -> bytes:
        self.get(version_id)
        b = store.body_of(self.repo, version_id)
        assert b is not None
        return b

    def rows(self, version_id: str) -> KnowledgeSet:
        return store.knowledge_rows(self.repo, version_id, self.get(version_id).title)

    def in_force(self, day: str | None = None) -> Knowledge | None:
        """The knowledge of the approved version in force on ``day`` (default: today in Beijing);
        None when there is none (then nothing fires)."""
        day = day or region_day(self.clock())
        vid = store.in_force(self.repo, self.kind, day)
        if vid is None:
            return None
        key = (self.repo.db.url, vid)
        with _CACHE_LOCK:
            k = _CACHE.get(key)
            if k is not None:
                _CACHE.move_to_end(key)
                return k
        v = self.get(vid)
        k = Knowledge.of(vid, store.knowledge_rows(self.repo, vid, v.title))
        with _CACHE_LOCK:
            _CACHE[key] = k
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        return k

    # -------------------------------------------------------------- changes
    def _record(self, w: Writer | None, action: str, actor: Principal, outcome: str, v: Version | None,
                code: str | None = None, version_id: str | None = None, **extra: str) -> None:
        vid = v.id if v is not None else version_id
        rec = AuditRecord(action=action, outcome=outcome, principal=actor, code=code, purpose="cds-knowledge",
                          entities=(f"cds-knowledge/{vid}",) if vid else (), peer=actor.peer,
                          time_ms=self.clock(),
                          extra={**({"version": v.id, "seq": str(v.seq), "kind": v.kind, "digest": v.digest,
                                     "status": v.status} if v is not None else {}), **extra})
        if w is not None:
            self.audit.record_in(w, rec)
        else:
            self.audit.record(rec)

    def _refuse(self, action: str, actor: Principal, e: Exception, version_id: str | None) -> None:
        self._record(None, action, actor, REFUSED, None, code=getattr(e, "code", None), version_id=version_id)

    def draft(self, author: Principal, data: Any, *, effective_from: str, effective_to: str | None = None,
              note: str | None = None) -> Version:
        """A new draft version from a knowledge set's JSON form (checked whole: HT-0501)."""
        if author.role not in AUTHOR_ROLES:
            e = Forbidden("HT-0504", f"a {author.role} account may not draft decision-support knowledge "
                                     "(committee or commission accounts, or the operator's command line)")
            self._refuse("cds-knowledge-draft", author, e, None)
            raise e
        lo = _check_day(effective_from, "effective_from", required=True)
        hi = _check_day(effective_to, "effective_to", required=False)
        assert lo is not None
        if hi is not None and hi < lo:
            raise InvalidRequest("HT-0507", "effective_to is before effective_from")
        if note is not None and len(note) > 500:
            raise InvalidRequest("HT-0501", "note: at most 500 characters")
        ks = parse(data)
        vid = "kv-" + secrets.token_hex(8)
        now = self.clock()

        def tx(w: Writer) -> Version:
            w.lock_key("cds-knowledge:" + self.kind)
            store.insert_version(w, vid, self.kind, ks, lo, hi, author.account_id, note, now)
            r = store.version_row(self.repo, vid, w)
            assert r is not None
            v = _version(r)
            self._record(w, "cds-knowledge-draft", author, SUCCESS, v, effective=f"{lo}..{hi or ''}")
            return v

        return self.repo.transact(tx)

    def _decider(self, action: str, actor: Principal, version_id: str) -> None:
        if actor.role not in DECIDER_ROLES:
            e = Forbidden("HT-0504", f"only a committee account may {action.removeprefix('cds-knowledge-')} "
                                     f"knowledge versions (this is a {actor.role} account)")
            self._refuse(action, actor, e, version_id)
            raise e

    def approve(self, version_id: str, approver: Principal) -> Version:
        """draft -> active.  Never by the draft's author (HT-0503)."""
        action = "cds-knowledge-approve"
        self._decider(action, approver, version_id)
        v = self.get(version_id)
        if v.author == approver.account_id:
            e = Forbidden("HT-0503", "four-eyes: the author of a knowledge version may not approve it "
                                     "(another committee member must)")
            self._refuse(action, approver, e, version_id)
            raise e
        return self._transition(action, approver, version_id, store.approve,
                                f"version {v.seq} is {v.status}, not a draft: only a draft is approved "
                                "(or it changed meanwhile)")

    def retire(self, version_id: str, by: Principal) -> Version:
        """draft or active -> retired (withdrawn, or taken out of force at once)."""
        action = "cds-knowledge-retire"
        self._decider(action, by, version_id)
        v = self.get(version_id)
        return self._transition(action, by, version_id, store.retire, f"version {v.seq} is already retired")

    def _transition(self, action: str, by: Principal, version_id: str,
                    move: Callable[[Writer, str, str, int], bool], refusal: str) -> Version:
        """Move a version to its next status in one transaction with its audit record;
        HT-0505 (audited as a refusal) when it is not in the status the move starts from."""
        now = self.clock()

        def tx(w: Writer) -> Version:
            if not move(w, version_id, by.account_id, now):
                raise Conflict("HT-0505", refusal)
            r = store.version_row(self.repo, version_id, w)
            assert r is not None
            out = _version(r)
            self._record(w, action, by, SUCCESS, out)
            return out

        try:
            return self.repo.transact(tx)
        except Conflict as e:
            self._refuse(action, by, e, version_id)
            raise


def kind_of(repo: Repository, version_id: str) -> str | None:
    """The kind of knowledge a version holds (recognition, safety ...), None when there is no such version."""
    r = store.version_row(repo, version_id)
    return None if r is None else str(r[1])


def account_principal(repo: Repository, who: str) -> Principal:
    """The Principal of an active account named by id or username (the command line names the
    committee member who decides; their account must exist, be active and say what role it has)."""
    from hutong.security.accounts import Accounts
    from hutong.security.settings import SecuritySettings

    accounts = Accounts(repo, SecuritySettings.from_env())
    a = accounts.get(who) or accounts.by_username(who)
    if a is None or a.status != "active":
        raise Forbidden("HT-0504", f"no active account {who[:64]!r}")
    return Principal(account_id=a.id, role=a.role, display=a.display, organization=a.organization,
                     organization_id=a.organization_id, peer="local")
