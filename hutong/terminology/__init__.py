"""The terminology service (FHIR R4 terminology-service.html) and the code
systems and value sets Hutong knows: the R4 core extract (every required
binding's value set), the Chinese code systems it uses, and the operator's
own files (``hutong terminology load``).  Pure: no database, no HTTP."""

from hutong.terminology.service import Terminology, core, shipped

__all__ = ["Terminology", "core", "shipped"]
