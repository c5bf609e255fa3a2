"""Log records as one JSON object per line (or plain text), each tagged with the current request's id.

``configure_logging`` is called by entry points only (``vitserve serve``), never at import. Every record gets a
``request_id`` attribute (``-`` outside a request) from ``RequestIdFilter``, set on the handler so that records
of every logger (uvicorn's, MindSpore's, ours) pass through it.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal

from vitserve.service.observability.request_context import current_request_id

LogFormat = Literal["json", "text"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"

# LogRecord attributes that are not a caller's ``extra=``: everything else on a record becomes a JSON field
# (uvicorn's ``color_message`` is its message again with terminal colour codes: dropped).
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "color_message",
}


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id``: the current request's id, or ``-``; an id set by the caller is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id() or "-"
        return True


# Characters that end a line or drive a terminal: C0 controls (``\n``, ``\r``, ...), DEL, C1 controls (``\x85`` is
# a line break to ``str.splitlines``) and the Unicode line and paragraph separators. A client puts them in a log
# line through a decoded path (``%0a``) or a header; escaped, one record stays one line.
_CONTROLS = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
_TEXT_ESCAPES = {c: repr(chr(c))[1:-1] if c < 0x80 else f"\\u{c:04x}" for c in _CONTROLS}
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in _CONTROLS if c >= 0x7F}  # json.dumps escapes C0 itself


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``, ``\\u0085``)."""
    return text.translate(_TEXT_ESCAPES)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, always one line: the control characters of the message, of every field and of a
    traceback are escaped (a traceback's line breaks become ``\\n``)."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_controls(super().format(record))


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id", ...extra fields, "exception"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id not in (None, "-"):
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # json.dumps escapes C0 controls; C1 controls and U+2028/U+2029 it leaves (valid JSON, but line breaks to
        # some readers): escaped too, inside strings, where alone they can occur.
        return json.dumps(entry, default=str, ensure_ascii=False).translate(_JSON_ESCAPES)


def configure_logging(fmt: LogFormat, level: str) -> None:
    """Replace the root logger's handlers with one on stderr in ``fmt``; other loggers propagate to it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn's own loggers log through the root handler (``log_config=None`` leaves them unconfigured).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
