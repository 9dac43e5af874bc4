"""Search parameter definitions for the resource types Hutong serves.

Source: FHIR R4 4.0.1 ``search-parameters.json`` (the Bundle published with the
spec, http://hl7.org/fhir/R4/search-parameters.json, mirrored at
http://hl7.org/fhir/R4/searchparameter-registry.html and on each resource's
"Search Parameters" table, e.g. http://hl7.org/fhir/R4/observation.html#search),
and http://hl7.org/fhir/R4/compartmentdefinition-patient.html for
:data:`PATIENT_COMPARTMENT`.  Every FHIRPath expression is translated to the path
syntax documented in :mod:`hutong.fhir.searchparams`:

* shared definitions (``clinical-patient``, ``clinical-date``, ``clinical-code``,
  ``clinical-encounter``, ``clinical-identifier``, ``clinical-type``,
  ``individual-*``, ``medications-*``) are split per resource type, keeping
  only that type's branch of the ``|`` union;
* ``(X.value as Quantity)`` / ``X.value.as(Quantity)`` becomes ``valueQuantity``;
  an untyped choice element (``Observation.effective``, ``Procedure.performed``)
  lists every JSON spelling the R4 element has;
* ``X.where(resolve() is Patient)`` becomes path ``X`` with ``targets=("Patient",)``
  (``clinical-patient`` as a whole is narrowed to ``("Patient",)``, the spec lists
  ``Patient | Group``);
* ``X.where(system='phone')`` becomes ``X[system=phone]``;
* reference targets are the spec's ``target`` list; ``()`` where the spec lists
  every resource type (``Reference(Any)``).

Not included: the common ``_id``/``_lastUpdated``/``_tag``/``_profile``/
``_security``/``_source`` (the engine handles them), ``_text``/``_content``/
``_query``, composite parameters (``Observation`` ``code-value-*``,
``combo-code-value-*``, ``component-code-value-*``, ``DocumentReference``
``relationship``) and the special ``Location`` ``near``.  ``Patient`` ``deceased``
(``Patient.deceased.exists() and Patient.deceased != false``) is logic, not a
path: :func:`deceased` computes it.  Binary has no search parameters of its own.
"""

from __future__ import annotations

from typing import Any

from hutong.fhir.searchparams import SearchParam as SP


def deceased(patient: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Patient ``deceased`` (R4 SearchParameter Patient-deceased): the FHIRPath
    ``Patient.deceased.exists() and Patient.deceased != false`` is true or false for
    every Patient, so a living patient (no deceased[x]) is found by ``deceased=false``."""
    dead = patient.get("deceasedBoolean") is True or isinstance(patient.get("deceasedDateTime"), str)
    return [(None, "true" if dead else "false", None)]


# The resource types these definitions cover (Binary: common parameters only);
# hutong.fhir.registry.RESOURCE_TYPES is the wider set the server accepts.
DEFINED_TYPES: tuple[str, ...] = (
    "Patient", "Practitioner", "PractitionerRole", "Organization", "Location", "Encounter",
    "Condition", "Observation", "DiagnosticReport", "MedicationRequest", "MedicationStatement", "AllergyIntolerance",
    "Immunization", "Procedure", "DocumentReference", "ServiceRequest", "ImagingStudy", "Consent",
    "AuditEvent", "Device", "Task", "Binary",
)

DEFINITIONS: tuple[SP, ...] = (
    # Patient: 23
    SP("Patient", "active", "token", ("active",)),
    SP("Patient", "address", "string", ("address",)),
    SP("Patient", "address-city", "string", ("address.city",)),
    SP("Patient", "address-country", "string", ("address.country",)),
    SP("Patient", "address-postalcode", "string", ("address.postalCode",)),
    SP("Patient", "address-state", "string", ("address.state",)),
    SP("Patient", "address-use", "token", ("address.use",)),
    SP("Patient", "birthdate", "date", ("birthDate",)),
    SP("Patient", "death-date", "date", ("deceasedDateTime",)),
    SP("Patient", "deceased", "token", ("deceasedBoolean", "deceasedDateTime"), derive=deceased),
    SP("Patient", "email", "token", ("telecom[system=email]",)),
    SP("Patient", "family", "string", ("name.family",)),
    SP("Patient", "gender", "token", ("gender",)),
    SP(
        "Patient", "general-practitioner", "reference", ("generalPractitioner",),
        ("Practitioner", "Organization", "PractitionerRole"),
    ),
    SP("Patient", "given", "string", ("name.given",)),
    SP("Patient", "identifier", "token", ("identifier",)),
    SP("Patient", "language", "token", ("communication.language",)),
    SP("Patient", "link", "reference", ("link.other",), ("Patient", "RelatedPerson")),
    SP("Patient", "name", "string", ("name",)),
    SP("Patient", "organization", "reference", ("managingOrganization",), ("Organization",)),
    SP("Patient", "phone", "token", ("telecom[system=phone]",)),
    SP("Patient", "phonetic", "string", ("name",)),
    SP("Patient", "telecom", "token", ("telecom",)),
    # Practitioner: 17
    SP("Practitioner", "active", "token", ("active",)),
    SP("Practitioner", "address", "string", ("address",)),
    SP("Practitioner", "address-city", "string", ("address.city",)),
    SP("Practitioner", "address-country", "string", ("address.country",)),
    SP("Practitioner", "address-postalcode", "string", ("address.postalCode",)),
    SP("Practitioner", "address-state", "string", ("address.state",)),
    SP("Practitioner", "address-use", "token", ("address.use",)),
    SP("Practitioner", "communication", "token", ("communication",)),
    SP("Practitioner", "email", "token", ("telecom[system=email]",)),
    SP("Practitioner", "family", "string", ("name.family",)),
    SP("Practitioner", "gender", "token", ("gender",)),
    SP("Practitioner", "given", "string", ("name.given",)),
    SP("Practitioner", "identifier", "token", ("identifier",)),
    SP("Practitioner", "name", "string", ("name",)),
    SP("Practitioner", "phone", "token", ("telecom[system=phone]",)),
    SP("Practitioner", "phonetic", "string", ("name",)),
    SP("Practitioner", "telecom", "token", ("telecom",)),
    # PractitionerRole: 13
    SP("PractitionerRole", "active", "token", ("active",)),
    SP("PractitionerRole", "date", "date", ("period",)),
    SP("PractitionerRole", "email", "token", ("telecom[system=email]",)),
    SP("PractitionerRole", "endpoint", "reference", ("endpoint",), ("Endpoint",)),
    SP("PractitionerRole", "identifier", "token", ("identifier",)),
    SP("PractitionerRole", "location", "reference", ("location",), ("Location",)),
    SP("PractitionerRole", "organization", "reference", ("organization",), ("Organization",)),
    SP("PractitionerRole", "phone", "token", ("telecom[system=phone]",)),
    SP("PractitionerRole", "practitioner", "reference", ("practitioner",), ("Practitioner",)),
    SP("PractitionerRole", "role", "token", ("code",)),
    SP("PractitionerRole", "service", "reference", ("healthcareService",), ("HealthcareService",)),
    SP("PractitionerRole", "specialty", "token", ("specialty",)),
    SP("PractitionerRole", "telecom", "token", ("telecom",)),
    # Organization: 13
    SP("Organization", "active", "token", ("active",)),
    SP("Organization", "address", "string", ("address",)),
    SP("Organization", "address-city", "string", ("address.city",)),
    SP("Organization", "address-country", "string", ("address.country",)),
    SP("Organization", "address-postalcode", "string", ("address.postalCode",)),
    SP("Organization", "address-state", "string", ("address.state",)),
    SP("Organization", "address-use", "token", ("address.use",)),
    SP("Organization", "endpoint", "reference", ("endpoint",), ("Endpoint",)),
    SP("Organization", "identifier", "token", ("identifier",)),
    SP("Organization", "name", "string", ("name", "alias")),
    SP("Organization", "partof", "reference", ("partOf",), ("Organization",)),
    SP("Organization", "phonetic", "string", ("name",)),
    SP("Organization", "type", "token", ("type",)),
    # Location: 14
    SP("Location", "address", "string", ("address",)),
    SP("Location", "address-city", "string", ("address.city",)),
    SP("Location", "address-country", "string", ("address.country",)),
    SP("Location", "address-postalcode", "string", ("address.postalCode",)),
    SP("Location", "address-state", "string", ("address.state",)),
    SP("Location", "address-use", "token", ("address.use",)),
    SP("Location", "endpoint", "reference", ("endpoint",), ("Endpoint",)),
    SP("Location", "identifier", "token", ("identifier",)),
    SP("Location", "name", "string", ("name", "alias")),
    SP("Location", "operational-status", "token", ("operationalStatus",)),
    SP("Location", "organization", "reference", ("managingOrganization",), ("Organization",)),
    SP("Location", "partof", "reference", ("partOf",), ("Location",)),
    SP("Location", "status", "token", ("status",)),
    SP("Location", "type", "token", ("type",)),
    # Encounter: 23
    SP("Encounter", "account", "reference", ("account",), ("Account",)),
    SP("Encounter", "appointment", "reference", ("appointment",), ("Appointment",)),
    SP("Encounter", "based-on", "reference", ("basedOn",), ("ServiceRequest",)),
    SP("Encounter", "class", "token", ("class",)),
    SP("Encounter", "date", "date", ("period",)),
    SP("Encounter", "diagnosis", "reference", ("diagnosis.condition",), ("Condition", "Procedure")),
    SP("Encounter", "episode-of-care", "reference", ("episodeOfCare",), ("EpisodeOfCare",)),
    SP("Encounter", "identifier", "token", ("identifier",)),
    SP("Encounter", "length", "quantity", ("length",)),
    SP("Encounter", "location", "reference", ("location.location",), ("Location",)),
    SP("Encounter", "location-period", "date", ("location.period",)),
    SP("Encounter", "part-of", "reference", ("partOf",), ("Encounter",)),
    SP(
        "Encounter", "participant", "reference", ("participant.individual",),
        ("Practitioner", "PractitionerRole", "RelatedPerson"),
    ),
    SP("Encounter", "participant-type", "token", ("participant.type",)),
    SP("Encounter", "patient", "reference", ("subject",), ("Patient",)),
    SP("Encounter", "practitioner", "reference", ("participant.individual",), ("Practitioner",)),
    SP("Encounter", "reason-code", "token", ("reasonCode",)),
    SP(
        "Encounter", "reason-reference", "reference", ("reasonReference",),
        ("Condition", "Observation", "Procedure", "ImmunizationRecommendation"),
    ),
    SP("Encounter", "service-provider", "reference", ("serviceProvider",), ("Organization",)),
    SP("Encounter", "special-arrangement", "token", ("hospitalization.specialArrangement",)),
    SP("Encounter", "status", "token", ("status",)),
    SP("Encounter", "subject", "reference", ("subject",), ("Group", "Patient")),
    SP("Encounter", "type", "token", ("type",)),
    # Condition: 21
    SP("Condition", "abatement-age", "quantity", ("abatementAge", "abatementRange")),
    SP("Condition", "abatement-date", "date", ("abatementDateTime", "abatementPeriod")),
    SP("Condition", "abatement-string", "string", ("abatementString",)),
    SP(
        "Condition", "asserter", "reference", ("asserter",),
        ("Practitioner", "Patient", "PractitionerRole", "RelatedPerson"),
    ),
    SP("Condition", "body-site", "token", ("bodySite",)),
    SP("Condition", "category", "token", ("category",)),
    SP("Condition", "clinical-status", "token", ("clinicalStatus",)),
    SP("Condition", "code", "token", ("code",)),
    SP("Condition", "encounter", "reference", ("encounter",), ("Encounter",)),
    SP("Condition", "evidence", "token", ("evidence.code",)),
    SP("Condition", "evidence-detail", "reference", ("evidence.detail",), ()),
    SP("Condition", "identifier", "token", ("identifier",)),
    SP("Condition", "onset-age", "quantity", ("onsetAge", "onsetRange")),
    SP("Condition", "onset-date", "date", ("onsetDateTime", "onsetPeriod")),
    SP("Condition", "onset-info", "string", ("onsetString",)),
    SP("Condition", "patient", "reference", ("subject",), ("Patient",)),
    SP("Condition", "recorded-date", "date", ("recordedDate",)),
    SP("Condition", "severity", "token", ("severity",)),
    SP("Condition", "stage", "token", ("stage.summary",)),
    SP("Condition", "subject", "reference", ("subject",), ("Group", "Patient")),
    SP("Condition", "verification-status", "token", ("verificationStatus",)),
    # Observation: 30
    SP(
        "Observation", "based-on", "reference", ("basedOn",),
        ("CarePlan", "MedicationRequest", "NutritionOrder", "DeviceRequest", "ServiceRequest", "ImmunizationRecommendation"),
    ),
    SP("Observation", "category", "token", ("category",)),
    SP("Observation", "code", "token", ("code",)),
    SP("Observation", "combo-code", "token", ("code", "component.code")),
    SP("Observation", "combo-data-absent-reason", "token", ("dataAbsentReason", "component.dataAbsentReason")),
    SP("Observation", "combo-value-concept", "token", ("valueCodeableConcept", "component.valueCodeableConcept")),
    SP("Observation", "combo-value-quantity", "quantity", ("valueQuantity", "valueSampledData", "component.valueQuantity", "component.valueSampledData")),
    SP("Observation", "component-code", "token", ("component.code",)),
    SP("Observation", "component-data-absent-reason", "token", ("component.dataAbsentReason",)),
    SP("Observation", "component-value-concept", "token", ("component.valueCodeableConcept",)),
    SP("Observation", "component-value-quantity", "quantity", ("component.valueQuantity", "component.valueSampledData")),
    SP("Observation", "data-absent-reason", "token", ("dataAbsentReason",)),
    SP("Observation", "date", "date", ("effectiveDateTime", "effectiveInstant", "effectivePeriod", "effectiveTiming")),
    SP(
        "Observation", "derived-from", "reference", ("derivedFrom",),
        ("Media", "Observation", "ImagingStudy", "MolecularSequence", "QuestionnaireResponse", "DocumentReference"),
    ),
    SP("Observation", "device", "reference", ("device",), ("Device", "DeviceMetric")),
    SP("Observation", "encounter", "reference", ("encounter",), ("Encounter", "EpisodeOfCare")),
    SP("Observation", "focus", "reference", ("focus",), ()),
    SP(
        "Observation", "has-member", "reference", ("hasMember",),
        ("Observation", "MolecularSequence", "QuestionnaireResponse"),
    ),
    SP("Observation", "identifier", "token", ("identifier",)),
    SP("Observation", "method", "token", ("method",)),
    SP(
        "Observation", "part-of", "reference", ("partOf",),
        ("Immunization", "MedicationDispense", "MedicationAdministration", "Procedure", "ImagingStudy", "MedicationStatement"),
    ),
    SP("Observation", "patient", "reference", ("subject",), ("Patient",)),
    SP(
        "Observation", "performer", "reference", ("performer",),
        ("Practitioner", "Organization", "CareTeam", "Patient", "PractitionerRole", "RelatedPerson"),
    ),
    SP("Observation", "specimen", "reference", ("specimen",), ("Specimen",)),
    SP("Observation", "status", "token", ("status",)),
    SP("Observation", "subject", "reference", ("subject",), ("Group", "Device", "Patient", "Location")),
    SP("Observation", "value-concept", "token", ("valueCodeableConcept",)),
    SP("Observation", "value-date", "date", ("valueDateTime", "valuePeriod")),
    SP("Observation", "value-quantity", "quantity", ("valueQuantity", "valueSampledData")),
    SP("Observation", "value-string", "string", ("valueString", "valueCodeableConcept.text")),
    # DiagnosticReport: 16
    SP(
        "DiagnosticReport", "based-on", "reference", ("basedOn",),
        ("CarePlan", "MedicationRequest", "NutritionOrder", "ServiceRequest", "ImmunizationRecommendation"),
    ),
    SP("DiagnosticReport", "category", "token", ("category",)),
    SP("DiagnosticReport", "code", "token", ("code",)),
    SP("DiagnosticReport", "conclusion", "token", ("conclusionCode",)),
    SP("DiagnosticReport", "date", "date", ("effectiveDateTime", "effectivePeriod")),
    SP("DiagnosticReport", "encounter", "reference", ("encounter",), ("Encounter", "EpisodeOfCare")),
    SP("DiagnosticReport", "identifier", "token", ("identifier",)),
    SP("DiagnosticReport", "issued", "date", ("issued",)),
    SP("DiagnosticReport", "media", "reference", ("media.link",), ("Media",)),
    SP("DiagnosticReport", "patient", "reference", ("subject",), ("Patient",)),
    SP(
        "DiagnosticReport", "performer", "reference", ("performer",),
        ("Practitioner", "Organization", "CareTeam", "PractitionerRole"),
    ),
    SP("DiagnosticReport", "result", "reference", ("result",), ("Observation",)),
    SP(
        "DiagnosticReport", "results-interpreter", "reference", ("resultsInterpreter",),
        ("Practitioner", "Organization", "CareTeam", "PractitionerRole"),
    ),
    SP("DiagnosticReport", "specimen", "reference", ("specimen",), ("Specimen",)),
    SP("DiagnosticReport", "status", "token", ("status",)),
    SP("DiagnosticReport", "subject", "reference", ("subject",), ("Group", "Device", "Patient", "Location")),
    # MedicationRequest: 16
    SP("MedicationRequest", "authoredon", "date", ("authoredOn",)),
    SP("MedicationRequest", "category", "token", ("category",)),
    SP("MedicationRequest", "code", "token", ("medicationCodeableConcept",)),
    SP("MedicationRequest", "date", "date", ("dosageInstruction.timing.event",)),
    SP("MedicationRequest", "encounter", "reference", ("encounter",), ("Encounter",)),
    SP("MedicationRequest", "identifier", "token", ("identifier",)),
    SP(
        "MedicationRequest", "intended-dispenser", "reference", ("dispenseRequest.performer",),
        ("Organization",),
    ),
    SP(
        "MedicationRequest", "intended-performer", "reference", ("performer",),
        ("Practitioner", "Organization", "CareTeam", "Device", "Patient", "PractitionerRole", "RelatedPerson"),
    ),
    SP("MedicationRequest", "intended-performertype", "token", ("performerType",)),
    SP("MedicationRequest", "intent", "token", ("intent",)),
    SP("MedicationRequest", "medication", "reference", ("medicationReference",), ("Medication",)),
    SP("MedicationRequest", "patient", "reference", ("subject",), ("Patient",)),
    SP("MedicationRequest", "priority", "token", ("priority",)),
    SP(
        "MedicationRequest", "requester", "reference", ("requester",),
        ("Practitioner", "Organization", "Device", "Patient", "PractitionerRole", "RelatedPerson"),
    ),
    SP("MedicationRequest", "status", "token", ("status",)),
    SP("MedicationRequest", "subject", "reference", ("subject",), ("Group", "Patient")),
    # MedicationStatement: 11 (medicationstatement.html#search; a WS/T 500 出院带药 section, hutong.ingest.cda)
    SP("MedicationStatement", "category", "token", ("category",)),
    SP("MedicationStatement", "code", "token", ("medicationCodeableConcept",)),
    SP("MedicationStatement", "context", "reference", ("context",), ("Encounter", "EpisodeOfCare")),
    SP("MedicationStatement", "effective", "date", ("effectiveDateTime", "effectivePeriod")),
    SP("MedicationStatement", "identifier", "token", ("identifier",)),
    SP("MedicationStatement", "medication", "reference", ("medicationReference",), ("Medication",)),
    SP(
        "MedicationStatement", "part-of", "reference", ("partOf",),
        ("MedicationAdministration", "MedicationDispense", "MedicationStatement", "Procedure", "Observation"),
    ),
    SP("MedicationStatement", "patient", "reference", ("subject",), ("Patient",)),
    SP(
        "MedicationStatement", "source", "reference", ("informationSource",),
        ("Practitioner", "Organization", "Patient", "PractitionerRole", "RelatedPerson"),
    ),
    SP("MedicationStatement", "status", "token", ("status",)),
    SP("MedicationStatement", "subject", "reference", ("subject",), ("Group", "Patient")),
    # AllergyIntolerance: 16
    SP(
        "AllergyIntolerance", "asserter", "reference", ("asserter",),
        ("Practitioner", "Patient", "PractitionerRole", "RelatedPerson"),
    ),
    SP("AllergyIntolerance", "category", "token", ("category",)),
    SP("AllergyIntolerance", "clinical-status", "token", ("clinicalStatus",)),
    SP("AllergyIntolerance", "code", "token", ("code", "reaction.substance")),
    SP("AllergyIntolerance", "criticality", "token", ("criticality",)),
    SP("AllergyIntolerance", "date", "date", ("recordedDate",)),
    SP("AllergyIntolerance", "identifier", "token", ("identifier",)),
    SP("AllergyIntolerance", "last-date", "date", ("lastOccurrence",)),
    SP("AllergyIntolerance", "manifestation", "token", ("reaction.manifestation",)),
    SP("AllergyIntolerance", "onset", "date", ("reaction.onset",)),
    SP("AllergyIntolerance", "patient", "reference", ("patient",), ("Patient",)),
    SP(
        "AllergyIntolerance", "recorder", "reference", ("recorder",),
        ("Practitioner", "Patient", "PractitionerRole", "RelatedPerson"),
    ),
    SP("AllergyIntolerance", "route", "token", ("reaction.exposureRoute",)),
    SP("AllergyIntolerance", "severity", "token", ("reaction.severity",)),
    SP("AllergyIntolerance", "type", "token", ("type",)),
    SP("AllergyIntolerance", "verification-status", "token", ("verificationStatus",)),
    # Immunization: 16
    SP("Immunization", "date", "date", ("occurrenceDateTime", "occurrenceString")),
    SP("Immunization", "identifier", "token", ("identifier",)),
    SP("Immunization", "location", "reference", ("location",), ("Location",)),
    SP("Immunization", "lot-number", "string", ("lotNumber",)),
    SP("Immunization", "manufacturer", "reference", ("manufacturer",), ("Organization",)),
    SP("Immunization", "patient", "reference", ("patient",), ("Patient",)),
    SP(
        "Immunization", "performer", "reference", ("performer.actor",),
        ("Practitioner", "Organization", "PractitionerRole"),
    ),
    SP("Immunization", "reaction", "reference", ("reaction.detail",), ("Observation",)),
    SP("Immunization", "reaction-date", "date", ("reaction.date",)),
    SP("Immunization", "reason-code", "token", ("reasonCode",)),
    SP(
        "Immunization", "reason-reference", "reference", ("reasonReference",),
        ("Condition", "Observation", "DiagnosticReport"),
    ),
    SP("Immunization", "series", "string", ("protocolApplied.series",)),
    SP("Immunization", "status", "token", ("status",)),
    SP("Immunization", "status-reason", "token", ("statusReason",)),
    SP("Immunization", "target-disease", "token", ("protocolApplied.targetDisease",)),
    SP("Immunization", "vaccine-code", "token", ("vaccineCode",)),
    # Procedure: 16
    SP("Procedure", "based-on", "reference", ("basedOn",), ("CarePlan", "ServiceRequest")),
    SP("Procedure", "category", "token", ("category",)),
    SP("Procedure", "code", "token", ("code",)),
    SP("Procedure", "date", "date", ("performedAge", "performedDateTime", "performedPeriod", "performedRange", "performedString")),
    SP("Procedure", "encounter", "reference", ("encounter",), ("Encounter", "EpisodeOfCare")),
    SP("Procedure", "identifier", "token", ("identifier",)),
    SP(
        "Procedure", "instantiates-canonical", "reference", ("instantiatesCanonical",),
        ("Questionnaire", "Measure", "PlanDefinition", "OperationDefinition", "ActivityDefinition"),
    ),
    SP("Procedure", "instantiates-uri", "uri", ("instantiatesUri",)),
    SP("Procedure", "location", "reference", ("location",), ("Location",)),
    SP(
        "Procedure", "part-of", "reference", ("partOf",),
        ("Observation", "Procedure", "MedicationAdministration"),
    ),
    SP("Procedure", "patient", "reference", ("subject",), ("Patient",)),
    SP(
        "Procedure", "performer", "reference", ("performer.actor",),
        ("Practitioner", "Organization", "Device", "Patient", "PractitionerRole", "RelatedPerson"),
    ),
    SP("Procedure", "reason-code", "token", ("reasonCode",)),
    SP(
        "Procedure", "reason-reference", "reference", ("reasonReference",),
        ("Condition", "Observation", "Procedure", "DiagnosticReport", "DocumentReference"),
    ),
    SP("Procedure", "status", "token", ("status",)),
    SP("Procedure", "subject", "reference", ("subject",), ("Group", "Patient")),
    # DocumentReference: 24
    SP(
        "DocumentReference", "authenticator", "reference", ("authenticator",),
        ("Practitioner", "Organization", "PractitionerRole"),
    ),
    SP(
        "DocumentReference", "author", "reference", ("author",),
        ("Practitioner", "Organization", "Device", "Patient", "PractitionerRole", "RelatedPerson"),
    ),
    SP("DocumentReference", "category", "token", ("category",)),
    SP("DocumentReference", "contenttype", "token", ("content.attachment.contentType",)),
    SP("DocumentReference", "custodian", "reference", ("custodian",), ("Organization",)),
    SP("DocumentReference", "date", "date", ("date",)),
    SP("DocumentReference", "description", "string", ("description",)),
    SP("DocumentReference", "encounter", "reference", ("context.encounter",), ("Encounter", "EpisodeOfCare")),
    SP("DocumentReference", "event", "token", ("context.event",)),
    SP("DocumentReference", "facility", "token", ("context.facilityType",)),
    SP("DocumentReference", "format", "token", ("content.format",)),
    SP("DocumentReference", "identifier", "token", ("masterIdentifier", "identifier")),
    SP("DocumentReference", "language", "token", ("content.attachment.language",)),
    SP("DocumentReference", "location", "uri", ("content.attachment.url",)),
    SP("DocumentReference", "patient", "reference", ("subject",), ("Patient",)),
    SP("DocumentReference", "period", "date", ("context.period",)),
    SP("DocumentReference", "related", "reference", ("context.related",), ()),
    SP("DocumentReference", "relatesto", "reference", ("relatesTo.target",), ("DocumentReference",)),
    SP("DocumentReference", "relation", "token", ("relatesTo.code",)),
    SP("DocumentReference", "security-label", "token", ("securityLabel",)),
    SP("DocumentReference", "setting", "token", ("context.practiceSetting",)),
    SP("DocumentReference", "status", "token", ("status",)),
    SP(
        "DocumentReference", "subject", "reference", ("subject",),
        ("Practitioner", "Group", "Device", "Patient"),
    ),
    SP("DocumentReference", "type", "token", ("type",)),
    # ServiceRequest: 21
    SP("ServiceRequest", "authored", "date", ("authoredOn",)),
    SP(
        "ServiceRequest", "based-on", "reference", ("basedOn",),
        ("CarePlan", "MedicationRequest", "ServiceRequest"),
    ),
    SP("ServiceRequest", "body-site", "token", ("bodySite",)),
    SP("ServiceRequest", "category", "token", ("category",)),
    SP("ServiceRequest", "code", "token", ("code",)),
    SP("ServiceRequest", "encounter", "reference", ("encounter",), ("Encounter", "EpisodeOfCare")),
    SP("ServiceRequest", "identifier", "token", ("identifier",)),
    SP(
        "ServiceRequest", "instantiates-canonical", "reference", ("instantiatesCanonical",),
        ("PlanDefinition", "ActivityDefinition"),
    ),
    SP("ServiceRequest", "instantiates-uri", "uri", ("instantiatesUri",)),
    SP("ServiceRequest", "intent", "token", ("intent",)),
    SP("ServiceRequest", "occurrence", "date", ("occurrenceDateTime", "occurrencePeriod", "occurrenceTiming")),
    SP("ServiceRequest", "patient", "reference", ("subject",), ("Patient",)),
    SP(
        "ServiceRequest", "performer", "reference", ("performer",),
        ("Practitioner", "Organization", "CareTeam", "Device", "Patient", "HealthcareService", "PractitionerRole", "RelatedPerson"),
    ),
    SP("ServiceRequest", "performer-type", "token", ("performerType",)),
    SP("ServiceRequest", "priority", "token", ("priority",)),
    SP("ServiceRequest", "replaces", "reference", ("replaces",), ("ServiceRequest",)),
    SP(
        "ServiceRequest", "requester", "reference", ("requester",),
        ("Practitioner", "Organization", "Device", "Patient", "PractitionerRole", "RelatedPerson"),
    ),
    SP("ServiceRequest", "requisition", "token", ("requisition",)),
    SP("ServiceRequest", "specimen", "reference", ("specimen",), ("Specimen",)),
    SP("ServiceRequest", "status", "token", ("status",)),
    SP("ServiceRequest", "subject", "reference", ("subject",), ("Group", "Device", "Patient", "Location")),
    # ImagingStudy: 17
    SP(
        "ImagingStudy", "basedon", "reference", ("basedOn",),
        ("Appointment", "AppointmentResponse", "CarePlan", "Task", "ServiceRequest"),
    ),
    SP("ImagingStudy", "bodysite", "token", ("series.bodySite",)),
    SP("ImagingStudy", "dicom-class", "token", ("series.instance.sopClass",)),
    SP("ImagingStudy", "encounter", "reference", ("encounter",), ("Encounter",)),
    SP("ImagingStudy", "endpoint", "reference", ("endpoint", "series.endpoint"), ("Endpoint",)),
    SP("ImagingStudy", "identifier", "token", ("identifier",)),
    SP("ImagingStudy", "instance", "token", ("series.instance.uid",)),
    SP("ImagingStudy", "interpreter", "reference", ("interpreter",), ("Practitioner", "PractitionerRole")),
    SP("ImagingStudy", "modality", "token", ("series.modality",)),
    SP("ImagingStudy", "patient", "reference", ("subject",), ("Patient",)),
    SP(
        "ImagingStudy", "performer", "reference", ("series.performer.actor",),
        ("Practitioner", "Organization", "CareTeam", "Device", "Patient", "PractitionerRole", "RelatedPerson"),
    ),
    SP("ImagingStudy", "reason", "token", ("reasonCode",)),
    SP("ImagingStudy", "referrer", "reference", ("referrer",), ("Practitioner", "PractitionerRole")),
    SP("ImagingStudy", "series", "token", ("series.uid",)),
    SP("ImagingStudy", "started", "date", ("started",)),
    SP("ImagingStudy", "status", "token", ("status",)),
    SP("ImagingStudy", "subject", "reference", ("subject",), ("Group", "Device", "Patient")),
    # Consent: 15
    SP("Consent", "action", "token", ("provision.action",)),
    SP(
        "Consent", "actor", "reference", ("provision.actor.reference",),
        ("Practitioner", "Group", "Organization", "CareTeam", "Device", "Patient", "PractitionerRole", "RelatedPerson"),
    ),
    SP("Consent", "category", "token", ("category",)),
    SP(
        "Consent", "consentor", "reference", ("performer",),
        ("Practitioner", "Organization", "Patient", "PractitionerRole", "RelatedPerson"),
    ),
    SP("Consent", "data", "reference", ("provision.data.reference",), ()),
    SP("Consent", "date", "date", ("dateTime",)),
    SP("Consent", "identifier", "token", ("identifier",)),
    SP("Consent", "organization", "reference", ("organization",), ("Organization",)),
    SP("Consent", "patient", "reference", ("patient",), ("Patient",)),
    SP("Consent", "period", "date", ("provision.period",)),
    SP("Consent", "purpose", "token", ("provision.purpose",)),
    SP("Consent", "scope", "token", ("scope",)),
    SP("Consent", "security-label", "token", ("provision.securityLabel",)),
    SP(
        "Consent", "source-reference", "reference", ("sourceAttachment", "sourceReference"),
        ("Consent", "Contract", "QuestionnaireResponse", "DocumentReference"),
    ),
    SP("Consent", "status", "token", ("status",)),
    # AuditEvent: 18
    SP("AuditEvent", "action", "token", ("action",)),
    SP("AuditEvent", "address", "string", ("agent.network.address",)),
    SP(
        "AuditEvent", "agent", "reference", ("agent.who",),
        ("Practitioner", "Organization", "Device", "Patient", "PractitionerRole", "RelatedPerson"),
    ),
    SP("AuditEvent", "agent-name", "string", ("agent.name",)),
    SP("AuditEvent", "agent-role", "token", ("agent.role",)),
    SP("AuditEvent", "altid", "token", ("agent.altId",)),
    SP("AuditEvent", "date", "date", ("recorded",)),
    SP("AuditEvent", "entity", "reference", ("entity.what",), ()),
    SP("AuditEvent", "entity-name", "string", ("entity.name",)),
    SP("AuditEvent", "entity-role", "token", ("entity.role",)),
    SP("AuditEvent", "entity-type", "token", ("entity.type",)),
    SP("AuditEvent", "outcome", "token", ("outcome",)),
    SP("AuditEvent", "patient", "reference", ("agent.who", "entity.what"), ("Patient",)),
    SP("AuditEvent", "policy", "uri", ("agent.policy",)),
    SP("AuditEvent", "site", "token", ("source.site",)),
    SP(
        "AuditEvent", "source", "reference", ("source.observer",),
        ("Practitioner", "Organization", "Device", "Patient", "PractitionerRole", "RelatedPerson"),
    ),
    SP("AuditEvent", "subtype", "token", ("subtype",)),
    SP("AuditEvent", "type", "token", ("type",)),
    # Device: 12
    SP("Device", "device-name", "string", ("deviceName.name", "type.coding.display", "type.text")),
    SP("Device", "identifier", "token", ("identifier",)),
    SP("Device", "location", "reference", ("location",), ("Location",)),
    SP("Device", "manufacturer", "string", ("manufacturer",)),
    SP("Device", "model", "string", ("modelNumber",)),
    SP("Device", "organization", "reference", ("owner",), ("Organization",)),
    SP("Device", "patient", "reference", ("patient",), ("Patient",)),
    SP("Device", "status", "token", ("status",)),
    SP("Device", "type", "token", ("type",)),
    SP("Device", "udi-carrier", "string", ("udiCarrier.carrierHRF",)),
    SP("Device", "udi-di", "string", ("udiCarrier.deviceIdentifier",)),
    SP("Device", "url", "uri", ("url",)),
    # Task: 19 (residents' correction requests, 纠偏权: hutong.web.ui.resident)
    SP("Task", "authored-on", "date", ("authoredOn",)),
    SP("Task", "business-status", "token", ("businessStatus",)),
    SP("Task", "code", "token", ("code",)),
    SP("Task", "focus", "reference", ("focus",), ()),
    SP("Task", "identifier", "token", ("identifier",)),
    SP("Task", "intent", "token", ("intent",)),
    SP("Task", "modified", "date", ("lastModified",)),
    SP("Task", "owner", "reference", ("owner",),
       ("Practitioner", "Organization", "CareTeam", "HealthcareService", "Patient", "Device", "PractitionerRole",
        "RelatedPerson")),
    SP("Task", "patient", "reference", ("for",), ("Patient",)),
    SP("Task", "requester", "reference", ("requester",),
       ("Practitioner", "Organization", "Device", "Patient", "PractitionerRole", "RelatedPerson")),
    SP("Task", "status", "token", ("status",)),
    SP("Task", "subject", "reference", ("for",), ()),
    # the rest of R4's Task parameters (issue 15, item 6)
    SP("Task", "based-on", "reference", ("basedOn",), ()),
    SP("Task", "encounter", "reference", ("encounter",), ("Encounter",)),
    SP("Task", "group-identifier", "token", ("groupIdentifier",)),
    SP("Task", "part-of", "reference", ("partOf",), ("Task",)),
    SP("Task", "performer", "token", ("performerType",)),
    SP("Task", "period", "date", ("executionPeriod",)),
    SP("Task", "priority", "token", ("priority",)),

)

# compartmentdefinition-patient.html (R4 4.0.1): for each resource type, the
# parameters whose reference to a Patient puts the resource in that patient's
# compartment.  Types not listed (Practitioner, PractitionerRole, Organization,
# Location, Binary) are never in a Patient compartment in R4.  Device is our
# one deliberate extension: R4 leaves it out, but a resident's implant or pump
# (Device.patient) is part of their record and must come back in $everything
# (R5's compartment definition adds it the same way).
PATIENT_COMPARTMENT: dict[str, tuple[str, ...]] = {
    "Patient": ("link",),  # and the patient itself, by id
    "AllergyIntolerance": ("patient", "recorder", "asserter"),
    "AuditEvent": ("patient",),
    "Condition": ("patient", "asserter"),
    "Consent": ("patient",),
    "Device": ("patient",),
    "DiagnosticReport": ("subject",),
    "DocumentReference": ("subject", "author"),
    "Encounter": ("patient",),
    "ImagingStudy": ("patient",),
    "Immunization": ("patient",),
    "MedicationRequest": ("subject",),
    "MedicationStatement": ("subject",),
    "Observation": ("subject", "performer"),
    "Procedure": ("patient", "performer"),
    "ServiceRequest": ("subject", "performer"),
    # Our extension, like Device: a resident's correction request (Task.for) is
    # part of their record (R4's definition leaves Task out).
    "Task": ("patient",),
}
