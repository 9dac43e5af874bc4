"""统一社会信用代码 (unified social credit code), the institution identifier.

Institutions are identified under the 机构 OID (2.16.156.10011.1.5) by their
18-character unified social credit code, GB 32100-2015:
1 registration-authority code + 1 organisation-type code + 6 GB/T 2260 region
+ 9-character organisation code (GB 11714-1997, itself with a check character)
+ 1 check character (GB 32100-2015 §4.5, MOD 31 over the 31-character set
without I, O, Z, S, V).

Public hospitals are 事业单位 registered by 机构编制 (``12``); private clinics
are usually 民办非企业单位 (``52``) or companies (``91``).
"""

from __future__ import annotations

_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_VALUE = {c: i for i, c in enumerate(_CHARSET)}
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)

PUBLIC_INSTITUTION = "12"  # 机构编制 / 事业单位
PRIVATE_NON_ENTERPRISE = "52"  # 民政 / 民办非企业单位
COMPANY = "91"  # 市场监管 / 企业


def org_code(body8: str) -> str:
    """GB 11714-1997 organisation code: 8 characters plus its MOD 11 check character."""
    total = sum(_VALUE[c] * w for c, w in zip(body8, _ORG_WEIGHTS, strict=True))
    c9 = 11 - total % 11
    check = "X" if c9 == 10 else "0" if c9 == 11 else str(c9)
    return body8 + check


def check_char(first17: str) -> str:
    total = sum(_VALUE[c] * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return _CHARSET[(31 - total % 31) % 31]


def make(kind: str, region: str, serial: int) -> str:
    """A code for registration kind (``12``/``52``/``91``), GB/T 2260 region and a serial."""
    body8 = f"{serial % 100_000_000:08d}"
    first17 = kind + region + org_code(body8)
    return first17 + check_char(first17)


def is_valid(code: str) -> bool:
    if len(code) != 18 or any(c not in _VALUE for c in code):
        return False
    if org_code(code[8:16]) != code[8:17]:
        return False
    return check_char(code[:17]) == code[17]
