"""The simulated region at work: every hospital's HIS sends as the day goes.

A day is compressed ``speed`` times (144: a day every 10 minutes); the
region's send rate follows an outpatient day (quiet nights, a morning peak,
an afternoon clinic) around a mean of ``rate`` messages per second, shared
among the institutions by size.  Some institutions are deliberately *late*
(they upload their records two to three days after the event, so next-day
timeliness 次日归集 fails for them) or *silent* (their interface is down:
nothing arrives, and the console shows them disconnected), and a share
``faulty`` of messages carries a mistake the platform must keep as a dead
letter.  Every answer is tallied per institution, so a load test or the
demo's own test can compare the console's figures with what was sent.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hutong.errors import HutongError
from hutong.sim import cda, hl7
from hutong.sim.clinic import EMERGENCY, INPATIENT, OUTPATIENT, Diagnosis, diagnoses_for, visit
from hutong.sim.region import Hospital
from hutong.sim.transport import CdaPoster, Mllp
from hutong.systems import REGION_TZ

ON_TIME, LATE, SILENT = "on-time", "late", "silent"
# Relative send intensity per hour of the (simulated) Beijing day; mean 1.
_HOURLY = (0.15, 0.1, 0.1, 0.1, 0.15, 0.2, 0.4, 1.0, 2.2, 2.6, 2.4, 1.8, 0.9, 1.2, 2.0, 2.0, 1.7, 1.2,
           0.8, 0.6, 0.5, 0.4, 0.3, 0.2)
HOURLY = tuple(x * 24 / sum(_HOURLY) for x in _HOURLY)


@dataclass(frozen=True, slots=True)
class SimConfig:
    rate: float = 3.0  # mean messages per second for the whole region
    speed: float = 144.0  # simulated seconds per real second
    faulty: float = 0.02  # share of messages with a mistake (dead letters)
    late: int = 2  # institutions uploading days late
    silent: int = 2  # institutions sending nothing
    seed: int = 1
    duration: float | None = None  # real seconds; None: until stopped
    messages: int | None = None  # stop after this many messages
    cda: bool = True  # send WS/T 500 documents (institutions with credentials)
    start_hour: float | None = 8.0  # simulated hour of day at start (None: the Beijing clock's)


@dataclass(slots=True)
class Tally:
    """What one institution sent and what the platform answered."""

    code: str
    name: str
    role: str
    sent: Counter[str] = field(default_factory=Counter)  # per message kind (ADT^A04, C0007, ...)
    stored: int = 0  # HL7 AA, HTTP 201
    duplicate: int = 0  # HTTP 200: already stored
    dead: int = 0  # HL7 AE, HTTP 422/409: kept as a dead letter
    refused: int = 0  # HL7 AR, HTTP 401/403
    failed: int = 0  # no answer (connection error, 5xx)
    faulty: int = 0  # messages sent with a deliberate mistake

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "role": self.role, "sent": sum(self.sent.values()),
                "kinds": dict(sorted(self.sent.items())), "stored": self.stored, "duplicate": self.duplicate,
                "dead": self.dead, "refused": self.refused, "failed": self.failed, "faulty": self.faulty}


@dataclass(slots=True)
class Report:
    started: float
    seconds: float = 0.0
    tallies: dict[str, Tally] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        rows = [t.as_dict() for t in self.tallies.values()]
        total = {k: sum(r[k] for r in rows) for k in ("sent", "stored", "duplicate", "dead", "refused", "failed",
                                                       "faulty")}
        return {"seconds": round(self.seconds, 2), "total": total, "institutions": rows}


@dataclass(frozen=True, slots=True)
class Delivery:
    hospital: Hospital
    kind: str  # "ADT^A04", "ORU^R01", ..., or a CDA document code "C0007"
    payload: bytes
    faulty: bool = False

    @property
    def cda(self) -> bool:
        return self.kind.startswith("C0")


def roles(hospitals: list[Hospital], cfg: SimConfig) -> dict[str, str]:
    """Which institutions are late or silent (drawn by seed; at least one stays on time)."""
    rng = random.Random(cfg.seed * 7919 + 1)
    codes = [h.code for h in hospitals]
    rng.shuffle(codes)
    silent = max(min(cfg.silent, len(codes) - 1), 0)
    late = max(min(cfg.late, len(codes) - 1 - silent), 0)
    out = dict.fromkeys(codes, ON_TIME)
    for c in codes[:silent]:
        out[c] = SILENT
    for c in codes[silent:silent + late]:
        out[c] = LATE
    return out


class Simulator:
    """Sends the region's messages; ``mllp`` and ``posters`` are the wire to the platform."""

    def __init__(self, hospitals: list[Hospital], cfg: SimConfig, *, mllp: Callable[[str], Mllp],
                 posters: dict[str, CdaPoster], clock: Callable[[], datetime] | None = None) -> None:
        self.hospitals, self.cfg = hospitals, cfg
        self.role = roles(hospitals, cfg)
        self.rng = random.Random(cfg.seed)
        self.clock = clock or (lambda: datetime.now(REGION_TZ).replace(microsecond=0))
        self._mllp_of = mllp
        self._mllp: dict[str, Mllp] = {}
        self.posters = posters
        self.report = Report(started=time.time(), tallies={
            h.code: Tally(h.code, h.name, self.role[h.code]) for h in hospitals})
        self._serial = 0
        # Control ids and document ids unique across runs (MSH-10 is at most 20 characters, v2.5.1 2.15.9.10).
        self._run = _base36(int(time.time()))[-6:]
        self._active = [h for h in hospitals if self.role[h.code] != SILENT]
        self._weights = [h.weight for h in self._active]

    # ---------------------------------------------------------------- content
    def _id(self) -> str:
        self._serial += 1
        return f"S{self._run}{self._serial:07d}"

    def _event(self, h: Hospital, now: datetime) -> list[Delivery]:
        """One clinical event of ``h``: its HL7 messages and documents, in the order a HIS sends them."""
        rng = self.rng
        p = rng.choice(h.patients)
        dxs = diagnoses_for(h.type_text, h.inpatient)
        if self.role[h.code] == LATE:
            now -= timedelta(hours=rng.uniform(30, 80))  # a batch upload of records days old
        roll = rng.random()
        if h.inpatient and roll < 0.1:
            setting, what = INPATIENT, "admit"
        elif h.inpatient and roll < 0.2:
            setting, what = INPATIENT, "discharge"
        elif h.inpatient and roll < 0.32:
            setting, what = EMERGENCY, "visit"
        else:
            setting, what = OUTPATIENT, "visit"
        fitting = [d for d in dxs if setting in d.settings] or dxs
        dx: Diagnosis = rng.choice(fitting)
        if setting not in dx.settings:
            setting = OUTPATIENT if "O" in dx.settings else INPATIENT
        v = visit(rng, dx, setting, now, p.male, self._id()[1:])
        out: list[Delivery] = []

        def msg(kind: str, text: str) -> None:
            out.append(Delivery(h, kind, text.encode()))

        def doc(code: str, xml: bytes) -> None:
            if self.cfg.cda and h.code in self.posters:
                out.append(Delivery(h, code, xml))

        sent_at = self.clock()
        if setting == INPATIENT and what == "discharge":
            msg("ADT^A03", hl7.adt(h, p, v, "A03", self._id(), sent_at))
            doc("C0053", cda.discharge_summary(h, p, v, self._id()))
            doc("C0032", cda.front_page(h, p, v, self._id()))
            return out
        if setting == INPATIENT:
            v.end = v.start = now - timedelta(hours=rng.uniform(1, 5))
            msg("ADT^A01", hl7.adt(h, p, v, "A01", self._id(), sent_at))
            doc("C0034", cda.admission_record(h, p, v, self._id()))
        else:
            if rng.random() < 0.1:
                msg("ADT^A08", hl7.adt(h, p, v, "A08", self._id(), sent_at))
            msg("ADT^A04", hl7.adt(h, p, v, "A04", self._id(), sent_at))
        for i, (panel, results) in enumerate(v.results.items()):
            order = f"{v.number}{i + 1:02d}"
            msg("ORM^O01", hl7.orm(h, p, v, panel, order, self._id(), sent_at))
            if self.cfg.cda and h.code in self.posters and rng.random() < 0.3:
                doc("C0007", cda.lab_report(h, p, v, self._id(), results, now))
            else:
                msg("ORU^R01", hl7.oru(h, p, v, panel, order, self._id(), sent_at, results))
        if dx.exam and rng.random() < 0.5:
            doc("C0006", cda.exam_report(h, p, v, self._id(), now))
        if setting == OUTPATIENT:
            doc("C0002", cda.outpatient_record(h, p, v, self._id()))
            if dx.drugs:
                doc("C0004", cda.prescription(h, p, v, self._id()))
        return out

    def _faulty(self, d: Delivery) -> Delivery:
        """The same message with a mistake real interfaces make: an HL7 message whose
        patient has no identifier (PID-3 empty), a CDA document of an unknown type code."""
        if d.cda:
            text = d.payload.replace(f'code="{d.kind}"'.encode(), b'code="C0099"', 1)
            return Delivery(d.hospital, d.kind, text, faulty=True)
        segs = d.payload.decode().split("\r")
        for i, s in enumerate(segs):
            if s.startswith("PID|"):
                f = s.split("|")
                f[3] = ""
                segs[i] = "|".join(f)
        return Delivery(d.hospital, d.kind, "\r".join(segs).encode(), faulty=True)

    def deliveries(self) -> Iterator[Delivery]:
        """The region's endless stream of messages, institutions drawn by size."""
        if not self._active:
            return
        while True:
            h = self.rng.choices(self._active, self._weights)[0]
            for d in self._event(h, self.clock()):
                if self.rng.random() < self.cfg.faulty:
                    d = self._faulty(d)
                yield d

    # ---------------------------------------------------------------- sending
    def send(self, d: Delivery) -> str:
        """Send one message; returns the outcome it was tallied as."""
        t = self.report.tallies[d.hospital.code]
        t.sent[d.kind] += 1
        t.faulty += d.faulty
        try:
            if d.cda:
                status = self.posters[d.hospital.code].post(d.payload)
                outcome = ("stored" if status == 201 else "duplicate" if status == 200 else
                           "dead" if status in (409, 422) else "refused" if status in (401, 403) else "failed")
            else:
                conn = self._mllp.get(d.hospital.code)
                if conn is None:
                    conn = self._mllp[d.hospital.code] = self._mllp_of(d.hospital.code)
                ack = conn.send(d.payload).decode("utf-8", "replace")
                code = next((s.split("|")[1] for s in ack.split("\r") if s.startswith("MSA|")), "")
                outcome = {"AA": "stored", "CA": "stored", "AE": "dead", "CE": "dead", "AR": "refused",
                           "CR": "refused"}.get(code, "failed")
        except (OSError, ValueError):
            outcome = "failed"
        except HutongError:  # the platform refused the institution's credentials (HT-0402)
            outcome = "refused"
        setattr(t, outcome, getattr(t, outcome) + 1)
        return outcome

    def intensity(self, elapsed: float, start_hour: float) -> float:
        """Send intensity at ``elapsed`` real seconds into the run (mean 1 over a simulated day)."""
        hour = (start_hour + elapsed * self.cfg.speed / 3600) % 24
        return HOURLY[int(hour)]

    def run(self, stop: threading.Event | None = None, progress: Callable[[Report], None] | None = None,
            progress_every: float = 10.0) -> Report:
        """Send until ``duration``, ``messages`` or ``stop``; the report of what was sent and answered."""
        stop = stop or threading.Event()
        t0 = time.monotonic()
        now = self.clock()
        # A demo starts with the morning clinics, whatever the real hour (the records are stamped
        # with the real clock; only the send rate follows the compressed day).
        start_hour = self.cfg.start_hour if self.cfg.start_hour is not None else now.hour + now.minute / 60
        last_progress = t0
        sent = 0
        try:
            for d in self.deliveries():
                elapsed = time.monotonic() - t0
                if stop.is_set() or (self.cfg.duration is not None and elapsed >= self.cfg.duration):
                    break
                if self.cfg.messages is not None and sent >= self.cfg.messages:
                    break
                self.send(d)
                sent += 1
                if progress is not None and time.monotonic() - last_progress >= progress_every:
                    last_progress = time.monotonic()
                    self.report.seconds = last_progress - t0
                    progress(self.report)
                rate = self.cfg.rate * self.intensity(elapsed, start_hour)
                wait = self.rng.expovariate(rate) if rate > 0 else 1.0
                if self.cfg.duration is not None:
                    wait = min(wait, max(self.cfg.duration - (time.monotonic() - t0), 0))
                if stop.wait(wait):
                    break
        finally:
            for c in self._mllp.values():
                c.close()
            for poster in self.posters.values():
                poster.http.close()
        self.report.seconds = time.monotonic() - t0
        return self.report


def _base36(n: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"
