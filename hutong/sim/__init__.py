"""A simulated region's hospitals sending to a running platform (``hutong simulate``).

Written as the hospitals' side: it speaks only HL7 v2 over MLLP and HTTP
(WS/T 500 CDA documents to ``POST /ingest/cda``) and reads only the
hospitals' own data (a ``hutong synth`` region).  :mod:`hutong.sim.clinic`
draws coherent visits, :mod:`hutong.sim.hl7` and :mod:`hutong.sim.cda` write
them as messages and documents, :mod:`hutong.sim.transport` is the wire and
:mod:`hutong.sim.runner` the clock, the rhythm and the tally.
"""

from hutong.sim.region import Hospital, load
from hutong.sim.runner import LATE, ON_TIME, SILENT, Report, SimConfig, Simulator, Tally
from hutong.sim.transport import CdaPoster, ClientCredentials, Mllp

__all__ = ["LATE", "ON_TIME", "SILENT", "CdaPoster", "ClientCredentials", "Hospital", "Mllp", "Report",
           "SimConfig", "Simulator", "Tally", "load"]
