"""Moved to :mod:`hutong.cli.audit` (issue 13, item 3: the sub-commands live in
one ``hutong/cli/`` package).  Re-exported here until no caller imports this path."""

from hutong.cli.audit import register

__all__ = ['register']
