"""Moved to :mod:`hutong.cli.synth` (issue 13, item 3: the sub-commands live in
one ``hutong/cli/`` package).  Re-exported here until no caller imports this path."""

from hutong.cli.synth import register

__all__ = ['register']
