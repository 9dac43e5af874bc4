"""WS/T 500 shared documents (CDA R2) to FHIR: document types, safe parsing and header checks, mapping."""
