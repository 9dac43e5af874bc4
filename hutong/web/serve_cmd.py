"""Moved to :mod:`hutong.cli.serve` (issue 13, item 3: the sub-commands live in
one ``hutong/cli/`` package).  Re-exported here until no caller imports this path."""

from hutong.cli.serve import register, run

__all__ = ['register', 'run']
