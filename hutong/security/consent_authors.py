"""Who wrote each version of a Consent, and whether that author's Consent counts.

DESIGN.md, trust model: "a Consent counts only when the resident (or a
delegate with that right) made it; nobody can grant access to what they
cannot see" (issue 12, findings 2 and 6).  Who wrote a Consent is a fact the
platform holds, never something the Consent says about itself: the store's
write hook (:mod:`hutong.security.guard`) calls :func:`record` inside the
write's transaction, which refuses a Consent its author may not make and
writes one ``consent_author`` row per version (account, kind of author, the
institution, whom a resident or delegate acted for, whether the resident's
written instruction is attached, when the resident was told).  The policy
(:meth:`hutong.security.policy.Access._evaluate_basis`) then reads a Consent
as an access rule only through :func:`in_force`, which looks at the author of
its *current* version.  The rules:

- **The resident**: every Consent about their own record counts (they may open
  any category of it).
- **A delegate** (family member or guardian): counts for the ordinary
  record, and for denies of anything; a permit may not name a category that
  is masked from delegates (``SecuritySettings.sensitive_labels``, what the
  policy hides from them), refused at write (HT-0170) and stripped when read.
- **An institution** (its system or one of its clinicians) may record a
  Consent only on the resident's documented instruction (a signed paper form
  at the desk: ``Consent.sourceAttachment`` or ``sourceReference`` present,
  HT-0171), only about itself (every rule's actor is the writing institution,
  or the writing clinician; HT-0172: a form signed at one hospital speaks for
  the resident's relationship with that hospital, and letting it name other
  institutions would let any hospital open, or lock out, every other one), and
  never for a sensitive category (HT-0173: the institution cannot see those
  categories elsewhere, so it cannot open them; only the resident can, in the
  portal).  The resident is told by SMS in the same request, before the
  Consent is saved (HT-0174 if that is impossible: nothing is saved), and sees
  it in the portal's 授权管理 marked as registered by that institution, with a
  revoke button.  An institution may not change or withdraw a Consent the
  resident or a delegate wrote (HT-0175).
- **The platform engine** (``Role.PLATFORM``: bulk loads of consents signed
  under an earlier regional system): treated like an institution that has no
  records of its own: it counts only with the documented instruction and the
  resident told, may name any actor, and never opens a sensitive category.
  It is not refused at write (the engine is bound by scopes only, and a bulk
  load must not fail on one row); what does not qualify is stored, counts for
  nothing, and is shown to the resident as not in force.
- **No known author** (written before this table existed, or by code running
  without a principal): counts for nothing and is shown to the resident as
  not in force, so they can revoke it or make their own.

A withdrawn or deleted Consent needs no author: it opens nothing.

The SMS leaves inside the write's transaction, so that "told" is recorded in
the same commit as the Consent (there is no after-commit outbox to hang it
on): if a later entry of the same transaction bundle fails, the resident was
told of a Consent that was never saved, and finds nothing in the portal.
That is the lesser error than a Consent in force the resident was never told
of.  A slow gateway holds the write lock that long; institution-recorded
Consents are rare (a desk form), so this is not on a hot path.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
)

from hutong.errors import Forbidden, HutongError, Unprocessable
from hutong.security import consent as consent_rules
from hutong.security import consent_store
from hutong.security.consent_store import Author as Author
from hutong.security.consent_store import authors_of as authors_of
from hutong.security.principal import Role
from hutong.store.repository import DatabaseHandle, Repository, Stored, Writer
from hutong.store.schema import metadata
from hutong.systems import REGION_TZ

if TYPE_CHECKING:
    from hutong.security.policy import Access


consent_author = Table(
    "consent_author",
    metadata,
    Column("consent_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("kind", String(16), nullable=False),             # resident | delegate | institution | platform
    Column("account_id", String(40), nullable=False),
    Column("organization_id", String(64), nullable=True),   # the writing institution
    Column("own_refs", String(400), nullable=False),        # the writer's own actor references, space-separated
    Column("acting_for", String(400), nullable=True),       # persons a resident or delegate acted for
    Column("documented", SmallInteger, nullable=False),     # the resident's written instruction attached
    Column("notified_ms", BigInteger, nullable=True),       # when the resident was told (institution/platform)
    Column("created_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("consent_id", "version", name="pk_consent_author"),
)

RESIDENT, DELEGATE, INSTITUTION, PLATFORM = "resident", "delegate", "institution", "platform"

# Why a Consent does not count (shown to the resident; hutong.web.ui.resident words them).
UNKNOWN_AUTHOR, UNDOCUMENTED, NOT_NOTIFIED, OTHER_ACTOR = "unknown-author", "undocumented", "not-notified", \
    "other-actor"

Send = Callable[[str, str], Any]  # the SMS gateway's send(phone, text)
# Keyed by the database, not the repository object: a repository bound to one
# caller (Repository.acting_as) is a copy of the installed one, and its
# writes must reach the same gateway.  (Database is an unhashable dataclass:
# its id, with a weak reference that drops the entry when it goes.)
_gateways: dict[int, tuple[weakref.ReferenceType[DatabaseHandle], Send]] = {}



def install(repo: Repository, send: Send) -> None:
    """Give this repository's writes the SMS gateway that tells residents of
    Consents an institution records for them."""
    key = id(repo.db)
    _gateways[key] = (weakref.ref(repo.db, lambda _gone: _gateways.pop(key, None)), send)


def _gateway(db: DatabaseHandle) -> Send | None:
    entry = _gateways.get(id(db))
    return entry[1] if entry is not None and entry[0]() is db else None


@dataclass(frozen=True)
class Standing:
    """What one stored Consent counts for: ``rule`` is the Consent as the policy
    reads it (None: nothing), ``why`` the reason when it counts for nothing,
    ``narrowed`` when categories its author may not open were left out."""

    author: Author | None
    rule: dict[str, Any] | None
    why: str | None = None
    narrowed: bool = False


# ---------------------------------------------------------------- writing
def record(w: Writer, access: Access, type: str, id: str, resource: dict[str, Any] | None,
           current: Stored | None) -> None:
    """The write hook's part for Consents (after the policy's own checks):
    refuse what this author may not make, tell the resident of an institution's
    Consent, and record who wrote the new version."""
    if type != "Consent":
        return
    author = _author_of(access, resource)
    if author.kind == INSTITUTION and current is not None and not current.deleted:
        earlier = consent_store.author_in(w, current.id, current.version)
        if earlier is not None and earlier.kind in (RESIDENT, DELEGATE):
            raise Forbidden("HT-0175", "this Consent was made by the resident (or their delegate); only they "
                                       "may change or withdraw it")
    if resource is None:
        return
    sensitive = {x.upper() for x in access.settings.sensitive_labels}
    live = resource.get("status") == "active" and consent_rules.privacy_scoped(resource)
    if live:
        _check(author, resource, sensitive)
    notified = None
    if live and (author.kind == INSTITUTION or (author.kind == PLATFORM and author.documented)):
        try:
            notified = _tell_resident(w, access, author, resource)
        except HutongError:
            if author.kind == INSTITUTION:
                raise
            # the platform's Consent is kept, counting for nothing until the resident is told
    version = current.version + 1 if current is not None else 1
    consent_store.save(w, id, version, author, notified, access.clock())


def _author_of(access: Access, resource: dict[str, Any] | None) -> Author:
    p = access.principal
    kind = {Role.RESIDENT: RESIDENT, Role.DELEGATE: DELEGATE, Role.PLATFORM: PLATFORM}.get(p.role, INSTITUTION)
    own = set()
    if p.organization_id:
        own.add(f"Organization/{p.organization_id}")
    if p.practitioner_id:
        own.add(f"Practitioner/{p.practitioner_id}")
    if p.practitioner_role_id:
        own.add(f"PractitionerRole/{p.practitioner_role_id}")
    acting = tuple(access.my_persons()) if kind in (RESIDENT, DELEGATE) else ()
    return Author(kind, p.account_id, p.organization_id, frozenset(own), acting, _documented(resource), None)


def _documented(resource: dict[str, Any] | None) -> bool:
    # consent.html#Consent.source[x]: "the source on which this consent statement
    # is based" - the signed form (Attachment) or the record of it (Reference).
    if resource is None:
        return False
    att, ref = resource.get("sourceAttachment"), resource.get("sourceReference")
    return (isinstance(att, dict) and bool(att.get("url") or att.get("data"))) or \
        (isinstance(ref, dict) and bool(ref.get("reference") or ref.get("identifier")))


def _check(author: Author, resource: dict[str, Any], sensitive: set[str]) -> None:
    rules = consent_rules.rules(resource)
    if author.kind == DELEGATE:
        hidden = {x for r in rules if r.kind == "permit" for x in r.labels} & sensitive
        if hidden:
            raise Forbidden("HT-0170", "a delegate may not open categories that are masked from delegates "
                                       f"({', '.join(sorted(hidden))}); only the resident can")
    elif author.kind == INSTITUTION:
        if any(r.actors is None or not r.actors <= author.own_refs for r in rules):
            raise Forbidden("HT-0172", "an institution may record a Consent only about itself (every rule's "
                                       "actor must be " + " or ".join(sorted(author.own_refs)) + "); other "
                                       "permissions are the resident's to give in the portal")
        opened = {x for r in rules if r.kind == "permit" for x in r.labels} & sensitive
        if opened:
            raise Forbidden("HT-0173", "an institution may not open sensitive categories "
                                       f"({', '.join(sorted(opened))}); only the resident can, in the portal")
        if not author.documented:
            raise Forbidden("HT-0171", "an institution records a Consent only on the resident's documented "
                                       "instruction: attach the signed form (sourceAttachment) or reference "
                                       "it (sourceReference)")


def _tell_resident(w: Writer, access: Access, author: Author, resource: dict[str, Any]) -> int:
    """SMS the resident (at the phone on their golden record) that someone other
    than they recorded a Consent for them; the text names who, never carries
    anything from the Consent itself (no writer-chosen words in an SMS)."""
    send = _gateway(w.repo.db)
    ref = consent_rules.ref_key(((resource.get("patient") or {}).get("reference")) or "")
    person = access.person_of(ref.split("/", 1)[1]) if ref.startswith("Patient/") else None
    golden = w.read_current("Patient", person) if person else None
    phone = None
    if golden is not None and golden.body is not None:
        for t in orjson.loads(golden.body).get("telecom") or []:
            if isinstance(t, dict) and t.get("system") in ("phone", "sms") and isinstance(t.get("value"), str):
                phone = t["value"]
                break
    if send is None or phone is None:
        raise Unprocessable("HT-0174", "the resident cannot be told of this Consent (no phone on their record, "
                                       "or no SMS gateway here); nothing was saved")
    now = access.clock()
    when = datetime.fromtimestamp(now / 1000, UTC).astimezone(REGION_TZ).strftime("%Y-%m-%d %H:%M")
    writer = _org_name(w, author.organization_id) if author.kind == INSTITUTION else "区域平台"
    kinds = {r.kind for r in consent_rules.rules(resource)}
    what = "拒绝本机构查看您在其他机构的健康档案" if kinds == {"deny"} else \
        "允许本机构查看您在其他机构的健康档案" if author.kind == INSTITUTION else "关于谁可以查看您健康档案的授权"
    text = (f"【互通】{when}（北京时间），{writer}根据您签署的书面授权，为您登记了：{what}。"
            "如非您本人意愿，请登录居民健康档案，在“授权管理”中撤销。")
    try:
        send(phone, text)
    except Exception as e:  # the gateway's own errors: refuse rather than save untold
        raise HutongError("HT-0174", "the resident could not be told of this Consent (SMS gateway failed); "
                                     "nothing was saved", status=503, issue_code="transient") from e
    return now


def _org_name(w: Writer, org_id: str | None) -> str:
    s = w.read_current("Organization", org_id) if org_id else None
    name = orjson.loads(s.body).get("name") if s is not None and s.body is not None else None
    return str(name) if isinstance(name, str) and name else "一家医疗机构"


# ---------------------------------------------------------------- reading
def standing(consent: dict[str, Any], author: Author | None, sensitive: Iterable[str]) -> Standing:
    """What a Consent written by ``author`` counts for (the rules in the module docstring)."""
    hidden = {x.upper() for x in sensitive}
    if author is None:
        return Standing(None, None, UNKNOWN_AUTHOR)
    if author.kind == RESIDENT:
        return Standing(author, consent)
    rules = consent_rules.rules(consent)
    if author.kind == INSTITUTION and any(r.actors is None or not r.actors <= author.own_refs for r in rules):
        return Standing(author, None, OTHER_ACTOR)
    if author.kind in (INSTITUTION, PLATFORM):
        if not author.documented:
            return Standing(author, None, UNDOCUMENTED)
        if author.notified_ms is None:
            return Standing(author, None, NOT_NOTIFIED)
    narrowed = bool({x for r in rules if r.kind == "permit" for x in r.labels} & hidden)
    return Standing(author, consent_rules.without_permitted(consent, hidden) if narrowed else consent,
                    narrowed=narrowed)


def in_force(repo: Repository, consents: Sequence[tuple[Stored, dict[str, Any]]],
             sensitive: Iterable[str]) -> list[dict[str, Any]]:
    """The Consents (as the policy reads them) that count, of those stored."""
    live = [(s, b) for s, b in consents if b.get("status") == "active"]
    if not live:
        return []
    authors = authors_of(repo, {s.id: s.version for s, _ in live})
    labels = tuple(sensitive)
    out = []
    for s, b in live:
        rule = standing(b, authors.get(s.id), labels).rule
        if rule is not None:
            out.append(rule)
    return out
