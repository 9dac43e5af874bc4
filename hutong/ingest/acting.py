"""Who a received message is written as (issue 13, item 3 for ingestion:
every entry point acts as an explicit principal; there is no "unset means trusted").

The pipeline learns which registered institution a message is from only by
reading it (MSH-4, the CDA custodian), so an entry point hands it an
:class:`Authority`: given that institution, the :class:`Access` the writes run
under, or a refusal (a :class:`HutongError`).  Three kinds:

- :class:`ByConnection` -- MLLP: the connection's authentication
  (hutong.security.senders decides: certificate, configured address, or the
  development loopback rule);
- :class:`ByPrincipal` -- an authenticated HTTP caller or the local command
  line: an institution sends only its own institution's messages;
- :class:`ByRetry` -- a dead letter re-processed: the *original* sender's
  principal, recorded with the dead letter, narrowed by the operator's
  authority (an operator can never file a message under another institution
  than the one that sent it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import orjson

from hutong.errors import Forbidden
from hutong.ingest.envelope import BEARER_TOKEN, LOCAL, Credential
from hutong.ingest.hl7v2.connection import Connection
from hutong.security.policy import Access
from hutong.security.principal import LOCAL_OPERATOR, Principal, Role
from hutong.security.settings import SecuritySettings
from hutong.store.repository import Repository

# Roles that may re-process dead letters, and for whom (hutong.web retry route checks the role first).
RETRY_ANY = (Role.COMMISSION, Role.PLATFORM)


@dataclass(frozen=True, slots=True)
class Institution:
    code: str             # registered identifier value (统一社会信用代码)
    organization_id: str  # Organization resource id


# Who an MLLP sender is: the network entry point (hutong.security.senders, wired
# by hutong.web.serve_cmd) turns a registered institution and the connection it
# came on into that institution's Access, or refuses.
Authorise = Callable[[Institution, Connection], Access]


class Authority(Protocol):
    """Who the writes of one message run as."""

    @property
    def principal(self) -> Principal | None:
        """Who is acting before the institution is known (None: only the
        transport's credential, e.g. an MLLP connection)."""
        ...

    def access(self, inst: Institution) -> Access:
        """The Access for a message from ``inst``; raises HutongError to refuse."""
        ...


@dataclass(frozen=True, slots=True)
class ByConnection:
    authorise: Authorise
    connection: Connection

    @property
    def principal(self) -> Principal | None:
        return None

    def access(self, inst: Institution) -> Access:
        return self.authorise(inst, self.connection)


@dataclass(frozen=True, slots=True)
class ByPrincipal:
    """An authenticated caller (HTTP token, the local operator).  An institution's
    system sends its own institution's documents only (checked before anything
    is stored); the platform's engine sends for any institution."""

    repo: Repository
    who: Principal
    settings: SecuritySettings = SecuritySettings()
    clock: Callable[[], int] | None = None

    @property
    def principal(self) -> Principal | None:
        return self.who

    def access(self, inst: Institution) -> Access:
        if self.who.role is Role.INSTITUTION and self.who.organization != inst.code:
            raise Forbidden("HT-0102", "the document's custodian is not your institution")
        if self.who.role not in (Role.INSTITUTION, Role.PLATFORM):
            raise Forbidden("HT-0104", f"a {self.who.role.value} account does not send records")
        return _access(self.repo, self.who, self.settings, self.clock)


def credential_of(principal: Principal) -> Credential:
    """The credential of a caller authenticated before the message (a bearer token, the command line)."""
    if principal.account_id == LOCAL_OPERATOR.account_id:
        return Credential(LOCAL, None, principal.display)
    return Credential(BEARER_TOKEN, principal.organization if principal.role is Role.INSTITUTION else None,
                      f"{principal.account_id} client={principal.client_id or '-'} token={principal.token_id or '-'}")


def _access(repo: Repository, who: Principal, settings: SecuritySettings,
            clock: Callable[[], int] | None) -> Access:
    if clock is not None:
        return Access(repo, who, settings, clock=clock)
    return Access(repo, who, settings)


# ------------------------------------------------------------------ the sender on record
@dataclass(frozen=True, slots=True)
class OnRecord:
    """What a dead letter keeps of who sent it: the principal its writes were
    authorised as (None when it died before that, e.g. unknown sender) and the
    transport's credential."""

    principal: Principal | None
    credential: Credential

    def dumps(self) -> str:
        out: dict[str, Any] = {"auth": self.credential.method}
        if self.credential.institution is not None:
            out["institution"] = self.credential.institution
        if self.credential.description is not None:
            out["credential"] = self.credential.description[:300]
        p = self.principal
        if p is not None:
            out["principal"] = {"account": p.account_id, "role": p.role.value, "display": p.display[:100],
                                "scopes": list(p.scopes), "organization": p.organization,
                                "organization_id": p.organization_id, "client": p.client_id}
        return orjson.dumps(out).decode()

    @staticmethod
    def loads(text: str | None) -> OnRecord | None:
        if not text:
            return None
        d = orjson.loads(text)
        cred = Credential(d.get("auth", "none"), d.get("institution"), d.get("credential"))
        p = d.get("principal")
        principal = None
        if p is not None:
            principal = Principal(account_id=p["account"], role=Role(p["role"]), display=p.get("display") or "",
                                  scopes=tuple(p.get("scopes") or ()), organization=p.get("organization"),
                                  organization_id=p.get("organization_id"), client_id=p.get("client"))
        return OnRecord(principal, cred)


def narrowed(original: Principal, operator: Principal, inst: Institution) -> Principal:
    """The principal a retry acts as: the original sender's, never more.

    The operator's authority bounds it: only commission and platform staff
    re-process dead letters, and they gain nothing by it -- the writes are the
    sender's, under the sender's policy.  A message the platform's engine sent
    (a folder import, the integration engine) is retried as the institution
    it is from: narrower than the platform, and what its owner could send."""
    if operator.role not in RETRY_ANY:
        raise Forbidden("HT-0316", f"a {operator.role.value} account may not re-process dead letters")
    who = original
    if original.role is Role.PLATFORM:
        who = replace(original, role=Role.INSTITUTION, organization=inst.code, organization_id=inst.organization_id)
    return replace(who, attributes={**who.attributes, "retried_by": operator.account_id})


@dataclass(frozen=True, slots=True)
class ByRetry:
    """A dead letter re-processed by ``operator``: it acts as the sender on
    record (its principal, or failing that its connection re-authorised with
    today's settings), narrowed by :func:`narrowed`."""

    repo: Repository
    operator: Principal
    record: OnRecord | None
    authorise: Authorise | None
    peer: str | None
    settings: SecuritySettings = SecuritySettings()

    @property
    def principal(self) -> Principal | None:
        return self.record.principal if self.record is not None else None

    def access(self, inst: Institution) -> Access:
        rec = self.record
        if rec is None:
            raise Forbidden("HT-0317", "this dead letter records no authenticated sender (received before "
                                       "senders were recorded): the sender must send it again")
        if rec.principal is not None:
            original = rec.principal
            if original.role is Role.INSTITUTION and original.organization != inst.code:
                raise Forbidden("HT-0102", f"the message names {inst.code}, but {original.organization} sent it")
            who = narrowed(original, self.operator, inst)
            return _access(self.repo, who, self.settings, None)
        if self.authorise is None:
            raise Forbidden("HT-0317", "this dead letter's sender was never authenticated and no MLLP sender "
                                       "authentication is configured here to do it now")
        conn = Connection(self.peer, rec.credential.institution, rec.credential.method, rec.credential.description)
        sent_as = self.authorise(inst, conn)
        return _access(self.repo, narrowed(sent_as.principal, self.operator, inst), self.settings, None)
