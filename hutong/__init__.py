"""Hutong (互通): a regional health information platform.

Layers (see DESIGN.md): ``fhir`` (pure FHIR semantics), ``store`` (the
Repository), ``web`` (HTTP assembly), ``synth`` (synthetic region), ``cli``.
"""

__version__ = "0.1.0"
