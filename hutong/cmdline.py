"""Moved to :mod:`hutong.cli.context` (issue 13, item 3: the sub-commands live in
one ``hutong/cli/`` package).  Re-exported here until no caller imports this path."""

from hutong.cli.context import print_json, repository

__all__ = ['print_json', 'repository']
