"""The store's search language: what the FHIR layer asks, before it is SQL.

`hutong.fhir.search` parses a FHIR query string into these nodes (search.html);
`hutong.store.sqlsearch` compiles them to SQL over the index tables.  Keeping
this small AST between them means neither side knows the other's details.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Prefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]


@dataclass(frozen=True, slots=True)
class ParamRef:
    type: str  # resource type the parameter belongs to
    name: str
    ptype: str  # token | string | date | reference | quantity | number | uri | special


@dataclass(frozen=True, slots=True)
class TokenMatch:
    system: str | None  # None = any system; "" = no system (``|code``)
    code: str | None  # None = any code in the system (``system|``)
    text: str | None = None  # :text modifier


@dataclass(frozen=True, slots=True)
class StringMatch:
    value: str  # normalised unless mode == "exact"
    mode: Literal["prefix", "exact", "contains"] = "prefix"


@dataclass(frozen=True, slots=True)
class RangeMatch:
    """date, number and quantity values: the value's implicit range [lo, hi)."""

    prefix: Prefix
    lo: float
    hi: float
    value: float  # the point value (numbers) or lo (dates)
    system: str | None = None  # quantity only
    code: str | None = None  # quantity only


@dataclass(frozen=True, slots=True)
class RefMatch:
    target_type: str | None
    target_id: str | None
    url: str | None = None  # absolute reference not on this server


@dataclass(frozen=True, slots=True)
class UriMatch:
    value: str
    mode: Literal["exact", "below", "above"] = "exact"


Match = TokenMatch | StringMatch | RangeMatch | RefMatch | UriMatch


@dataclass(frozen=True, slots=True)
class Clause:
    """One parameter occurrence: its values are ORed (search.html#combining)."""

    param: ParamRef
    matches: tuple[Match, ...] = ()
    negate: bool = False  # :not / ne handled per match; this is :not on tokens
    missing: bool | None = None  # :missing=true/false
    chain: Chain | None = None


@dataclass(frozen=True, slots=True)
class Chain:
    """``subject:Patient.identifier=x``: the referenced resource must match ``clause``."""

    target_types: tuple[str, ...]
    clause: Clause


@dataclass(frozen=True, slots=True)
class Has:
    """``_has:Observation:patient:code=x`` (reverse chaining)."""

    source_type: str
    ref_param: ParamRef
    clause: Clause
    target_type: str  # the searched type, which ref_param must point to


@dataclass(frozen=True, slots=True)
class SortKey:
    param: ParamRef  # _id and _lastUpdated use ptype "special"
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Include:
    source_type: str
    param: ParamRef
    target_type: str | None
    iterate: bool = False
    reverse: bool = False  # _revinclude


@dataclass(frozen=True, slots=True)
class Grant:
    """One reason a row may be seen (hutong.security.policy builds these).

    A row passes when it is in the compartment of one of ``patients``, or of a
    source Patient whose managingOrganization is ``managed_by`` (an
    Organization id: "this institution's own records"), or is a golden person
    record (``golden``); and carries none of ``hide_labels`` (normalised
    meta.security codes: masked sensitive categories).
    """

    patients: tuple[str, ...] = ()
    managed_by: str | None = None
    golden: bool = False
    hide_labels: tuple[str, ...] = ()
    owner_org: str | None = None  # Task rows whose owner is this Organization id (correction requests to answer)


@dataclass(frozen=True, slots=True)
class AccessScope:
    """The rows a caller may see: the union of its grants (none = nothing)."""

    grants: tuple[Grant, ...] = ()


@dataclass(slots=True)
class Query:
    type: str
    clauses: list[Clause | Has] = field(default_factory=list)
    ids: tuple[str, ...] | None = None  # _id
    last_updated: tuple[RangeMatch, ...] = ()  # _lastUpdated (ANDed)
    sort: list[SortKey] = field(default_factory=list)
    count: int = 20
    cursor: Cursor | None = None
    includes: list[Include] = field(default_factory=list)
    total: bool = True
    compartment_patient: str | None = None  # restrict to one patient's compartment
    scope: AccessScope | None = None  # access policy: None = unrestricted (trusted internal callers)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Keyset position: the sort values and pk of the row to continue from.

    Keyset paging stays correct while others write (no row is skipped or
    repeated because rows before it were inserted or deleted), unlike OFFSET.
    """

    keys: tuple[object, ...]
    pk: int
    backward: bool = False
