"""Logs as JSON lines with the request's id, and nothing personal in them (issue 18, item 3).

One line per record: ``time`` (UTC, ms), ``level``, ``logger``, ``message``,
``request_id`` when the record was written while serving a request (set by
hutong.web.metrics.Observe and carried into the thread pool by contextvars),
and the extra fields a caller passed (``extra={"route": ...}``).  A record
with an exception carries its type and the stack as ``file:line in function``
frames, never the exception's message: a message can quote a value from the
request (a name, an ID number), and so can a traceback's source lines and
locals, which are left out too.

``HUTONG_LOG_FORMAT``: ``json`` (the default of ``hutong serve``) or ``text``
(the default of the other commands, read by a person at a terminal);
``HUTONG_LOG_LEVEL``: the level of the server's logs (default ``warning``;
``info`` adds one access line per request: route template, status, duration).

A request id a client sends in ``X-Request-Id`` is kept only when it is a
short token of safe characters without a run of digits (which could be an ID
number, a phone number or an SMS code); otherwise the server makes one.
"""

from __future__ import annotations

import logging
import logging.config
import re
import secrets
import time
import traceback
from contextvars import ContextVar
from typing import Any

import orjson

from hutong.config import env
from hutong.errors import ConfigError

REQUEST_ID: ContextVar[str | None] = ContextVar("hutong_request_id", default=None)
HEADER = "x-request-id"
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,63}")
_DIGIT_RUN = re.compile(r"\d{5}")
FORMATS = ("json", "text")
LEVELS = ("debug", "info", "warning", "error", "critical")

# The attributes every LogRecord has; anything else on a record came from ``extra``.
# uvicorn's color_message is its message again, with terminal colour codes.
_STANDARD = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message", "asctime", "taskName", "color_message"}


def request_id(client_value: str | None) -> str:
    """The id of a request: the client's ``X-Request-Id`` when it is a safe, short,
    impersonal token, else a new random one."""
    if client_value is not None and _SAFE_ID.fullmatch(client_value) and not _DIGIT_RUN.search(client_value):
        return client_value
    return secrets.token_hex(12)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid is not None:
            out["request_id"] = rid
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_") and k not in out:
                out[k] = v if isinstance(v, str | int | float | bool) or v is None else str(v)
        if record.exc_info and record.exc_info[0] is not None:
            etype, _e, tb = record.exc_info
            out["error"] = etype.__name__
            out["stack"] = [f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(tb)]
        return orjson.dumps(out).decode()


class TextFormatter(logging.Formatter):
    """A person's format, with the request id, and also without exception messages."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text = saved
        rid = REQUEST_ID.get()
        if rid is not None:
            line += f" [request {rid}]"
        if saved[0] and saved[0][0] is not None:
            etype, _e, tb = saved[0]
            frames = "; ".join(f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(tb))
            line += f" ({etype.__name__} at {frames})"
        return line


def settings(default_format: str) -> tuple[str, str]:
    """(format, level) from HUTONG_LOG_FORMAT / HUTONG_LOG_LEVEL."""
    fmt = (env("HUTONG_LOG_FORMAT") or default_format).strip().lower()
    if fmt not in FORMATS:
        raise ConfigError("HT-0424", f"HUTONG_LOG_FORMAT must be json or text, not {fmt[:20]!r}")
    level = (env("HUTONG_LOG_LEVEL") or "warning").strip().lower()
    if level not in LEVELS:
        raise ConfigError("HT-0425", f"HUTONG_LOG_LEVEL must be one of {', '.join(LEVELS)}, not {level[:20]!r}")
    return fmt, level


def config(fmt: str, level: str) -> dict[str, Any]:
    """A logging.config.dictConfig for the server (uvicorn's log_config: every worker applies it):
    every logger -- ours, uvicorn's, the libraries' -- through one handler in ``fmt``."""
    formatter = "hutong.logs.JsonFormatter" if fmt == "json" else "hutong.logs.TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"hutong": {"()": formatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "hutong",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        # uvicorn's own loggers hand their records to the root handler (one format);
        # its access log stays off: it writes the raw path and query (ids, search values).
        "loggers": {**{name: {"handlers": [], "propagate": True, "level": level.upper()}
                       for name in ("uvicorn", "uvicorn.error", "hutong")},
                    "uvicorn.access": {"handlers": [], "propagate": False, "level": "WARNING"}},
    }


def configure(default_format: str) -> dict[str, Any]:
    """Apply HUTONG_LOG_FORMAT / HUTONG_LOG_LEVEL to this process; returns the config."""
    cfg = config(*settings(default_format))
    logging.config.dictConfig(cfg)
    return cfg
