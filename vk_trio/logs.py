"""Structured JSON logs through loguru, with secrets scrubbed before anything is written.

Every log line is one JSON object; the node writes them to stdout, so ``kubectl logs ... | jq .``
works. Values that must never be seen (the Vast API key, Secret-sourced env values) are
registered with ``redact()``; a patcher replaces them in the message and in every ``extra``
field, so a careless ``logger.info("...", body=request_body)`` still cannot leak one.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

_secrets: set[str] = set()
_MASK = "***"


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


def configure_logging(level: str = "INFO", *, json: bool = True, sink: TextIO = sys.stderr) -> None:
    """Send logs to ``sink``: JSON lines by default, a short human format with ``json=False``.

    The node logs to stdout (``kubectl logs | jq .``); the simulators keep stdout for the URL
    they print first, so they log to stderr.
    """
    logger.remove()
    logger.configure(patcher=_patch)
    if json:
        logger.add(sink, level=level.upper(), serialize=True, backtrace=False)
    else:
        logger.add(
            sink,
            level=level.upper(),
            format="<green>{time:HH:mm:ss.SSS}</green> {level: <7} {message} <dim>{extra}</dim>",
            backtrace=False,
        )
