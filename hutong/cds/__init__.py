"""Clinical decision support: rule knowledge applied to a person's record.

- :mod:`hutong.cds.equivalents`: "recent equivalent results elsewhere", the
  passive panel of mutual recognition of results (检查检验结果互认); the coming
  order-time hook builds on it.

It sits beside ``record/`` above ``fhir/`` and below ``web/`` (DESIGN.md):
no SQL, no HTML.
"""

from hutong.cds.equivalents import IMAGING_WINDOW_DAYS, LAB_WINDOW_DAYS, Equivalent, recent_equivalents

__all__ = ["IMAGING_WINDOW_DAYS", "LAB_WINDOW_DAYS", "Equivalent", "recent_equivalents"]
