"""Procedures, coded in ICD-9-CM-3 (as Chinese hospitals code operations), with surgery grades.

Chinese hospitals code operations with ICD-9-CM-3 (国家临床版 3.0 extends it);
the FHIR system for ICD-9-CM covers volume 3 procedure codes.  Surgery grades
一~四级 follow 《医疗机构手术分级管理办法》 (国卫办医政发〔2022〕18号): grade
4 is high-risk/complex and done only in 三级 hospitals; the grade of each
operation is each hospital's own catalogue, so these are typical values.
"""

from __future__ import annotations

ICD9CM_SYSTEM = "http://hl7.org/fhir/sid/icd-9-cm"

# key -> (ICD-9-CM-3, 中文名, grade 1-4, WS/T 500 document key)
PROCEDURES: dict[str, tuple[str, str, int, str]] = {
    "lap-appendectomy": ("47.01", "腹腔镜下阑尾切除术", 2, "surgery"),
    "lap-cholecystectomy": ("51.23", "腹腔镜下胆囊切除术", 3, "surgery"),
    "wrist-orif": ("79.32", "桡骨骨折切开复位内固定术", 3, "surgery"),
    "hip-replacement": ("81.51", "全髋关节置换术", 4, "surgery"),
    "hemiarthroplasty": ("81.52", "部分髋关节置换术", 4, "surgery"),
    "pci": ("36.06", "冠状动脉药物洗脱支架置入术", 4, "surgery"),
    "phaco": ("13.41", "白内障超声乳化抽吸术", 2, "surgery"),
    "caesarean": ("74.1", "子宫下段剖宫产术", 3, "caesarean"),
    "vaginal-delivery": ("73.59", "手法助产", 1, "vaginal-delivery"),
    "wound-suture": ("86.59", "皮肤和皮下组织缝合术", 1, "surgery"),
    "closed-reduction": ("79.02", "桡骨骨折闭合复位术", 1, "surgery"),
    "hernia-repair": ("53.00", "单侧腹股沟疝修补术", 2, "surgery"),
    "thyroid-lobectomy": ("06.2", "单侧甲状腺叶切除术", 3, "surgery"),
    "myomectomy": ("68.29", "子宫病损切除术", 3, "surgery"),
    "turp": ("60.29", "经尿道前列腺电切术", 3, "surgery"),
    "knee-replacement": ("81.54", "全膝关节置换术", 4, "surgery"),
    "discectomy": ("80.51", "椎间盘切除术", 3, "surgery"),
    "lobectomy": ("32.49", "肺叶切除术", 4, "surgery"),
    "gastrectomy": ("43.7", "部分胃切除术伴空肠吻合术", 4, "surgery"),
    "hemicolectomy": ("45.73", "右半结肠切除术", 4, "surgery"),
    "hepatectomy": ("50.22", "部分肝切除术", 4, "surgery"),
    "mastectomy": ("85.41", "单侧单纯乳房切除术", 3, "surgery"),
}
