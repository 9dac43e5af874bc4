"""Ingestion: bulk NDJSON import (later HL7 v2 over MLLP and WS/T 500 CDA)."""
