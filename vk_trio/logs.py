"""Logs a collector can read, through loguru, with secrets scrubbed before anything is written.

Two formats (``--log-format``, env ``LOG_FORMAT``):

``json`` (the default of ``vk-trio run``): one flat JSON object per line,
``{"time", "level", "msg", "logger", ...fields}``, where every field bound or passed to the
log call (``pod``, ``uid``, ``instance_id``, ``offer_id``, ...) is a top-level key. That is
what Loki, fluent-bit, Cloud Logging and ``jq`` expect (``kubectl logs ... | jq -r .msg``);
loguru's own ``serialize=True`` writes ~1 KB per line of file paths, thread and process
records nobody queries. The default is json even on a terminal, so that what an operator
sees is what the collector gets; ``text`` is for humans and the demo.

``text``: ``HH:MM:SS.mmm LEVEL message key=value ...``.

Values that must never be seen (the Vast API key, Secret-sourced env values, tokens) are
registered with ``redact()``; a patcher replaces them in the message and in every ``extra``
field, and each sink scrubs the traceback it writes, so a careless
``logger.info("...", body=request_body)`` still cannot leak one.
"""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TextIO

import msgspec
from loguru import logger

if TYPE_CHECKING:
    from loguru import Message, Record

LogFormat = Literal["json", "text"]

_secrets: set[str] = set()
_MASK = "***"
_CORE = ("time", "level", "msg", "logger")
"""The keys every JSON line starts with; a bound field of the same name is written as
``<name>_`` so it cannot overwrite them."""


LOG_LEVELS = {
    "trace": "TRACE",
    "debug": "DEBUG",
    "info": "INFO",
    "warn": "WARNING",
    "warning": "WARNING",
    "err": "ERROR",
    "error": "ERROR",
    "critical": "CRITICAL",
    "fatal": "CRITICAL",
}
"""Accepted ``LOG_LEVEL`` spellings (any case) and the level each means: Python's names plus
the aliases other tools use (``warn``, ``err``, ``fatal``, ``trace``)."""


def rust_log_level(value: str) -> str:
    """``DEBUG`` from ``debug`` or ``vk=debug,hyper=info``: the most verbose level named."""
    levels = ["trace", "debug", "info", "warn", "error"]
    named = [part.rsplit("=", 1)[-1].strip().lower() for part in value.split(",")]
    known = [level for level in named if level in levels] or ["info"]
    return LOG_LEVELS[min(known, key=levels.index)]


def redact(secret: str) -> None:
    """Never print ``secret`` in a log line from now on (short strings are ignored).

    Registering a secret also installs the scrubbing patcher, so it holds for every sink,
    including ones added without ``configure_logging`` (a library user's, a test's).
    """
    if len(secret) >= 4 and secret not in _secrets:
        _secrets.add(secret)
        logger.configure(patcher=_patch)


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(v) for v in value]
    return value


def _patch(record: Record) -> None:
    if _secrets:
        record["message"] = scrub(record["message"])
        record["extra"].update({k: _scrub_value(v) for k, v in record["extra"].items()})


def _traceback(record: Record) -> str | None:
    exception = record["exception"]
    if exception is None or exception.type is None:
        return None
    import traceback

    text = "".join(traceback.format_exception(exception.type, exception.value, exception.traceback))
    return scrub(text.rstrip())


def flat_record(record: Record) -> dict[str, Any]:
    """The JSON object of one log line (see the module docstring)."""
    line: dict[str, Any] = {
        "time": record["time"].astimezone(_dt.UTC).isoformat(timespec="milliseconds"),
        "level": record["level"].name.lower(),
        "msg": record["message"],
        "logger": record["name"],
    }
    for key, value in record["extra"].items():
        line[f"{key}_" if key in _CORE else key] = value
    error = _traceback(record)
    if error is not None:
        line["exception"] = error
    return line


def _json_sink(stream: TextIO) -> Callable[[Message], None]:
    def write(message: Message) -> None:
        encoded = msgspec.json.encode(flat_record(message.record), enc_hook=str)
        stream.write(encoded.decode() + "\n")
        stream.flush()

    return write


def _text_sink(stream: TextIO) -> Callable[[Message], None]:
    def write(message: Message) -> None:
        record = message.record
        fields = " ".join(f"{k}={v}" for k, v in record["extra"].items())
        when = record["time"].strftime("%H:%M:%S.%f")[:-3]
        text = f"{when} {record['level'].name: <7} {record['message']}"
        text += f"  {fields}" if fields else ""
        error = _traceback(record)
        stream.write(text + ("\n" + error if error else "") + "\n")
        stream.flush()

    return write


def configure_logging(
    level: str = "INFO",
    *,
    json: bool = True,
    sink: TextIO = sys.stderr,
    log_format: LogFormat | None = None,
) -> None:
    """Send logs to ``sink``: flat JSON lines by default, the short text format with
    ``json=False`` or ``log_format="text"`` (``log_format`` wins when given).

    The node logs to stdout (``kubectl logs | jq .``); the simulators keep stdout for the URL
    they print first, so they log to stderr.
    """
    as_json = json if log_format is None else log_format == "json"
    logger.remove()
    logger.configure(patcher=_patch)
    writer = _json_sink(sink) if as_json else _text_sink(sink)
    logger.add(writer, level=level.upper(), format="{message}", backtrace=False, catch=True)
