"""The one error a CDA document is refused with, in a module of its own so that
the parser and the document-type table (hutong.ingest.cda.doctypes), which both
raise it, need not import each other (tests/test_import_cycles.py)."""

from __future__ import annotations

from collections.abc import Sequence


class CdaError(Exception):
    """A document that cannot be taken: ``code`` is stable and short
    (``cda-xml``, ``cda-dtd``, ``cda-header``, ``cda-type``, ``cda-sender``,
    ``cda-body``); ``text`` names the XPath of each problem; ``problems`` lists
    them one by one when there are several."""

    def __init__(self, code: str, text: str, problems: Sequence[str] = ()) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text
        self.problems: tuple[str, ...] = tuple(problems) or (text,)
