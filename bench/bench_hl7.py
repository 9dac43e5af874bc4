"""Micro-benchmark of HL7 v2 parsing and mapping (``hutong.ingest.hl7v2``): messages/s on one core.

The message is a Chinese laboratory report, ORU^R01 with PID, PV1, ORC, OBR
and 10 OBX (numeric results with units, reference ranges and flags), UTF-8.
The issue's target is 500 such messages/s through the whole ingestion path
on 2 cores; parse + map is one part of that path and should stay well under
1 ms per message.

    python -m bench.bench_hl7                 # JSON on stdout
    python -m bench.bench_hl7 --seconds 3
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import hl7

from hutong.fhir.validation import validate
from hutong.ingest.hl7v2.mapping import Sender, to_bundle
from hutong.ingest.hl7v2.message import parse

SENDER = Sender(code="12110000400000000X", organization_id="org-1")
TESTS = [("WBC", "白细胞计数", "6690-2", "10^9/L", "3.5-9.5", "6.1"), ("RBC", "红细胞计数", "789-8", "10^12/L", "4.3-5.8", "4.9"),
         ("HGB", "血红蛋白", "718-7", "g/L", "130-175", "142"), ("HCT", "红细胞压积", "4544-3", "%", "40-50", "43.5"),
         ("PLT", "血小板计数", "777-3", "10^9/L", "125-350", "210"), ("MCV", "平均红细胞体积", "787-2", "fL", "82-100", "88"),
         ("NEUT%", "中性粒细胞百分比", "770-8", "%", "40-75", "81.2"), ("LYMPH%", "淋巴细胞百分比", "736-9", "%", "20-50", "12.1"),
         ("GLU", "葡萄糖", "2345-7", "mmol/L", "3.9-6.1", "5.2"), ("CRP", "C反应蛋白", "1988-5", "mg/L", "<10", "3.1")]


def oru_r01(i: int = 1) -> bytes:
    """A 10-OBX ORU^R01 as a Chinese LIS sends it (control id ``i``)."""
    segs = [
        f"MSH|^~\\&|LIS|12110000400000000X|HUTONG|BJ-RHIN|20240105113000||ORU^R01^ORU_R01|LIS{i:012d}|P|2.5.1"
        "|||AL|NE|CHN|UNICODE UTF-8",
        f"PID|1||{100000 + i:08d}^^^^MR~11010519491231002X^^^^NNCHN||张^伟||19491231|M|||朝阳区建国路88号^^北京市^北京市"
        "^100022^CHN^H||13812345678^PRN^CP",
        "PV1|1|I|心内科^301^2||||1001^王^建国||||||||||||Z2024000123",
        f"ORC|RE|SQ{i:010d}|LAB{i:010d}||CM||||20240105080000|||1001^王^建国",
        f"OBR|1|SQ{i:010d}|LAB{i:010d}|BLD-CBC^血常规^L|||20240105080000|||||||||1001^王^建国||||||20240105112500||LAB|F",
    ]
    for n, (code, name, loinc, unit, ref, value) in enumerate(TESTS, 1):
        flag = "H" if code == "NEUT%" else ("L" if code == "LYMPH%" else "N")
        unit_field = unit.replace("^", "\\S\\")
        segs.append(f"OBX|{n}|NM|{code}^{name}^L^{loinc}^^LN||{value}|{unit_field}|{ref}|{flag}|||F|||20240105080000")
    return ("\r".join(segs) + "\r").encode("utf-8")


def rate(fn: Callable[[Any], Any], messages: Sequence[Any], seconds: float) -> dict[str, float]:
    """Best messages/s of repeated passes over ``messages`` within ``seconds`` (CPU time of this process)."""
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.process_time()
        for m in messages:
            fn(m)
        dt = time.process_time() - t0
        best = max(best, len(messages) / dt) if dt > 0 else best
    return {"messages_per_s": round(best), "us_per_message": round(1e6 / best, 1) if best else 0.0}


def parse_map_validate(raw: bytes) -> None:
    for e in to_bundle(parse(raw), SENDER).bundle["entry"]:
        validate(e["resource"], e["resource"]["resourceType"])


def run(seconds: float = 2.0, n: int = 500) -> dict[str, Any]:
    messages = [oru_r01(i) for i in range(n)]
    text = [m.decode("utf-8") for m in messages]
    sample = to_bundle(parse(messages[0]), SENDER).bundle
    return {
        "message": "ORU^R01, PID + PV1 + ORC + OBR + 10 OBX, UTF-8",
        "bytes_per_message": len(messages[0]),
        "bundle_entries": len(sample["entry"]),
        "parse": rate(parse, messages, seconds),
        "parse_and_map": rate(lambda m: to_bundle(parse(m), SENDER), messages, seconds),
        # reference: the library's own parse of the decoded text (no charset, no header checks)
        "python_hl7_parse_only": rate(hl7.parse, text, seconds),
        # what the store's transaction adds first: structural validation of the 13 resources
        "parse_map_and_validate": rate(parse_map_validate, messages, seconds),
        "target_whole_path_messages_per_s_on_2_cores": 500,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement (default 2)")
    a = ap.parse_args()
    print(json.dumps(run(a.seconds), indent=2, ensure_ascii=False))
