"""HL7 v2 ingestion: MLLP framing, message parsing, mapping to FHIR R4 transaction Bundles, ACKs."""
