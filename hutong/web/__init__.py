"""HTTP assembly: FHIR REST routes (and later the portals)."""
