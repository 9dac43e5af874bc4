"""The patch interaction's JSON Patch (FHIR R4 http.html#patch; RFC 6902),
applied with the ``jsonpatch`` library.

Only the parsing and applying live here: :meth:`FhirService.patch
<hutong.fhir.service.FhirService.patch>` reads the current version, applies
the patch and writes the result through the update path (validation,
If-Match, versioning, the write hooks that keep ownership, audit), exactly as a
PUT of the patched resource would.  FHIRPath Patch (a Parameters resource in
application/fhir+json) and XML Patch are not supported: 415.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import jsonpatch
import jsonpointer

from hutong.errors import HutongError, InvalidRequest, UnsupportedMediaType

JSON_PATCH = "application/json-patch+json"
# What the CapabilityStatement's rest.resource.patchFormat lists (hutong.fhir.capability).
PATCH_FORMATS = (JSON_PATCH,)
Operations = jsonpatch.JsonPatch


def check_media_type(content_type: str | None) -> None:
    """RFC 5789 section 2.2: a patch document of a type the server does not
    support is 415 (and the Accept-Patch header names the supported ones)."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype not in PATCH_FORMATS:
        what = "FHIRPath Patch (a Parameters resource)" if ctype in ("application/fhir+json", "application/json") \
            else f"content type {ctype or '(none)'!r}"
        raise UnsupportedMediaType("HT-0223", f"{what} is not a supported patch format; send a JSON Patch "
                                              f"document (RFC 6902) as {JSON_PATCH}", issue_code="not-supported")


def operations(document: Any) -> Operations:
    """A parsed JSON Patch document: an array of operation objects (RFC 6902 section 3)."""
    if not isinstance(document, list) or not all(isinstance(op, dict) for op in document):
        raise InvalidRequest("HT-0221", "a JSON Patch document is an array of operation objects (RFC 6902 3)")
    if not document:
        raise InvalidRequest("HT-0221", "the JSON Patch document has no operations")
    try:
        return jsonpatch.JsonPatch(document)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
        raise InvalidRequest("HT-0221", f"invalid JSON Patch: {e}") from None


def apply(ops: Operations, resource: dict[str, Any], where: str) -> Any:
    """``resource`` with ``ops`` applied (a new object; ``resource`` is left as it was).

    RFC 5789 section 2.2: a patch that cannot be applied to the resource's
    current state (a path that is not there, a failed ``test``) is 409; a
    malformed operation (no ``value``) is 400."""
    try:
        return ops.apply(resource, in_place=False)
    except jsonpatch.InvalidJsonPatch as e:
        raise InvalidRequest("HT-0221", f"invalid JSON Patch: {e}") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
        raise HutongError("HT-0222", f"the JSON Patch cannot be applied to {where}: {e}", status=409,
                          issue_code="conflict") from None


def from_binary(resource: Any) -> tuple[str, bytes]:
    """The patch document of a PATCH entry in a Bundle (http.html#transaction:
    "the resource is a Binary" holding it): (content type, bytes).  A
    Parameters resource is a FHIRPath Patch: 415 like any other format."""
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    if rtype == "Parameters":
        check_media_type("application/fhir+json")
    if rtype != "Binary" or not isinstance(resource.get("data"), str):
        raise InvalidRequest("HT-0221", "a PATCH entry carries its JSON Patch as a Binary resource "
                                        f"(contentType {JSON_PATCH}, data base64)")
    ctype = resource.get("contentType")
    check_media_type(ctype if isinstance(ctype, str) else None)
    try:
        return JSON_PATCH, base64.b64decode(resource["data"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("HT-0221", "the PATCH entry's Binary.data is not base64") from None
