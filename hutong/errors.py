"""One exception tree for the whole platform, mapped to FHIR OperationOutcome.

Every raise site passes a stable code (``HT-0xxx``) that support staff and
auditors can grep for; the HTTP status and the OperationOutcome issue code
(FHIR R4 valueset-issue-type) travel with the exception so that the web layer
never has to guess.  Codes are listed in ``CODES`` so that a test can check
they are unique and documented.
"""

from __future__ import annotations

from typing import Any

# code -> short description.  Never renumber: codes are part of the API.
CODES: dict[str, str] = {
    "HT-0001": "request body is not valid JSON",
    "HT-0002": "unsupported content type",
    "HT-0003": "request body too large",
    "HT-0004": "unknown resource type",
    "HT-0005": "invalid resource id",
    "HT-0006": "resource type in body does not match the URL",
    "HT-0007": "resource id in body does not match the URL",
    "HT-0008": "resource failed structural validation",
    "HT-0009": "resource not found",
    "HT-0010": "resource deleted",
    "HT-0011": "version not found",
    "HT-0012": "version conflict (If-Match)",
    "HT-0013": "conditional request matched more than one resource",
    "HT-0014": "malformed If-Match / If-None-Exist header",
    "HT-0020": "unknown search parameter",
    "HT-0021": "invalid search parameter value",
    "HT-0022": "unsupported search modifier or prefix",
    "HT-0023": "invalid _count / paging parameter",
    "HT-0024": "search cursor expired or invalid",
    "HT-0025": "invalid _sort / _include / _elements",
    "HT-0030": "bundle is not a transaction or batch",
    "HT-0031": "transaction entry failed",
    "HT-0032": "unresolvable reference in transaction",
    "HT-0033": "invalid bundle entry request",
    "HT-0034": "duplicate fullUrl in transaction",
    "HT-0040": "unknown operation",
    "HT-0041": "invalid operation parameter",
    "HT-0050": "database unavailable or busy",
    "HT-0051": "storage conflict, retry",
    "HT-0055": "golden person records are written only by the MPI",
    "HT-0056": "MPI: unknown person or source patient",
    "HT-0057": "MPI: invalid link/merge request",
    "HT-0058": "MPI: cannot undo (state changed since)",
    "HT-0059": "MPI: invalid identifier parameter",
    "HT-0060": "bulk import file unreadable",
    "HT-0061": "bulk import line invalid",
    "HT-0062": "CDA document not stored (kept as a dead letter)",
    # 0500-0519: mutual-recognition (检查检验结果互认) knowledge and its rule (hutong.cds.knowledge,
    # hutong.cds.versions, hutong.cds.recognition; issue 14, items 2-3)
    "HT-0500": "knowledge file unreadable (not found, not JSON or YAML)",
    "HT-0501": "knowledge set invalid (an item, window, scope mark, negative-list entry, QC row or code map)",
    "HT-0502": "no such knowledge version",
    "HT-0503": "four-eyes: the author of a knowledge version may not approve it",
    "HT-0504": "approving or retiring knowledge needs an active committee account",
    "HT-0505": "the knowledge version is not in a state for this step (or changed meanwhile)",
    "HT-0506": "ConceptMap not importable as a local code map (source system, institution, target items)",
    "HT-0507": "effective dates invalid (not YYYY-MM-DD, or the end before the start)",
    "HT-0070": "configuration error",
    "HT-0099": "internal error",
    # security (hutong.security); ranges: 0100-0119 policy, 0120-0139 authentication,
    # 0140-0149 audit, 0150-0159 keys and encryption, 0160-0169 residency and sharing
    "HT-0100": "not signed in (no or unusable credentials)",
    "HT-0101": "scope does not allow this interaction",
    "HT-0102": "not your institution's record",
    "HT-0103": "no access basis for this resident (treatment relationship, consent or break-glass)",
    "HT-0104": "role may not do this",
    "HT-0105": "search must be scoped to a patient",
    "HT-0106": "break-glass request invalid",
    "HT-0107": "access reason invalid",
    # issue 12 (ownership of registrations; 0160-0169 were already residency and sharing)
    "HT-0108": "a registration's managing organization is fixed at creation (moved only by $transfer)",
    "HT-0109": "registration transfer request invalid (organization, reason or registration)",
    "HT-0141": "audit record not found",
    "HT-0142": "audit record is not a break-glass access",
    "HT-0143": "break-glass review verdict invalid",
    "HT-0144": "break-glass access already reviewed",
    "HT-0145": "audit query parameter invalid",
    "HT-0146": "access log: not a person you act for",
    "HT-0147": "audit purge would delete records inside the retention period",
    "HT-0148": "audit chain does not verify: purge refused",
    "HT-0149": "HUTONG_NODE_ID is not a node id ([a-z0-9][a-z0-9-]{0,31})",
    "HT-0150": "search modifier not supported on a blind-indexed parameter (e.g. name:contains)",
    "HT-0151": "_sort not supported on a blind-indexed parameter",
    "HT-0152": "master key missing or unusable (key source, data_key table)",
    "HT-0153": "stored value cannot be decrypted (unknown data key or failed authentication)",
    "HT-0154": "key rotation not possible with this key source",
    "HT-0155": "HUTONG_MASTER_KEYS malformed",
    "HT-0156": "key directory or audit key file missing, unusable or not private",
    "HT-0157": "audit chain key is not the key the chain was written with",
    "HT-0158": "published audit heads file unreadable or a head is malformed",
    "HT-0159": "storage full or failing: the request was not carried out",
    "HT-0160": "storage or export target outside the allowed regions (data residency)",
    "HT-0161": "storage or export target region unknown (residency check fails closed)",
    "HT-0162": "storage or export target not understood (scheme, host or region map)",
    "HT-0163": "sharing request invalid",
    "HT-0164": "sharing request not found",
    "HT-0165": "sharing request is not in a state that allows this",
    "HT-0166": "sharing request: approver may not be the requester (four-eyes)",
    "HT-0167": "export refused: no approved, unexpired, unused sharing request",
    "HT-0168": "export destination is not the approved destination",
    "HT-0169": "export destination scheme not supported",
    # 0170-0179: who may make a Consent (hutong.security.consent_authors; issue 12)
    "HT-0170": "a delegate may not open categories masked from delegates",
    "HT-0171": "an institution's Consent needs the resident's documented instruction (sourceAttachment/Reference)",
    "HT-0172": "an institution's Consent may only be about that institution itself",
    "HT-0173": "an institution's Consent may not open sensitive categories",
    "HT-0174": "the resident could not be told of an institution's Consent: nothing saved",
    "HT-0175": "a Consent the resident or their delegate made is changed only by them",
    "HT-0120": "password does not meet the password policy",
    "HT-0121": "access token malformed or oversized",
    "HT-0122": "access token signature or algorithm not acceptable",
    "HT-0123": "access token expired or not yet valid",
    "HT-0124": "access token revoked",
    "HT-0125": "access token issued by or for another party (iss/aud)",
    "HT-0126": "account disabled or locked",
    "HT-0127": "sign-in failed (username, password or second factor wrong)",
    "HT-0128": "account locked after repeated failed sign-ins",
    "HT-0129": "password expired: change it first",
    "HT-0130": "client authentication failed",
    "HT-0131": "requested scope exceeds what was granted",
    "HT-0132": "scope not understood",
    "HT-0133": "refresh token invalid, expired, revoked or idle too long",
    "HT-0134": "one-time code wrong, expired or used up",
    "HT-0135": "account request invalid (unknown account, duplicate name, missing field)",
    "HT-0136": "unknown organization or person",
    "HT-0137": "client assertion (private_key_jwt) not acceptable",
    "HT-0138": "token request malformed or grant type not supported",
    "HT-0139": "second factor (TOTP) code replayed",
    "HT-0140": "sign-in held back: repeated failures of this username from this address (audit only; "
               "the caller is answered HT-0127)",
    # 0180-0189: the identity index (hutong.fhir.identity, hutong.web.access_ops; issue 12)
    "HT-0180": "commission staff do not look up individual residents ($match, $ihe-pix): aggregates only",
    "HT-0181": "$match needs strong identifying input: an identity document number, or name and full birth date",
    "HT-0182": "another institution's registration: find the resident by an exact identifier first",
    # 0190-0199: trust in HL7 senders and identity merges (hutong.security.senders, ingest, mpi)
    "HT-0190": "HL7 sender: MSH-4 does not name the institution the connection authenticated as",
    "HT-0191": "HL7 sender not authenticated (no client certificate or configured sender address)",
    "HT-0192": "HL7 sender's client certificate names no institution, or more than one",
    "HT-0193": "MLLP sender authentication settings invalid or missing",
    "HT-0194": "merge names a registration another institution manages",
    "HT-0195": "merge queued for MPI review (it would retire a person with other institutions' "
               "registrations or a resident account)",
    "HT-0196": "identity stewardship (link, unlink, merge, review) is for the platform and MPI stewards",
    "HT-0197": "a message refused for its sender's authentication cannot be retried",
    # 0200-0219: FHIR REST conformance: search, read and create as clients use them (issue 15)
    "HT-0200": "_summary or _elements on a read not understood (count is for searches)",
    "HT-0201": "POST [type]?criteria and an If-None-Exist header that differ: send one condition",
    # 0240-0259: conformance to FHIR R4 bindings, invariants and the terminology service (issue 15)
    "HT-0240": "a code is not in the value set of a required binding (the element and the allowed codes named)",
    "HT-0241": "a resource breaks a FHIR R4 invariant (its key, e.g. pat-1, and the element named)",
    "HT-0242": "terminology: unknown code system, value set, concept map or code",
    "HT-0243": "terminology: value set cannot be expanded here (a code system or filter this server lacks)",
    "HT-0244": "terminology: operation parameter missing or invalid",
    "HT-0245": "terminology file cannot be loaded (format, columns or content)",
    # 0260-0279: HL7 v2 and CDA as real senders send them (hutong.ingest; issue 15, items 10-19)
    "HT-0260": "HL7 v2 demographic value outside its code table: mapped where it says one thing, kept as sent, "
               "accepted with a warning (data quality)",
    "HT-0261": "HL7 v2 MSH-18 UNICODE: the bytes are not UTF-8 (the encoding UNICODE is read as)",
    "HT-0262": "HL7 v2 order groups share an order number and service: they cannot be told apart",
    "HT-0263": "CDA document id already names a different stored document of this institution",
    "HT-0264": "CDA sections outside component/structuredBody: stored as a document, nothing extracted "
               "(data quality)",
    "HT-0265": "HL7 v2 MSH-10 re-used for a message with different content: stored as a new message, flagged "
               "(data quality)",
    # 0350-0359: authorisation bound to each request and job (hutong.security.guard; issue 13 item 3)
    "HT-0350": "a write without a principal (no caller's Access bound to the transaction) is refused",
    # 0520-0539: the CDS Hooks 2.0 service (hutong.cds.service, hutong.web.cds_routes; issue 14, item 1)
    "HT-0520": "CDS Hooks request malformed (not a JSON object, hook/hookInstance/context missing or mistyped)",
    "HT-0521": "unknown CDS service id",
    "HT-0522": "the request's hook is not the hook this CDS service answers",
    "HT-0523": "CDS Hooks context lacks a field the hook requires (patientId, userId, draftOrders ...)",
    "HT-0524": "fhirAuthorization malformed (access_token, token_type Bearer, expires_in, scope, subject)",
    "HT-0525": "fhirAuthorization token invalid or expired",
    "HT-0526": "fhirAuthorization token belongs to another account than the caller's bearer token",
    "HT-0528": "no access basis for the hook's patient (own registration, treatment, consent or break-glass)",
    "HT-0529": "context.userId names another user than the caller, or a post outside the caller's institution",
    "HT-0530": "prefetch missing and the patient cannot be fetched from this platform",
    "HT-0532": "CDS feedback malformed (card uuid, outcome accepted|overridden, overrideReason, outcomeTimestamp)",
    "HT-0533": "CDS feedback names a card this caller was not given by this service",
    "HT-0534": "override reason not one the card offered, or the card may not be overridden (hard stop)",
    "HT-0535": "a CDS rule failed to evaluate: its cards were left out (operators: see the log and metric)",
    "HT-0536": "prefetch entry malformed (not a FHIR resource or Bundle) or about another patient",
    "HT-0537": "safety rule configuration invalid (allergy conflicts, privilege actions, antibiotic tiers)",
    # 0540-0549: the clinician workspace's ordering panel (hutong.web.ui.ordering; issue 14, item 5)
    "HT-0540": "this clinician account is not linked to a Practitioner: it cannot place orders",
    "HT-0541": "ordering panel: the draft is not valid (an unknown item or drug, not a code, too many items)",
    "HT-0542": "ordering panel: the feedback form is not valid or the service refused it (card, outcome, reason)",
    # 0310-0319: one ingestion envelope (hutong.ingest: Receipt codes; issue 13, item 5)
    "HT-0310": "received message unreadable (HL7 v2 does not parse; CDA header unreadable); kept as a dead letter",
    "HT-0311": "received message names no registered institution (MSH-4, CDA custodian); kept as a dead letter",
    "HT-0312": "received message content cannot be mapped to FHIR; kept as a dead letter",
    "HT-0314": "received message not stored (application or database failure); resend later",
    "HT-0315": "MLLP framing error (bytes outside a frame, truncated or oversize frame); kept as a dead letter",
    "HT-0316": "this account may not re-process dead letters",
    "HT-0317": "a dead letter with no authenticated sender on record cannot be retried; the sender sends it again",
    # 0320-0329: the schema version and migrations (hutong.store.migrations, `hutong db`; issue 13)
    "HT-0320": "the database schema is newer than this release of hutong (both versions named)",
    "HT-0321": "the database schema is older than this release: run `hutong db upgrade`",
    "HT-0322": "schema upgrade failed (nothing was changed)",
    "HT-0323": "the database's schema version table holds several versions (not a Hutong schema)",
    # 0330-0339: backup and restore (hutong.store.backup, `hutong backup|restore`; issue 18)
    "HT-0330": "backup/restore target exists and is not empty: nothing written or overwritten",
    "HT-0331": "not a Hutong backup, or its files do not match their checksums (corrupt or truncated)",
    "HT-0332": "the backup is of another kind of database than the restore target",
    "HT-0333": "the PostgreSQL backup tool failed or is missing (pg_dump/pg_restore)",
    "HT-0334": "the keys are missing, misplaced or do not open the restored database",
    "HT-0335": "point-in-time recovery: the target time has no UTC offset, is not ISO 8601, or precedes the base backup",
    "HT-0336": "point-in-time recovery: the WAL archive is missing or its path cannot be used",
    "HT-0337": "backup/restore command used wrongly (missing directory or URL, options of another kind of backup)",
    # 0620-0629: encrypted backups (hutong.store.backup_crypto, `hutong backup --encrypt`; issue 18)
    "HT-0620": "an encrypted backup needs a passphrase (prompt, --passphrase-file or HUTONG_BACKUP_PASSPHRASE)",
    "HT-0621": "the passphrase is wrong or the encrypted backup was altered: nothing restored",
    "HT-0622": "the passphrase is too short (at least 12 characters)",
    # 0630-0639: reads from a hot standby (hutong.store.standby, hutong.web.read_routing; issue 18, item 2)
    "HT-0630": "HUTONG_STANDBY_DATABASE_URL needs PostgreSQL (SQLite has no hot standby) and a postgresql:// URL",
    "HT-0631": "the standby is a copy of another PostgreSQL cluster: not read from",
    "HT-0632": "the standby does not answer: reads go to the primary",
    "HT-0633": "the standby is not in recovery (promoted, or not a standby): not read from",
    "HT-0634": "the standby lags more than HUTONG_STANDBY_MAX_LAG_SECONDS: reads go to the primary",
    "HT-0635": "HUTONG_STANDBY_MAX_LAG_SECONDS is not a positive number of seconds",
    # 0636-0645: every node's key directory is the same key set (hutong.security.keycheck; issue 18, item 2)
    "HT-0636": "the key directory lacks a key file the database's other nodes use (none is made: copy their directory)",
    "HT-0637": "token-signing.pem is not the token-signing key the database records (other nodes refuse its tokens)",
    "HT-0638": "audit-chain.key is not the chain key the database's audit trail is written with",
    "HT-0639": "audit-signing.key is not the head-signing key the database records",
    # 0440-0449: the console's identity review decisions (hutong.web.ui.identity_review; issue 16, item 6)
    "HT-0440": "identity review: a note is required to reject a pair or to unlink a record",
    "HT-0441": "identity review: the item is not linked (now), so it cannot be unlinked",
    "HT-0442": "identity review: no such review item",
    "HT-0443": "identity index: the record was linked elsewhere by another decision meanwhile; look again",
    # 0220-0239: FHIR over HTTP (hutong.web.methods, hutong.fhir.patch, hutong.fhir.bundle; issue 15, item 7)
    "HT-0220": "method not allowed on this path (the Allow header lists the ones that are)",
    "HT-0221": "PATCH body is not a JSON Patch document (RFC 6902)",
    "HT-0222": "JSON Patch cannot be applied to the current resource (path missing, test failed)",
    "HT-0223": "patch format not supported (send application/json-patch+json)",
    "HT-0224": "patch of a resource the caller is shown only in part",
    "HT-0225": "operation ($...) inside a transaction or batch is not supported",
    "HT-0226": "transaction entry URL names another server",
    "HT-0227": "conditional criteria name another resource type than the entry",
    # 0280-0299: SMART App Launch for third-party apps (hutong.security.smart; issue 15)
    "HT-0280": "unknown or disabled SMART app (client_id)",
    "HT-0281": "redirect_uri is not one registered for this app (compared exactly)",
    "HT-0282": "PKCE required: code_challenge with code_challenge_method S256 (plain is refused)",
    "HT-0283": "authorization request malformed (response_type, aud, state or a parameter repeated)",
    "HT-0284": "authorization request unknown, expired or already decided",
    "HT-0285": "requested scope beyond what the app is registered for or the person may grant",
    "HT-0286": "launch context unknown, expired, or made for another app or user",
    "HT-0287": "patient context is not the person's own record or one delegated to them",
    "HT-0288": "authorization code invalid, expired, already used, or issued to another client or redirect_uri",
    "HT-0289": "code_verifier does not match the code_challenge (PKCE, RFC 7636 section 4.6)",
    "HT-0290": "SMART app authentication failed (confidential client secret)",
    "HT-0291": "the grant behind this refresh token was revoked or has expired",
    "HT-0292": "SMART app registration invalid (redirect URIs, launch URL, scopes or kind)",
    "HT-0293": "the person did not approve the app's request (access_denied)",
    "HT-0294": "this kind of account cannot authorize apps (only residents, delegates and clinicians)",
    # 0340-0349: settings and assembly (hutong.config, hutong.platform; issue 13)
    "HT-0340": "a HUTONG_* setting read that is not registered in hutong.config.VARIABLES",
    "HT-0341": "a HUTONG_* setting that must be a whole number is not one",
    # 0400-0409: the region simulator (hutong simulate, hutong.sim; issue 16)
    "HT-0400": "the simulator's region directory lacks its institutions or patients",
    "HT-0401": "a simulator parameter is out of range",
    "HT-0402": "the simulator cannot use the institutions' client credentials",
    # 0420-0429: operations: readiness, metrics, logs (hutong.web.health, hutong.web.metrics; issue 18, item 3)
    "HT-0420": "not ready: the database does not answer",
    "HT-0421": "not ready: the database schema is not this release's (older or newer)",
    "HT-0422": "not ready: the data keys do not open with the key source's master keys",
    "HT-0423": "HUTONG_METRICS_ADDRESS is not host:port",
    "HT-0424": "HUTONG_LOG_FORMAT is neither json nor text",
    "HT-0425": "HUTONG_LOG_LEVEL is not a log level (debug, info, warning, error, critical)",
    # 0600-0619: keys in operation: key backups, retiring master keys, the command key source
    # (hutong.security.keys_backup, hutong.security.keys; issue 18, item 4)
    "HT-0600": "key backup: no passphrase given (--passphrase-file, HUTONG_KEY_BACKUP_PASSPHRASE or a terminal)",
    "HT-0601": "key backup: the passphrase is too short, or its confirmation differs",
    "HT-0602": "not a Hutong key backup, or it is corrupt or truncated (checksum), or of an unknown format version",
    "HT-0603": "key backup: wrong passphrase (the backup does not decrypt with it)",
    "HT-0604": "key backup: the output file exists, or the key directory to restore into is not empty",
    "HT-0605": "the restored master keys do not open this database's data keys (an older key set): removed again",
    "HT-0606": "a master key cannot be retired: it is current, wraps data keys, or is not in the key directory",
    "HT-0607": "HUTONG_KEY_COMMAND cannot be started or exited with an error",
    "HT-0608": "HUTONG_KEY_COMMAND did not answer within HUTONG_KEY_COMMAND_TIMEOUT seconds",
    "HT-0609": "HUTONG_KEY_COMMAND printed something that is not id:base64-of-32-bytes lines",
    "HT-0610": "a master key file is readable or writable by other users (chmod 600 it; rotate if it was read)",
    "HT-0611": "the key source holds no master keys to back up",
    # 0450-0459: answering residents' correction requests (纠偏权; hutong.security.corrections; issue 16, item 8)
    "HT-0450": "this clinician's post is not designated to answer correction requests",
    "HT-0451": "an answer may not rewrite the request, nor change a final answer",
    "HT-0452": "a resident may not answer a correction request (only file, add information, or withdraw it)",
    "HT-0453": "the correction request was answered or changed meanwhile (reload the page)",
    "HT-0454": "the answer lacks what it must say (a reason to refuse, a question, what was corrected)",
    "HT-0455": "no such open correction request addressed to your institution",
    "HT-0456": "a correction request must be about an item of one's own record, addressed to the institution holding it",
    # 0460-0469: the operator's account form (hutong.web.ui.account_form; issue 16, item 9)
    "HT-0460": "account form: the username must be 3 to 100 characters without spaces",
    "HT-0461": "account form: the username is taken",
    "HT-0462": "account form: the person's name is missing",
    "HT-0463": "account form: this operator may not add accounts of this role",
    "HT-0464": "account form: a clinician account needs a doctor chosen from the directory",
    "HT-0465": "account form: the chosen doctor is not a post of the institution (or unknown, or not in post)",
    "HT-0466": "account form: the institution is unknown or not the operator's own",
    # 0570-0589: the 互认 dashboard and rule-management pages (hutong.cds.recognition_stats,
    # hutong.web.ui.recognition_dashboard; issue 14, item 5)
    "HT-0570": "the 互认 price table cannot be read, or a price is not a number >= 0",
    "HT-0571": "rule management: the pasted or uploaded rules are not valid JSON",
    "HT-0572": "rule management: no rules pasted or uploaded",
    "HT-0573": "rule management: the form does not name the version and digest reviewed on the page",
    "HT-0574": "rule management: unknown kind of rules, or two versions of different kinds compared",
    # 0560-0569: overload (hutong.web.overload, hutong.ingest.hl7v2.listener; issue 17)
    "HT-0560": "server busy: too many requests in flight, nothing was done; retry after the Retry-After delay",
    "HT-0561": "HUTONG_MAX_IN_FLIGHT must not be negative",
}


class HutongError(Exception):
    """Base of every error Hutong raises on purpose."""

    status: int = 400
    issue_code: str = "processing"

    def __init__(
        self,
        code: str,
        message: str,
        *,
        expression: list[str] | None = None,
        status: int | None = None,
        issue_code: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        assert code in CODES, code
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.expression = expression or []
        self.details = details or []
        if status is not None:
            self.status = status
        if issue_code is not None:
            self.issue_code = issue_code


class InvalidRequest(HutongError):
    status = 400
    issue_code = "invalid"


class Unprocessable(HutongError):
    """Body parsed but is not a valid resource (FHIR http.html#2.21.0.2: 422)."""

    status = 422
    issue_code = "structure"


class NotFound(HutongError):
    status = 404
    issue_code = "not-found"


class Gone(HutongError):
    status = 410
    issue_code = "deleted"


class Conflict(HutongError):
    status = 409
    issue_code = "conflict"


class PreconditionFailed(HutongError):
    status = 412
    issue_code = "conflict"


class TooLarge(HutongError):
    status = 413
    issue_code = "too-costly"


class UnsupportedMediaType(HutongError):
    status = 415
    issue_code = "not-supported"


class NotSupported(HutongError):
    status = 400
    issue_code = "not-supported"


class StorageError(HutongError):
    status = 503
    issue_code = "transient"


class Unauthorized(HutongError):
    """No usable credentials (RFC 6750 section 3.1: 401 with WWW-Authenticate)."""

    status = 401
    issue_code = "login"


class Forbidden(HutongError):
    """Authenticated, but policy refuses (FHIR issue type "forbidden")."""

    status = 403
    issue_code = "forbidden"


class ConfigError(HutongError):
    status = 500
    issue_code = "exception"


def operation_outcome(issues: list[HutongError] | HutongError, severity: str = "error") -> dict[str, Any]:
    """Render errors as an OperationOutcome (operationoutcome.html)."""
    errs = issues if isinstance(issues, list) else [issues]
    out: list[dict[str, Any]] = []
    for e in errs:
        issue: dict[str, Any] = {
            "severity": severity,
            "code": e.issue_code,
            "details": {
                "coding": [{"system": "urn:hutong:error-code", "code": e.code, "display": CODES[e.code]}],
                "text": e.message,
            },
            "diagnostics": f"{e.code}: {e.message}",
        }
        if e.expression:
            issue["expression"] = e.expression
        out.append(issue)
        for d in e.details:
            out.append(d)
    return {"resourceType": "OperationOutcome", "issue": out}


def info_outcome(text: str, code: str = "informational") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": code, "diagnostics": text}],
    }
