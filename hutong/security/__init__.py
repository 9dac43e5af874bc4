"""Security: who is asking (authentication), what they may see (policy),
what happened (audit), and how data rests (encryption, keys, residency).

Every path into clinical data -- REST, operations, bundles, bulk import,
MLLP, CDA, the UI -- resolves a :class:`~hutong.security.principal.Principal`
first and asks :mod:`hutong.security.policy`; nothing reaches the store
around it (DESIGN.md, "Every read and write ... passes through the same
authorisation and audit path").
"""
