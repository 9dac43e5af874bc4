"""Moved to :mod:`hutong.cli.sharing` (issue 13, item 3: the sub-commands live in
one ``hutong/cli/`` package).  Re-exported here until no caller imports this path."""

from hutong.cli.sharing import register

__all__ = ['register']
