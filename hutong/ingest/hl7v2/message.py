"""HL7 v2 messages: character set, header and field access (HL7 v2.5.1 ch. 2).

Parsing is python-hl7's (``hl7`` on PyPI): its parse plan reads the encoding
characters from MSH-1/MSH-2 and builds the Message/Segment/Field/Repetition/
Component tree; escape sequences are undone with its ``unescape`` (2.7).
What is ours is what has to happen on the bytes before that: MSH-18
(ch. 2.15.9.18, HL7 table 0211) names the character set of the *whole*
message, so it is read from the raw MSH segment and the message is decoded
with it, strictly.  Chinese senders use "UNICODE UTF-8" or "GB 18030-2000".

Segments may end in CR (the standard), LF or CR LF.  Z-segments stay in
``parsed`` and are never required.
"""

from __future__ import annotations

import functools
import hashlib
import re
import warnings
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import hl7
import hl7.util
from hl7 import containers as _containers
from hl7.parser import create_parse_plan

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")
DEFAULT_CHARSET = "UNICODE UTF-8"  # MSH-18 absent: ASCII by the standard, UTF-8 here (a superset)
# HL7 table 0211 values (and the spellings Chinese interfaces use) -> Python codec.
# GB 18030 decodes GBK and GB 2312 too (it is their superset).
CHARSETS: dict[str, str] = {
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
    "GB 18030-2000": "gb18030",
    "GB18030-2000": "gb18030",
    "GB 18030": "gb18030",
    "GB18030": "gb18030",
    "GBK": "gb18030",
    "GB2312": "gb18030",
    "GB 2312": "gb18030",
    "ASCII": "ascii",
    "8859/1": "latin-1",
    # HL7 table 0211 "UNICODE": "The world wide character standard from ISO/IEC 10646-1-1993"
    # (MSH-18, HL7 v2.5.1 ch. 2.15.9.18).  It names the repertoire, not a byte encoding; the
    # Chinese lab analysers that send it send UTF-8 (what table 0211's explicit code
    # "UNICODE UTF-8", "UCS Transformation Format, 8-bit form", says), so the bytes are read
    # as UTF-8, strictly: anything else (UCS-2, GB 18030 under the wrong label) is refused
    # with AR 102 and a text saying so (HT-0261).
    "UNICODE": "utf-8",
}
BEIJING = "+08:00"  # a timestamp without an offset is Beijing time (no DST since 1991)

# HL7 table 0357 (message error condition codes).
ERROR_TEXT: dict[str, str] = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "104": "Value too long",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}


class Hl7Error(Exception):
    """A message we will not take, with what the ACK says about it.

    ``code`` is an HL7 table 0357 code; ``ack`` is "AR" when the sender must not
    resend the message unchanged (wrong type, version or charset, unparseable),
    "AE" for an error in its content.  ``segment``/``field`` locate it (ERR-2).
    ``ht`` is the stable Hutong code (hutong.errors) when the refusal has its own.
    """

    def __init__(self, code: str, text: str, *, segment: str | None = None, field: int | None = None,
                 ack: str = "AE", sequence: int = 1, ht: str | None = None) -> None:
        super().__init__(f"{code} {text}" + (f" ({segment}-{field})" if segment and field else
                                              f" ({segment})" if segment else ""))
        self.code = code
        self.text = text
        self.segment = segment
        self.field = field
        self.ack = ack
        self.sequence = sequence
        self.ht = ht


def shown(value: str, limit: int = 40) -> str:
    """A received value quoted for an error text so that nothing hides in it: Python's
    repr (quotes, trailing and doubled spaces kept, tabs and control characters as
    escapes), cut to ``limit`` characters with an ellipsis mark."""
    cut = value[:limit]
    return repr(cut) + ("..." if len(value) > limit else "")


@dataclass(slots=True)
class Hl7Message:
    raw: bytes
    text: str
    parsed: Any  # hl7.Message
    version: str  # MSH-12
    message_type: str  # MSH-9.1, "ADT"
    trigger: str  # MSH-9.2, "A01"
    structure: str | None  # MSH-9.3, "ADT_A01"
    control_id: str  # MSH-10
    sending_app: str  # MSH-3.1
    sending_facility: list[str]  # MSH-4, every component
    receiving_app: str  # MSH-5.1
    receiving_facility: list[str]  # MSH-6, every component
    timestamp: str | None  # MSH-7 as FHIR dateTime
    charset: str  # MSH-18 as sent, or DEFAULT_CHARSET
    processing_id: str  # MSH-11.1
    zone: str = "+08:00"  # the message's default time zone: MSH-7's offset, else Beijing time

    @property
    def codec(self) -> str:
        """The Python codec of ``charset`` (the ACK is encoded with it)."""
        return CHARSETS[normalize_charset(self.charset)]

    def segments(self, name: str) -> list[Any]:
        """Every segment named ``name`` (empty list when none)."""
        return [s for s in self.parsed if name_of(s) == name]

    def segment(self, name: str) -> Any | None:
        for s in self.parsed:
            if name_of(s) == name:
                return s
        return None


# --------------------------------------------------------------------------- field access
# python-hl7's tree: Segment[n] is field n (MSH too: MSH[1] is the field separator);
# a Field holds a str (no separators in it) or Repetitions; a Repetition holds
# Components; a Component holds str subcomponents.

# python-hl7 logs the whole field value when an escape sequence is malformed: patient data
# (PIPL Art. 28) has no place in logs, and the problem is not ours to report.
# A filter, not ``logger.disabled``: logging.config.dictConfig (uvicorn's, for one)
# re-enables every existing logger it does not configure, but leaves filters alone.
hl7.util.logger.addFilter(lambda _record: False)


def _unescape(container: Any, text: str) -> str:
    if container.esc not in text:
        return text
    with warnings.catch_warnings():  # python-hl7 logs unknown escapes with the deprecated Logger.warn
        warnings.simplefilter("ignore", DeprecationWarning)
        out: str = hl7.util.unescape(container, text)
    return out


def _leaf(container: Any, text: str) -> str:
    if container.esc in text:
        return _unescape(container, text)
    return "" if text == '""' else text  # the HL7 null: "no value" for us


_item = list.__getitem__  # python-hl7 containers override __getitem__ (for slices): skip it on the hot path


def get(seg: Any, field: int, comp: int = 1, sub: int = 1, rep: int = 1) -> str:
    """Unescaped value of ``field``.``comp``.``sub`` of repetition ``rep``; "" when absent."""
    if field >= len(seg):
        return ""
    f = _item(seg, field)
    if rep > len(f):
        return ""
    r = _item(f, rep - 1)
    if isinstance(r, str):
        return _leaf(seg, r) if comp == 1 and sub == 1 else ""
    return rget(r, comp, sub)


def rget(r: Any, comp: int = 1, sub: int = 1, ctx: Any = None) -> str:
    """Unescaped component ``comp``.``sub`` of one field repetition ``r``; "" when absent."""
    if isinstance(r, str):
        return _leaf(ctx if ctx is not None else _DEFAULT_CTX, r) if comp == 1 and sub == 1 else ""
    if comp > len(r):
        return ""
    c = _item(r, comp - 1)
    if isinstance(c, str):
        return _leaf(r, c) if sub == 1 else ""
    if sub > len(c):
        return ""
    s = _item(c, sub - 1)
    return _leaf(c, s) if isinstance(s, str) else ""


def components(r: Any, n: int, ctx: Any = None) -> list[str]:
    """The first ``n`` components of a field repetition (first subcomponent each), unescaped, padded with ""."""
    if isinstance(r, str):
        return [_leaf(ctx if ctx is not None else _DEFAULT_CTX, r)] + [""] * (n - 1)
    out = []
    esc = r.esc
    for i in range(min(n, len(r))):
        c = _item(r, i)
        if not isinstance(c, str):
            c = _item(c, 0) if len(c) else ""
            if not isinstance(c, str):
                c = ""
        if c and (esc in c or c == '""'):
            c = _leaf(r, c)
        out.append(c)
    if len(out) < n:
        out += [""] * (n - len(out))
    return out


def reps(seg: Any, field: int) -> list[Any]:
    """The repetitions of ``field`` (each usable with ``rget``); empty when the field is empty."""
    if field >= len(seg):
        return []
    f = _item(seg, field)
    if len(f) == 1:
        r = _item(f, 0)
        return [r] if r and r != [""] else []
    return [r for r in f if r and r != [""]]


def name_of(seg: Any) -> str:
    """The segment id ("PID"); a line without any separator is a segment of one str."""
    first = _item(seg, 0)
    s: str = first if isinstance(first, str) else _item(first, 0)
    return s


def raw_field(seg: Any, field: int) -> str:
    """``field`` as it was sent (escaped, with its separators): for echoing into an ACK."""
    if field >= len(seg):
        return ""
    return str(seg[field])


class _Ctx:
    esc = "\\"
    separators = "\r|~^&"


_DEFAULT_CTX = _Ctx()


# --------------------------------------------------------------------------- timestamps
_DTM = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,4}))?)?)?)?)?)?"
    r"(?:([+-])(\d{2})(\d{2}))?"
)


def ts_to_fhir(value: str, *, segment: str | None = None, field: int | None = None,
               zone: str = BEIJING) -> str | None:
    """HL7 DTM ``YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`` (ch. 2A.22) as a FHIR date or dateTime.

    A time without an offset is in ``zone``: the message's default, which is
    MSH-7's offset when MSH-7 has one (ch. 2A.22: "if the time zone is not
    included, the time zone defaults to that of the local time zone of the
    sender", and MSH-7 states the sender's), else Beijing time (+08:00).  FHIR
    wants seconds and a zone whenever there is a time, so ``202401051030``
    becomes ``2024-01-05T10:30:00+08:00``.  Empty -> None; malformed -> Hl7Error AE 102.
    """
    if not value:
        return None
    out = _dtm(value, zone)
    if out is None:
        raise Hl7Error("102", f"invalid timestamp {shown(value)}", segment=segment, field=field)
    return out


def zone_of(value: str) -> str | None:
    """The ``+HH:MM`` offset a DTM carries, None when it has none (or is malformed)."""
    m = _DTM.fullmatch(value.strip())
    if m is None or m.group(8) is None:
        return None
    return f"{m.group(8)}{m.group(9)}:{m.group(10)}"


@functools.lru_cache(maxsize=4096)  # a message repeats its timestamps (every OBX-14)
def _dtm(value: str, default_zone: str = BEIJING) -> str | None:
    """``ts_to_fhir`` of a non-empty value, None when malformed."""
    m = _DTM.fullmatch(value.strip())
    if m is None:
        return None
    y, mo, d, h, mi, s, frac, sign, zh, zm = m.groups()
    try:
        if sign is not None and (int(zh) > 14 or int(zm) > 59):
            return None
        if mo is None:
            return y if int(y) != 0 else None
        if d is None:
            date(int(y), int(mo), 1)
            return f"{y}-{mo}"
        if h is None:
            date(int(y), int(mo), int(d))
            return f"{y}-{mo}-{d}"
        datetime(int(y), int(mo), int(d), int(h), int(mi or 0), int(s or 0))
    except ValueError:
        return None
    zone = f"{sign}{zh}:{zm}" if sign is not None else default_zone
    return f"{y}-{mo}-{d}T{h}:{mi or '00'}:{s or '00'}{'.' + frac if frac else ''}{zone}"


# --------------------------------------------------------------------------- parsing
def normalize_charset(value: str) -> str:
    v = " ".join(value.upper().split())
    return v or DEFAULT_CHARSET


def _split_gb18030(data: bytes, sep: int) -> list[bytes]:
    """Split on ``sep`` skipping GB 18030 multi-byte characters (a trail byte may equal "|")."""
    out: list[bytes] = []
    start = i = 0
    n = len(data)
    while i < n:
        b = data[i]
        if b == sep:
            out.append(data[start:i])
            i += 1
            start = i
        elif 0x81 <= b <= 0xFE:
            i += 4 if i + 1 < n and 0x30 <= data[i + 1] <= 0x39 else 2
        else:
            i += 1
    out.append(data[start:])
    return out


def _declared_charset(msh: bytes, sep: bytes) -> str:
    """MSH-18 read on the bytes, before anything is decoded."""
    fields = msh.split(sep)  # fields[k] is MSH-(k+1): fields[1] is MSH-2
    value = fields[17] if len(fields) > 17 else b""
    if not msh.isascii():
        # Chinese facility names in MSH-3..6: in GB 18030 a trail byte can be the
        # separator, so also split character-wise and believe that split when it
        # finds a GB 18030 declaration.
        gb = _split_gb18030(msh, sep[0])
        if len(gb) > 17 and CHARSETS.get(normalize_charset(gb[17].decode("ascii", "replace"))) == "gb18030":
            value = gb[17]
    enc = fields[1] if len(fields) > 1 else b""
    if len(enc) >= 2:  # first repetition (MSH-18 repeats for code extensions), first component
        value = value.split(enc[1:2])[0].split(enc[0:1])[0]
    return value.decode("ascii", "replace").strip()


class _Plan:
    """python-hl7's parse plan with each level's child plan built once instead of per node.

    ``hl7.parse`` builds a new plan object for every field, repetition and component
    it visits: two thirds of its time on a lab result.  The plan interface is the
    library's (``separator``/``separators``/``containers``/``esc``/``factory``,
    ``container``/``next``/``applies``); the splitting is the library's ``_split``.
    """

    __slots__ = ("separator", "separators", "containers", "esc", "factory", "_rest", "_next", "_make", "_plain")

    def __init__(self, separator: str, separators: str, containers: list[Any], esc: str, factory: Any) -> None:
        self.separator = separator
        self.separators = separators
        self.containers = containers
        self.esc = esc
        self.factory = factory
        self._rest = separators[separators.find(separator):]
        self._make = containers[0]
        # the standard encoding characters: the classes' defaults, no per-node attributes
        self._plain = separators == _STANDARD and esc == "\\" and factory is _Factory
        self._next = (_Plan(separators[separators.find(separator) + 1], separators, containers[1:], esc, factory)
                      if len(containers) > 1 else None)

    def container(self, data: list[Any]) -> Any:
        if self._plain:
            node = _new(self._make)
            _extend(node, data)
            return node
        return self._make(sequence=data, esc=self.esc, separators=self.separators, factory=self.factory)

    def next(self) -> _Plan | None:
        return self._next

    def applies(self, text: str) -> bool:
        for s in self._rest:
            if s in text:
                return True
        return False


_STANDARD = "\r|~^&"
_new = list.__new__
_extend = list.extend


def _lean(cls: Any, level: int) -> Any:
    """A subclass of a python-hl7 container (still an ``hl7.<cls>``) whose standard encoding
    characters are class attributes: a node of a standard message carries no attributes of its own."""

    def __init__(self: Any, separator: str | None = None, sequence: Any = (), esc: str = "\\",
                 separators: str = _STANDARD, factory: Any = None) -> None:
        list.__init__(self, sequence)
        if separators != _STANDARD:
            self.separators = separators
            self.separator = separators[level]
        if esc != "\\":
            self.esc = esc
        if factory is not None and factory is not _Factory:
            self.factory = factory

    return type(cls.__name__, (cls,), {"__init__": __init__, "__module__": __name__, "separator": _STANDARD[level],
                                       "esc": "\\", "separators": _STANDARD})


class _Factory(hl7.Factory):  # type: ignore[misc]
    create_message = _lean(_containers.Message, 0)
    create_segment = _lean(_containers.Segment, 1)
    create_field = _lean(_containers.Field, 2)
    create_repetition = _lean(_containers.Repetition, 3)
    create_component = _lean(_containers.Component, 4)


for _cls in (_Factory.create_message, _Factory.create_segment, _Factory.create_field, _Factory.create_repetition,
             _Factory.create_component):
    _cls.factory = _Factory


try:
    from hl7.parser import _split
except ImportError:  # pragma: no cover - a python-hl7 without it: its public parser, slower
    _split = None


def parse_tree(text: str) -> Any:
    """``hl7.parse(text)``, faster: same tree (same classes, via a Factory), same string form."""
    text = text.strip()
    if _split is None:  # pragma: no cover
        return hl7.parse(text, factory=_Factory)
    p = create_parse_plan(text, _Factory)
    return _split(text, _Plan(p.separator, p.separators, p.containers, p.esc, _Factory))


_SEGMENT_ENDS = re.compile(r"\r\n|\n|\r{2,}")


def parse(raw: bytes) -> Hl7Message:
    """Decode (charset from MSH-18), parse and check the header of one message.

    Raises Hl7Error: AR 101 no MSH / no MSH-9 / no MSH-10 / no MSH-12, AR 103
    unknown charset, AR 102 bytes not valid in the declared charset, AR 203
    unsupported version, AR 202 processing id not P/D/T, AR 100 a batch, AE 102
    malformed MSH-7.
    """
    data = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    data = data.lstrip(b"\r\n\t ")
    if not data.startswith(b"MSH") or len(data) < 8:
        raise Hl7Error("101", "message does not start with an MSH segment", segment="MSH", ack="AR")
    sep = data[3:4]
    if sep.isalnum() or sep in b"\r\n \t":
        raise Hl7Error("102", f"invalid field separator {sep!r}", segment="MSH", field=1, ack="AR")
    cut = [i for i in (data.find(b"\r"), data.find(b"\n")) if i >= 0]
    msh = data[: min(cut)] if cut else data
    declared = _declared_charset(msh, sep)
    charset = declared or DEFAULT_CHARSET
    codec = CHARSETS.get(normalize_charset(charset))
    if codec is None:
        raise Hl7Error("103", f"unsupported character set {shown(charset)} (HL7 table 0211: "
                              "UNICODE UTF-8, UNICODE, GB 18030-2000, ASCII)", segment="MSH", field=18, ack="AR")
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as e:
        if normalize_charset(charset) == "UNICODE":
            raise Hl7Error("102", f"MSH-18 UNICODE (HL7 table 0211: ISO/IEC 10646, no byte encoding named) "
                                  f"is read as UTF-8, and byte {e.start} of this message is not UTF-8: send "
                                  "UTF-8 bytes, or declare the encoding used (UNICODE UTF-8, GB 18030-2000)",
                           segment="MSH", field=18, ack="AR", ht="HT-0261") from None
        raise Hl7Error("102", f"message is not valid {charset}", segment="MSH", field=18, ack="AR") from None
    if "\n" in text or "\r\r" in text:
        text = _SEGMENT_ENDS.sub("\r", text)
    text = text.strip()
    if f"\rMSH{text[3]}" in text:
        raise Hl7Error("100", "more than one MSH segment: batches are not accepted here", segment="MSH",
                       ack="AR")
    try:
        parsed = parse_tree(text)
    except (hl7.ParseException, IndexError, ValueError) as e:
        raise Hl7Error("102", f"unparseable message: {e}", segment="MSH", ack="AR") from None
    h = parsed[0]
    if len(h) < 3 or len(raw_field(h, 2)) < 3:
        raise Hl7Error("102", "MSH-2 must hold the encoding characters", segment="MSH", field=2, ack="AR")
    # MSH-9's components are codes (ID, ch. 2A.35): spaces around them are padding some
    # senders leave (fixed-width fields), never part of the code.
    message_type = get(h, 9, 1).strip()
    if not message_type:
        raise Hl7Error("101", "MSH-9 message type is missing", segment="MSH", field=9, ack="AR")
    control_id = get(h, 10)
    if not control_id:
        raise Hl7Error("101", "MSH-10 message control id is missing", segment="MSH", field=10, ack="AR")
    version = get(h, 12)
    if not version:
        raise Hl7Error("101", "MSH-12 version id is missing", segment="MSH", field=12, ack="AR")
    if version not in SUPPORTED_VERSIONS:
        raise Hl7Error("203", f"unsupported version {version[:20]!r} (accepted: {', '.join(SUPPORTED_VERSIONS)})",
                       segment="MSH", field=12, ack="AR")
    processing_id = get(h, 11)
    if processing_id and processing_id not in ("P", "D", "T"):
        raise Hl7Error("202", f"unsupported processing id {processing_id[:10]!r} (P, D or T)", segment="MSH",
                       field=11, ack="AR")
    trigger = get(h, 9, 2).strip()
    if not trigger and message_type == "ADT":  # v2.3 senders may put the event in EVN-1 only
        evn = next((s for s in parsed if name_of(s) == "EVN"), None)
        trigger = get(evn, 1).strip() if evn is not None else ""
    sent_at = get(h, 7)
    return Hl7Message(
        raw=raw,
        text=text,
        parsed=parsed,
        version=version,
        message_type=message_type,
        trigger=trigger,
        structure=get(h, 9, 3).strip() or None,
        control_id=control_id,
        sending_app=get(h, 3) or get(h, 3, 2),
        sending_facility=_components(h, 4),
        receiving_app=get(h, 5) or get(h, 5, 2),
        receiving_facility=_components(h, 6),
        timestamp=ts_to_fhir(sent_at, segment="MSH", field=7),
        charset=charset,
        processing_id=processing_id,
        zone=zone_of(sent_at) or BEIJING,
    )


def content_key(raw: bytes) -> bytes:
    """What makes two deliveries the same message, for telling a resend from a re-used
    MSH-10: the bytes with segment terminators normalised and MSH-7 (date/time of message,
    which some senders restamp when they resend) left out.  SHA-256, on the bytes as sent."""
    data = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    data = data.strip(b"\r\n\t ").replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    segments = [s.rstrip(b" ") for s in data.split(b"\r") if s.strip()]
    if segments and segments[0].startswith(b"MSH") and len(segments[0]) > 3:
        fields = segments[0].split(segments[0][3:4])
        if len(fields) > 6:
            fields[6] = b""
        segments[0] = segments[0][3:4].join(fields)
    return hashlib.sha256(b"\r".join(segments)).digest()


def _components(seg: Any, field: int) -> list[str]:
    rs = reps(seg, field)
    if not rs:
        return []
    r = rs[0]
    if isinstance(r, str):
        return [rget(r, 1, 1, seg)]
    return [rget(r, i + 1) for i in range(len(r))]
