"""The longitudinal record as people see it: one model for the clinician and resident portals.

- :mod:`hutong.record.model`: the typed items (encounters with their resolved
  diagnoses, problems, medications, allergies, lab results and their report
  groups, trend series, imaging, documents, timeline entries).
- :mod:`hutong.record.flags`: the one abnormal-flag rule (a value outside its
  reference range is never "normal"; when the sender and the range disagree
  both are shown).
- :mod:`hutong.record.build`: rows of ``$everything`` -> a Record (the
  Encounter–Condition resolution and the lab grouping).
- :mod:`hutong.record.load`: the rows, read through the caller's policy.

It sits above ``fhir/`` and below ``web/`` (DESIGN.md): no SQL, no HTML.
"""

from hutong.record.build import build_record, demographics_of, mask_id, resolve_diagnoses
from hutong.record.flags import Flag, flag_of
from hutong.record.load import everything_rows, load_record
from hutong.record.model import (
    Allergy,
    Demographics,
    Diagnosis,
    Document,
    Encounter,
    Entry,
    Imaging,
    LabReport,
    LabResult,
    Medication,
    Problem,
    ProblemGroup,
    Record,
    Series,
    Source,
)

__all__ = ["Allergy", "Demographics", "Diagnosis", "Document", "Encounter", "Entry", "Flag", "Imaging", "LabReport",
           "LabResult", "Medication", "Problem", "ProblemGroup", "Record", "Series", "Source", "build_record",
           "demographics_of", "everything_rows", "flag_of", "load_record", "mask_id", "resolve_diagnoses"]
