"""FHIR R4 semantics as pure functions: validation, search, bundles, operations."""
