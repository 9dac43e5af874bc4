"""The longitudinal record as people see it: typed items, one model for both portals.

A :class:`Record` is what :func:`hutong.record.build.build_record` makes of
one person's ``$everything`` rows (the rows the caller's policy admitted).
The clinician workspace and the resident portal render the same objects, so
a lab flag, a visit's diagnoses or an item's institution cannot differ
between them.  Dates are the sender's own local time, ``YYYY-MM-DD HH:MM``
(or ``YYYY-MM-DD`` when only a day is known).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hutong.record.flags import Flag


@dataclass(frozen=True, slots=True)
class Source:
    """The institution an item came from."""

    org_id: str
    name: str


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """A Condition resolved for an Encounter (hutong.record.build: both directions)."""

    condition_id: str
    code: str            # ICD-10 when coded so
    display: str
    rank: int | None     # Encounter.diagnosis.rank (1 = primary) when the Encounter names it


@dataclass(slots=True)
class LabResult:
    id: str
    code: str            # LOINC when coded so
    name: str
    value: str           # as shown: number with comparator, coded text or string
    number: float | None
    unit: str
    low: float | None
    high: float | None
    range_text: str
    flag: Flag           # hutong.record.flags: the one abnormal-flag rule
    date: str
    panel: str           # the DiagnosticReport's name, when one lists this result
    report_id: str
    encounter_id: str
    source: Source


@dataclass(slots=True)
class LabReport:
    """A group of results as a report shows them: a DiagnosticReport with its
    results, or the results of one day at one institution that no report lists."""

    id: str
    name: str            # "" for an unreported group
    date: str
    source: Source
    results: list[LabResult]
    encounter_id: str = ""

    @property
    def abnormal(self) -> int:
        return sum(1 for r in self.results if r.flag.abnormal)


@dataclass(slots=True)
class Encounter:
    id: str
    start: str
    end: str
    kind: str            # 门诊 / 住院 / 急诊 (Encounter.type, else class)
    department: str
    source: Source
    diagnoses: list[Diagnosis] = field(default_factory=list)
    medications: list[str] = field(default_factory=list)
    reports: list[LabReport] = field(default_factory=list)

    @property
    def diagnosis_names(self) -> list[str]:
        return [d.display for d in self.diagnoses if d.display]


@dataclass(slots=True)
class Problem:
    id: str
    code: str            # ICD-10 code when coded so
    system: str
    display: str
    status: str          # clinicalStatus code (active, resolved, ...)
    category: str        # problem-list-item | encounter-diagnosis
    onset: str
    recorded: str
    encounter_id: str
    source: Source

    @property
    def active(self) -> bool:
        return self.status in ("active", "recurrence", "relapse", "")


@dataclass(slots=True)
class ProblemGroup:
    """One active problem as the region knows it: the same code recorded by
    several institutions is one line, with each institution as a source."""

    code: str
    display: str
    onset: str           # the earliest onset any institution recorded
    sources: list[Source]


@dataclass(slots=True)
class Medication:
    id: str
    name: str
    status: str
    authored: str
    dosage: str
    encounter_id: str
    source: Source

    @property
    def current(self) -> bool:
        return self.status in ("active", "on-hold", "draft")


@dataclass(slots=True)
class Allergy:
    id: str
    substance: str
    criticality: str
    reaction: str
    recorded: str
    status: str
    source: Source


@dataclass(slots=True)
class Series:
    """One lab code's numeric values over time (a trend chart), oldest first."""

    code: str
    name: str
    unit: str
    low: float | None
    high: float | None
    points: list[LabResult] = field(default_factory=list)


@dataclass(slots=True)
class Imaging:
    id: str
    started: str
    modalities: list[str]  # DICOM modality codes (CT, MR, DX ...)
    description: str
    series: int
    instances: int
    conclusion: str
    source: Source


@dataclass(slots=True)
class Document:
    id: str
    title: str
    type_code: str
    date: str
    content_type: str
    source: Source


@dataclass(frozen=True, slots=True)
class Entry:
    """One item of the record on its timeline (any clinical resource type)."""

    ref: str             # "Type/id"
    type: str
    label: str
    date: str            # YYYY-MM-DD
    source: Source


@dataclass(slots=True)
class Demographics:
    id: str
    name: str
    gender: str
    birth_date: str
    id_number_masked: str
    health_card_masked: str
    linked_records: int


@dataclass(slots=True)
class Record:
    person: str
    demographics: Demographics | None
    institutions: dict[str, Source]      # every institution with at least one item
    organizations: dict[str, str]        # every Organization name the rows make known (id -> name)
    encounters: list[Encounter]          # newest first
    problems: list[Problem]              # active first, each newest first
    medications: list[Medication]
    allergies: list[Allergy]
    labs: list[LabResult]                # newest first
    reports: list[LabReport]             # newest first
    series: list[Series]
    imaging: list[Imaging]
    documents: list[Document]
    entries: list[Entry]                 # newest first
    resources: int
    pages: int

    @property
    def active_problems(self) -> list[Problem]:
        return [p for p in self.problems if p.active and p.category != "encounter-diagnosis"] or \
            [p for p in self.problems if p.active]

    @property
    def problem_list(self) -> list[ProblemGroup]:
        """Active problems merged by code across institutions (newest first)."""
        groups: dict[str, ProblemGroup] = {}
        for p in self.active_problems:
            key = p.code or p.display
            g = groups.get(key)
            onset = p.onset or p.recorded
            if g is None:
                groups[key] = ProblemGroup(p.code, p.display, onset, [p.source])
                continue
            if onset and (not g.onset or onset < g.onset):
                g.onset = onset
            if p.source not in g.sources:
                g.sources.append(p.source)
        return list(groups.values())

    @property
    def current_medications(self) -> list[Medication]:
        return [m for m in self.medications if m.current]

    @property
    def sources(self) -> list[Source]:
        """Every institution with at least one item, by name."""
        return sorted(self.institutions.values(), key=lambda s: s.name)
