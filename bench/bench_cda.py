"""Benchmark of WS/T 500 ingestion's pure half: parse + map a 检验报告 with 20 results.

One synthetic C0007 document (header, encompassingEncounter, 20 WS/T 500 result
clusters with LOINC items, UCUM units, reference ranges, interpretation) goes
through ``hutong.ingest.cda.mapping.to_bundle`` repeatedly, in one process,
for a few seconds per phase:

* ``parse``: safe XML parsing and header validation only (``parse_document``);
* ``parse_map``: the full mapping to a transaction Bundle (``to_bundle``);
* ``parse_map_validate``: that plus ``hutong.fhir.validation.validate`` of every
  resource, as the ingestion pipeline does before storing.

    python -m bench.bench_cda                 # JSON on stdout
    python -m bench.bench_cda --seconds 5
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

from hutong.fhir.validation import validate
from hutong.ingest.cda.mapping import Sender, to_bundle
from hutong.ingest.cda.parse import parse_document

SENDER = Sender(code="121101050000000781", organization_id="org-bench")

# (LOINC, 名称, value, unit, low, high)
_RESULTS = [
    ("2345-7", "葡萄糖", "7.8", "mmol/L", "3.9", "6.1"), ("2093-3", "总胆固醇", "5.2", "mmol/L", "2.8", "5.7"),
    ("2571-8", "甘油三酯", "2.35", "mmol/L", "0.45", "1.70"), ("2085-9", "高密度脂蛋白胆固醇", "1.1", "mmol/L", "0.9", "2.0"),
    ("13457-7", "低密度脂蛋白胆固醇", "3.4", "mmol/L", "1.5", "3.4"), ("2160-0", "肌酐", "68", "μmol/L", "41", "81"),
    ("3094-0", "尿素", "5.1", "mmol/L", "2.6", "7.5"), ("3084-1", "尿酸", "512", "μmol/L", "208", "428"),
    ("1742-6", "丙氨酸氨基转移酶", "35", "U/L", "7", "40"), ("1920-8", "天门冬氨酸氨基转移酶", "28", "U/L", "13", "35"),
    ("2324-2", "γ-谷氨酰转移酶", "41", "U/L", "7", "45"), ("6768-6", "碱性磷酸酶", "88", "U/L", "50", "135"),
    ("1975-2", "总胆红素", "12.4", "μmol/L", "0", "21"), ("1968-7", "直接胆红素", "3.1", "μmol/L", "0", "6.8"),
    ("2885-2", "总蛋白", "71", "g/L", "65", "85"), ("1751-7", "白蛋白", "43", "g/L", "40", "55"),
    ("2823-3", "钾", "4.1", "mmol/L", "3.5", "5.3"), ("2951-2", "钠", "140", "mmol/L", "137", "147"),
    ("2075-0", "氯", "103", "mmol/L", "99", "110"), ("4548-4", "糖化血红蛋白", "7.2", "%", "4.0", "6.0"),
]

_DE = 'codeSystem="2.16.156.10011.2.2.1" codeSystemName="卫生信息数据元目录"'


def _cluster(loinc: str, name: str, value: str, unit: str, low: str, high: str) -> str:
    flag = "H" if float(value) > float(high) else "L" if float(value) < float(low) else "N"
    return f"""
          <entry><organizer classCode="CLUSTER" moodCode="EVN"><statusCode/>
            <component><observation classCode="OBS" moodCode="EVN">
              <code code="DE04.30.019.00" displayName="检验项目代码" {_DE}/>
              <effectiveTime value="20240315101500"/>
              <value xsi:type="CD" code="{loinc}" codeSystem="2.16.840.1.113883.6.1" displayName="{name}"/>
              <entryRelationship typeCode="COMP"><observation classCode="OBS" moodCode="EVN">
                <code code="DE04.50.134.00" displayName="标本类别" {_DE}/><value xsi:type="ST">血清</value>
              </observation></entryRelationship>
            </observation></component>
            <component><observation classCode="OBS" moodCode="EVN">
              <code code="DE04.30.015.00" displayName="检验定量结果" {_DE}/>
              <value xsi:type="REAL" value="{value}"/>
              <interpretationCode code="{flag}" codeSystem="2.16.840.1.113883.5.83"/>
              <entryRelationship typeCode="COMP"><observation classCode="OBS" moodCode="EVN">
                <code code="DE04.30.016.00" displayName="检查定量结果计量单位" {_DE}/><value xsi:type="ST">{unit}</value>
              </observation></entryRelationship>
              <referenceRange><observationRange><value xsi:type="IVL_PQ">
                <low value="{low}" unit="{unit}"/><high value="{high}" unit="{unit}"/>
              </value></observationRange></referenceRange>
            </observation></component>
          </organizer></entry>"""


def lab_report(results: int = 20) -> bytes:
    """A synthetic 检验报告 with ``results`` quantitative results (invented patient)."""
    rows = [_RESULTS[i % len(_RESULTS)] for i in range(results)]
    clusters = "".join(_cluster(*r) for r in rows)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <realmCode code="CN"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_MT000040"/>
  <templateId root="2.16.156.10011.2.1.1.27"/>
  <id root="2.16.156.10011.1.1" extension="JY-BENCH-000001"/>
  <code code="C0007" codeSystem="2.16.156.10011.2.4"/>
  <title>检验报告</title>
  <effectiveTime value="20240315143512"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
  <languageCode code="zh-CN"/>
  <recordTarget><patientRole>
    <id root="2.16.156.10011.1.11" extension="MZ00482913"/>
    <id root="2.16.156.10011.1.33" extension="LIS2024031500123"/>
    <telecom use="MP" value="tel:13800138000"/>
    <patient>
      <id root="2.16.156.10011.1.3" extension="110108196207051040"/>
      <name>赵秀兰</name>
      <administrativeGenderCode code="2" codeSystem="2.16.156.10011.2.3.3.4"/>
      <birthTime value="19620705"/>
    </patient>
  </patientRole></recordTarget>
  <author><time value="20240315143000"/><assignedAuthor>
    <id root="2.16.156.10011.1.7" extension="JY0107"/><assignedPerson><name>陈志强</name></assignedPerson>
  </assignedAuthor></author>
  <custodian><assignedCustodian><representedCustodianOrganization>
    <id root="2.16.156.10011.1.5" extension="{SENDER.code}"/><name>北京市朝阳区互通示范医院</name>
  </representedCustodianOrganization></assignedCustodian></custodian>
  <componentOf><encompassingEncounter>
    <id root="2.16.156.10011.1.11" extension="MZJZ2024031500318"/>
    <effectiveTime value="20240315082000"/>
  </encompassingEncounter></componentOf>
  <component><structuredBody>
    <component><section>
      <code code="30954-2" codeSystem="2.16.840.1.113883.6.1" displayName="STUDIES SUMMARY"/>
      <entry><observation classCode="OBS" moodCode="EVN">
        <code code="DE04.30.018.00" displayName="检验类别" {_DE}/><value xsi:type="ST">生化检验</value>
      </observation></entry>{clusters}
    </section></component>
  </structuredBody></component>
</ClinicalDocument>
""".encode()


def _rate(fn: Callable[[], object], seconds: float) -> dict[str, Any]:
    fn()  # warm up (parser, caches)
    n, start = 0, time.perf_counter()
    cpu0 = time.process_time()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        n += 1
    cpu = time.process_time() - cpu0
    return {"documents": n, "seconds": round(elapsed, 3), "documents_per_s": round(n / elapsed, 1),
            "ms_per_document": round(1000 * elapsed / n, 3), "documents_per_cpu_s": round(n / cpu, 1)}


def run(seconds: float = 3.0, results: int = 20) -> dict[str, Any]:
    data = lab_report(results)
    m = to_bundle(data, SENDER)
    entries = m.bundle["entry"]
    observations = sum(1 for e in entries if e["resource"]["resourceType"] == "Observation")
    assert observations == results, observations

    def validated() -> None:
        for e in to_bundle(data, SENDER).bundle["entry"]:
            validate(e["resource"], e["resource"]["resourceType"])

    return {
        "benchmark": "cda",
        "document": {"type": "C0007 检验报告", "results": results, "bytes": len(data),
                     "bundle_entries": len(entries)},
        "python": platform.python_version(),
        "phases": {
            "parse": _rate(lambda: parse_document(data), seconds),
            "parse_map": _rate(lambda: to_bundle(data, SENDER), seconds),
            "parse_map_validate": _rate(validated, seconds),
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=3.0, help="time per phase (default 3)")
    ap.add_argument("--results", type=int, default=20, help="results in the 检验报告 (default 20)")
    args = ap.parse_args(argv)
    print(json.dumps(run(args.seconds, args.results), ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
