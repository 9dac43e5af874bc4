"""Search parameter definitions for the resource types Hutong serves.

Source: FHIR R4 (4.0.1) search-parameters.json and each resource's "Search
Parameters" table; expressions translated to the path syntax documented in
:mod:`hutong.fhir.searchparams`.  Composite parameters are not supported
(the CapabilityStatement says so).
"""

from __future__ import annotations

from hutong.fhir.searchparams import SearchParam as SP

DEFINITIONS: tuple[SP, ...] = (
    SP("Patient", "identifier", "token", ("identifier",)),
    SP("Patient", "name", "string", ("name",)),
    SP("Patient", "family", "string", ("name.family",)),
    SP("Patient", "given", "string", ("name.given",)),
    SP("Patient", "birthdate", "date", ("birthDate",)),
    SP("Patient", "gender", "token", ("gender",)),
    SP("Observation", "code", "token", ("code",)),
    SP("Observation", "subject", "reference", ("subject",)),
    SP("Observation", "patient", "reference", ("subject",), ("Patient",)),
    SP("Observation", "date", "date", ("effectiveDateTime", "effectivePeriod", "effectiveInstant")),
    SP("Observation", "value-quantity", "quantity", ("valueQuantity",)),
)

# compartmentdefinition-patient.html: for each resource type, the parameters
# whose reference to a Patient puts the resource in that patient's compartment.
PATIENT_COMPARTMENT: dict[str, tuple[str, ...]] = {
    "Patient": (),  # the patient itself (by id)
    "Observation": ("subject",),
}
