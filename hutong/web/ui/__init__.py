"""The web portals (issue 7): clinician workspace, resident portal, commission console.

Server-rendered pages (Jinja2) over the same services, policy and audit as
the FHIR API: each page handler runs with the request's
:class:`~hutong.security.policy.Access` (the gate signs the browser in from its
session cookie), so a page can show nothing the API would refuse.
"""
