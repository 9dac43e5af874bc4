"""Moved to :mod:`hutong.cli.accounts` (issue 13, item 3: the sub-commands live in
one ``hutong/cli/`` package).  Re-exported here until no caller imports this path."""

from hutong.cli.accounts import organization_id, register

__all__ = ['organization_id', 'register']
