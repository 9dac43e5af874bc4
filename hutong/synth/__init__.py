"""Synthetic region generator: a Chinese city's residents, institutions and records.

No real patient data may be used, yet every part of Hutong must be shown and
measured on data that looks and behaves like a Chinese city's.  This package
makes such a city (Beijing-shaped) deterministically from a seed and writes
it as FHIR R4 NDJSON plus a ground truth for identity matching.

Public surface::

    from hutong.synth import generate, SynthConfig
    report = generate(Path("out"), SynthConfig(residents=2000, institutions=20, seed=1))

    from hutong.synth import iter_resources          # resources as dicts, no files
    from hutong.synth import iter_residents          # the ground-truth residents

See README.md in this directory for the output layout and the noise model.
"""

from hutong.synth.config import NoiseRates, SynthConfig, SynthConfigError
from hutong.synth.pipeline import SynthReport, build_region, generate, iter_chunk_outputs, iter_resources
from hutong.synth.residents import Resident, iter_residents

__all__ = [
    "NoiseRates",
    "Resident",
    "SynthConfig",
    "SynthConfigError",
    "SynthReport",
    "build_region",
    "generate",
    "iter_chunk_outputs",
    "iter_residents",
    "iter_resources",
]
