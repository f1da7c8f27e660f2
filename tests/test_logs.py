"""Log lines a collector can read: one flat JSON object each, secrets scrubbed in every format."""

from __future__ import annotations

import io
from collections.abc import Iterator

import msgspec
import pytest
from loguru import logger

from vk_trio.logs import configure_logging, redact


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    logger.remove()


def lines(sink: io.StringIO) -> list[str]:
    return [line for line in sink.getvalue().splitlines() if line]


def test_a_json_line_is_one_flat_object_with_bound_fields_at_the_top() -> None:
    sink = io.StringIO()
    configure_logging("INFO", sink=sink, log_format="json")
    log = logger.bind(pod="default/vllm", uid="u-1")
    log.info("instance running", instance_id=1234, offer_id=99)
    logger.debug("not at INFO")
    [line] = lines(sink)
    record = msgspec.json.decode(line)
    assert set(record) == {
        "time",
        "level",
        "msg",
        "logger",
        "pod",
        "uid",
        "instance_id",
        "offer_id",
    }
    assert record["msg"] == "instance running"
    assert record["level"] == "info"
    assert record["logger"] == __name__
    assert (record["pod"], record["instance_id"], record["offer_id"]) == ("default/vllm", 1234, 99)
    assert record["time"].endswith("+00:00")
    assert len(line) < 300  # not loguru's ~1 KB serialized record


def test_a_field_named_like_a_core_key_cannot_overwrite_it() -> None:
    sink = io.StringIO()
    configure_logging(sink=sink)
    logger.info("the message", msg="a field", level=3)
    record = msgspec.json.decode(lines(sink)[0])
    assert (record["msg"], record["msg_"], record["level"], record["level_"]) == (
        "the message",
        "a field",
        "info",
        3,
    )


def test_exceptions_are_one_field_of_the_same_line() -> None:
    sink = io.StringIO()
    configure_logging(sink=sink)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("it failed", pod="p")
    [line] = lines(sink)
    record = msgspec.json.decode(line)
    assert "RuntimeError: boom" in record["exception"]
    assert record["msg"] == "it failed"


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_secrets_are_scrubbed_from_message_fields_and_tracebacks(log_format: str) -> None:
    sink = io.StringIO()
    configure_logging(sink=sink, log_format=log_format)  # type: ignore[arg-type]
    redact("sk-flat-secret-1")
    try:
        raise ValueError("key sk-flat-secret-1 refused")
    except ValueError:
        logger.exception("using sk-flat-secret-1", body={"key": "sk-flat-secret-1"})
    text = sink.getvalue()
    assert "sk-flat-secret-1" not in text
    assert text.count("***") >= 3


def test_text_format_is_short_and_human() -> None:
    sink = io.StringIO()
    configure_logging(sink=sink, log_format="text")
    logger.warning("no offers match", pod="default/p")
    [line] = lines(sink)
    assert "WARNING no offers match  pod=default/p" in line
    assert not line.startswith("{")
