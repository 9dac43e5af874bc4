"""An institution's doctors as the operator's account form picks them (issue 16, item 9).

A clinician account is tied to a post in the directory: a PractitionerRole
(FHIR R4 practitionerrole.html) naming the Practitioner and the
Organization it is held at.  The operator no longer types raw ids: the form
lists the posts of one institution (name, department, title), searched by
name -- Hanzi (traditional typed as simplified: 張 finds 张), toneless pinyin
or its initials, as the MPI normalises names (hutong.mpi.normalize) -- and
by department, and carries the chosen post's id as a hidden value.

Hidden values are what the browser sends, not what the page showed: the
server re-reads the chosen post (:func:`chosen`) and accepts it only when it
is an active PractitionerRole held at the operator's institution whose
Practitioner exists (HT-0465 otherwise).  The Practitioner id stored on the
account comes from that post, never from the form.

Posts and practitioners are directory data (hutong.security.policy:
operators read the directory, not records); they are read from the
Repository as the console reads institution names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from hutong.errors import InvalidRequest
from hutong.fhir import search as fsearch
from hutong.mpi.normalize import name_initials, name_pinyin, normalize_name
from hutong.store.repository import Repository
from hutong.systems import ORGANIZATION

MAX_POSTS = 1000  # one search page (hutong.fhir.search.MAX_COUNT): posts of one institution
MAX_SHOWN = 30    # matches listed at once; more asks the operator to narrow the search
MAX_QUERY = 40    # characters of a name search


@dataclass(frozen=True, slots=True)
class Doctor:
    """One post: the person, where and as what."""

    role_id: str          # PractitionerRole.id: the hidden value the form carries
    practitioner_id: str
    organization_id: str
    name: str
    department: str
    title: str


@dataclass(frozen=True, slots=True)
class Institution:
    id: str      # Organization.id
    code: str    # its 机构代码 (identifier under hutong.systems.ORGANIZATION)
    name: str


def _text(concepts: list[dict[str, Any]] | None) -> str:
    """A CodeableConcept list's first words (text, else the first coding's display)."""
    for c in concepts or ():
        if c.get("text"):
            return str(c["text"])
        for coding in c.get("coding") or ():
            if coding.get("display"):
                return str(coding["display"])
    return ""


def _person_name(practitioner: dict[str, Any]) -> str:
    names = practitioner.get("name") or []
    official = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    return str(official.get("text") or (official.get("family") or "") + "".join(official.get("given") or []))


def _ref_id(ref: dict[str, Any] | None, type: str) -> str | None:
    r = str((ref or {}).get("reference") or "")
    head, _, tail = r.partition("/")
    return tail if head == type and tail and "/" not in tail else None


def institution(repo: Repository, organization_id: str) -> Institution | None:
    """The registered Organization ``organization_id`` with its code, else None."""
    if not organization_id or len(organization_id) > 64:
        return None
    stored = repo.read("Organization", organization_id)
    if stored is None or stored.deleted or stored.body is None:
        return None
    org = orjson.loads(stored.body)
    code = next((str(i["value"]) for i in org.get("identifier") or ()
                 if i.get("system") == ORGANIZATION and i.get("value")), None)
    if code is None:
        return None
    return Institution(organization_id, code, str(org.get("name") or ""))


def institutions(repo: Repository) -> list[Institution]:
    """Every registered institution with a code, by name (the platform operator's choice)."""
    parsed = fsearch.parse("Organization", [("_count", str(MAX_POSTS))], base_url="", strict=True)
    out = []
    for s in repo.search(parsed.query).matches:
        if s.body is None:
            continue
        org = orjson.loads(s.body)
        code = next((str(i["value"]) for i in org.get("identifier") or ()
                     if i.get("system") == ORGANIZATION and i.get("value")), None)
        if code is not None:
            out.append(Institution(s.id, code, str(org.get("name") or code)))
    return sorted(out, key=lambda i: i.name)


def doctors(repo: Repository, organization_id: str) -> list[Doctor]:
    """The active posts held at ``organization_id``, by department and name."""
    parsed = fsearch.parse("PractitionerRole", [("organization", f"Organization/{organization_id}"),
                                                ("_count", str(MAX_POSTS))], base_url="", strict=True)
    roles = [orjson.loads(s.body) for s in repo.search(parsed.query).matches if s.body is not None]
    roles = [r for r in roles if r.get("active", True) is not False]
    wanted = {pid for r in roles if (pid := _ref_id(r.get("practitioner"), "Practitioner"))}
    people = {s.id: orjson.loads(s.body) for s in repo.fetch(("Practitioner", p) for p in sorted(wanted))
              if s.body is not None and not s.deleted}
    out = []
    for r in roles:
        pid = _ref_id(r.get("practitioner"), "Practitioner")
        if pid is None or pid not in people:
            continue
        out.append(Doctor(r["id"], pid, organization_id, _person_name(people[pid]), _text(r.get("specialty")),
                          _text(r.get("code"))))
    return sorted(out, key=lambda d: (d.department, name_pinyin(d.name), d.name, d.role_id))


def matches(doctor: Doctor, query: str) -> bool:
    """Does ``query`` find this doctor's name: Hanzi (normalised, so 張 finds 张) as a
    part of the name; Latin letters as the start of its toneless pinyin, of its
    initials (zw finds 张伟), or as a part of its pinyin."""
    q = normalize_name(query)
    if not q:
        return True
    if not q.isascii():
        return q in normalize_name(doctor.name)
    q = q.lower()
    full = name_pinyin(doctor.name)
    return full.startswith(q) or name_initials(doctor.name).startswith(q) or q in full


def find(found: list[Doctor], query: str = "", department: str = "") -> list[Doctor]:
    """The doctors among ``found`` whose name ``query`` finds, in ``department`` when given."""
    return [d for d in found if (not department or d.department == department) and matches(d, query)]


def departments(found: list[Doctor]) -> list[str]:
    return sorted({d.department for d in found if d.department})


NOT_HERE = "HT-0465"
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # datatypes.html#id


def chosen(repo: Repository, organization_id: str, role_id: str) -> Doctor:
    """The post ``role_id`` if it is an active PractitionerRole held at
    ``organization_id`` whose Practitioner exists; HT-0465 otherwise (one answer
    for another institution's post and a made-up id alike)."""
    refused = InvalidRequest(NOT_HERE, "所选医生不是本机构目录中的医生（或已不在岗），请重新查找并选择")
    if not FHIR_ID.fullmatch(role_id):
        raise refused
    stored = repo.read("PractitionerRole", role_id)
    if stored is None or stored.deleted or stored.body is None:
        raise refused
    role = orjson.loads(stored.body)
    if role.get("active", True) is False or _ref_id(role.get("organization"), "Organization") != organization_id:
        raise refused
    pid = _ref_id(role.get("practitioner"), "Practitioner")
    person = repo.read("Practitioner", pid) if pid else None
    if pid is None or person is None or person.deleted or person.body is None:
        raise refused
    return Doctor(role_id, pid, organization_id, _person_name(orjson.loads(person.body)),
                  _text(role.get("specialty")), _text(role.get("code")))
