"""Clinical decision support: rule knowledge applied to a person's record.

- :mod:`hutong.cds.equivalents`: "recent equivalent results elsewhere", the
  passive panel of mutual recognition of results (检查检验结果互认).
- :mod:`hutong.cds.knowledge`: the 互认 knowledge (items, windows and scope marks
  per region, 负面清单, QC eligibility, local codes as ConceptMaps), pure;
  :mod:`hutong.cds.knowledge_store` its tables (the package's one module with SQL);
  :mod:`hutong.cds.versions` its versions, approved four-eyes by the committee.
- :mod:`hutong.cds.recognition`: the order-time rule (order-select, order-sign)
  built on them.

It sits beside ``record/`` above ``fhir/`` and below ``web/`` (DESIGN.md):
no HTML, and SQL only in the data-access module.
"""

from hutong.cds.equivalents import IMAGING_WINDOW_DAYS, LAB_WINDOW_DAYS, Equivalent, recent_equivalents

__all__ = ["IMAGING_WINDOW_DAYS", "LAB_WINDOW_DAYS", "Equivalent", "recent_equivalents"]
