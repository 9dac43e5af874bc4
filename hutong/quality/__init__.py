"""Data quality and supervision for the commission (DESIGN.md: quality/).

Connection status (:mod:`hutong.quality.connection`), next-day timeliness and
per-institution record counts (:mod:`hutong.quality.institutions`), and their
store reads (:mod:`hutong.quality.quality_store`, the package's one
data-access module).  The console (hutong.web.ui.console) renders them; the
oversight indicators of later issues build here.
"""
