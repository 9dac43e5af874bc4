"""Which resource types Hutong serves and the search parameters of each.

Also the :class:`FhirIndexer` the store is given at assembly time: it turns a
resource into index rows and compartment memberships using the definitions in
:mod:`hutong.fhir.searchparam_defs`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from hutong.fhir.searchparam_defs import DEFINITIONS, PATIENT_COMPARTMENT
from hutong.fhir.searchparams import SearchParam, extract, normalize_string
from hutong.mpi.golden import is_golden

# FHIR R4 4.0.1 resourcelist.html, less the types whose R4 definitions were
# withdrawn in R4B (whose models validate here): EffectEvidenceSynthesis,
# MedicinalProduct*, RiskEvidenceSynthesis, Substance{NucleicAcid,Polymer,
# Protein,ReferenceInformation,SourceMaterial,Specification}.
RESOURCE_TYPES: frozenset[str] = frozenset("""
Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment AppointmentResponse AuditEvent Basic
Binary BiologicallyDerivedProduct BodyStructure Bundle CapabilityStatement CarePlan CareTeam CatalogEntry
ChargeItem ChargeItemDefinition Claim ClaimResponse ClinicalImpression CodeSystem Communication
CommunicationRequest CompartmentDefinition Composition ConceptMap Condition Consent Contract Coverage
CoverageEligibilityRequest CoverageEligibilityResponse DetectedIssue Device DeviceDefinition DeviceMetric
DeviceRequest DeviceUseStatement DiagnosticReport DocumentManifest DocumentReference Encounter Endpoint
EnrollmentRequest EnrollmentResponse EpisodeOfCare EventDefinition Evidence EvidenceVariable ExampleScenario
ExplanationOfBenefit FamilyMemberHistory Flag Goal GraphDefinition Group GuidanceResponse HealthcareService
ImagingStudy Immunization ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide InsurancePlan
Invoice Library Linkage List Location Measure MeasureReport Media Medication MedicationAdministration
MedicationDispense MedicationKnowledge MedicationRequest MedicationStatement MessageDefinition MessageHeader
MolecularSequence NamingSystem NutritionOrder Observation ObservationDefinition OperationDefinition
OperationOutcome Organization OrganizationAffiliation Parameters Patient PaymentNotice PaymentReconciliation
Person PlanDefinition Practitioner PractitionerRole Procedure Provenance Questionnaire QuestionnaireResponse
RelatedPerson RequestGroup ResearchDefinition ResearchElementDefinition ResearchStudy ResearchSubject
RiskAssessment Schedule SearchParameter ServiceRequest Slot Specimen SpecimenDefinition StructureDefinition
StructureMap Subscription Substance SupplyDelivery SupplyRequest Task TerminologyCapabilities TestReport
TestScript ValueSet VerificationResult VisionPrescription
""".split())

# search.html#all: parameters every resource has.  _id and _lastUpdated are
# columns of the resource table; these four are indexed like any other.
COMMON: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("_tag", "token", ("meta.tag",)),
    ("_security", "token", ("meta.security",)),
    ("_profile", "uri", ("meta.profile",)),
    ("_source", "uri", ("meta.source",)),
)
SPECIAL = ("_id", "_lastUpdated")


@cache
def params_by_type() -> dict[str, dict[str, SearchParam]]:
    out: dict[str, dict[str, SearchParam]] = {t: {} for t in RESOURCE_TYPES}
    for p in DEFINITIONS:
        out.setdefault(p.resource, {})[p.name] = p
    for t in RESOURCE_TYPES:
        for name, ptype, paths in COMMON:
            out[t][name] = SearchParam(t, name, ptype, paths)  # type: ignore[arg-type]
    return out


def params_for(type: str) -> dict[str, SearchParam]:
    return params_by_type().get(type, {})


class FhirIndexer:
    """hutong.store.sql.Indexer over the FHIR definitions."""

    def __init__(self) -> None:
        self.by_type = params_by_type()
        # Per type: (param, first JSON keys of its paths, is-compartment-param).
        # A parameter whose first keys are absent from a resource cannot yield
        # rows, which lets index() skip most of the ~24 parameters per type.
        self.plan: dict[str, list[tuple[SearchParam, tuple[str, ...], bool]]] = {}
        for t, ps in self.by_type.items():
            comp = set(PATIENT_COMPARTMENT.get(t, ()))
            # () for a derived parameter: it has rows even when its elements are absent.
            self.plan[t] = [
                (p, () if p.derive else tuple({steps[0].name for steps in p.compiled}), p.name in comp)
                for p in ps.values()
            ]

    def params(self) -> list[tuple[str, str, str]]:
        return [(t, p.name, p.type) for t, ps in sorted(self.by_type.items()) for p in ps.values()]

    def compartment(self, type: str, resource: dict[str, Any]) -> set[str]:
        """Only the patient compartments of ``resource`` (what index() returns
        second), from its compartment parameters alone: the access policy needs
        this before every write, and full indexing cost twice as much."""
        patients: set[str] = set()
        if type == "Patient":
            if isinstance(resource.get("id"), str):
                patients.add(resource["id"])
            if is_golden(resource):
                return patients
        for p, first, in_compartment in self.plan.get(type, ()):
            if not in_compartment or (first and not any(k in resource for k in first)):
                continue
            for row in extract(p, resource):
                if row[0] == "Patient" and row[1]:
                    patients.add(row[1])
        return patients

    def index(self, type: str, resource: dict[str, Any]) -> tuple[list[tuple[str, str, tuple[Any, ...]]], set[str]]:
        rows: list[tuple[str, str, tuple[Any, ...]]] = []
        patients: set[str] = set()
        if type == "Patient" and isinstance(resource.get("id"), str):
            patients.add(resource["id"])
        for p, first, in_compartment in self.plan.get(type, ()):
            if first and not any(k in resource for k in first):
                continue
            ptype = p.type
            for row in extract(p, resource):
                if ptype == "token" and row[2]:
                    row = (row[0], row[1], normalize_string(row[2]))
                elif in_compartment and row[0] == "Patient" and row[1]:
                    patients.add(row[1])
                rows.append((ptype, p.name, row))
        if type == "Patient" and patients and is_golden(resource):
            # A golden person links to every source; it is not part of their
            # compartments (a source's $everything stays that institution's record).
            patients = {resource["id"]} if isinstance(resource.get("id"), str) else set()
        return rows, patients
