"""Moved: the composition root is :mod:`hutong.platform` (issue 13, item 3).

``open_repository`` stays importable from here until every caller imports it
from ``hutong.platform``; nothing new should import this module.
"""

from __future__ import annotations

from hutong.platform import open_repository

__all__ = ["open_repository"]
