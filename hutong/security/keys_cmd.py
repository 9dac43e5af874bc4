"""Moved to :mod:`hutong.cli.keys` (issue 13, item 3: the sub-commands live in
one ``hutong/cli/`` package).  Re-exported here until no caller imports this path."""

from hutong.cli.keys import reencrypt, register, rows_per_key, status

__all__ = ['reencrypt', 'register', 'rows_per_key', 'status']
