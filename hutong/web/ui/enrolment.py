"""What an operator hands a new staff member to enrol their authenticator app (issue 16, item 9).

The otpauth:// URI (Key Uri Format, the de-facto standard of Google
Authenticator, which hutong.security.totp.provisioning_uri writes) shown
three ways: a QR code to scan, drawn here as SVG by segno (pure Python, no
network: the secret never leaves the server to be drawn); the base32 secret
in groups of four to type by hand (the apps ignore the spaces); and the URI
itself for password managers that take one.

The page carrying it is rendered once, in the response to the form that
created the account, never cached (Cache-Control: no-store, as every page of
hutong.web.ui.pages.Pages.render) and never redirected to (the secret stays
out of URLs and logs).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import segno
from markupsafe import Markup

GROUP = 4
# Error correction M (15% of the code may be unreadable): what authenticator apps' own
# QR codes use; 4 px a module keeps a 40-character secret's code near 200 px (fits 390 px).
ERROR = "m"
SCALE = 4


@dataclass(frozen=True, slots=True)
class Enrolment:
    uri: str
    secret: str     # base32, as in the URI
    grouped: str    # the secret in groups of four, for typing
    qr_svg: Markup  # the QR code of ``uri`` as an inline <svg>


def qr_code(uri: str) -> segno.QRCode:
    """The QR code of ``uri`` (byte mode; the URI is ASCII)."""
    return segno.make(uri, error=ERROR, micro=False, boost_error=False)


def secret_of(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme != "otpauth":
        raise ValueError("not an otpauth URI")
    return parse_qs(parts.query)["secret"][0]


def grouped(secret: str) -> str:
    """``JBSWY3DPEHPK3PXP`` -> ``JBSW Y3DP EHPK 3PXP``."""
    return " ".join(secret[i:i + GROUP] for i in range(0, len(secret), GROUP))


def enrolment(uri: str, title: str) -> Enrolment:
    """The three forms of ``uri``; ``title`` names the QR code for screen readers."""
    svg = qr_code(uri).svg_inline(scale=SCALE, dark="#000", light="#fff", title=title, svgclass="qr",
                                  lineclass=None)
    secret = secret_of(uri)
    return Enrolment(uri, secret, grouped(secret), Markup(svg))
