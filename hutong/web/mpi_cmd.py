"""Moved to :mod:`hutong.cli.mpi` (issue 13, item 3: the sub-commands live in
one ``hutong/cli/`` package).  Re-exported here until no caller imports this path."""

from hutong.cli.mpi import register

__all__ = ['register']
