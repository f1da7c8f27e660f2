"""``KubeClient``: status → error mapping, the retry policy (virtual time), streams, time formats.

Pure client tests on ``httpx.MockTransport``; the stand-in tests live next to each verb.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable

import httpx
import msgspec
import pytest
import trio

from vk_trio.errors import PermanentError, TemporaryError
from vk_trio.kube.api import KubeClient, format_micro_time, format_time
from vk_trio.kube.errors import (
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeGone,
    KubeInvalid,
    KubeNotFound,
    KubeServerError,
    KubeUnavailable,
)
from vk_trio.retry import KUBE_CALL, NO_RETRY, RetryPolicy

BACKOFFS = [KUBE_CALL.backoff.delay(n) for n in range(1, KUBE_CALL.attempts)]
"""The waits of the default policy: 0.2 s doubling, five of them."""

Handler = Callable[[httpx.Request], httpx.Response]


def make_client(handler: Handler, *, retry: RetryPolicy = KUBE_CALL) -> KubeClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://kube")
    return KubeClient(http, retry=retry)


def status_body(code: int, reason: str, message: str) -> dict[str, object]:
    return {
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


@pytest.mark.parametrize(
    ("code", "cls", "kind"),
    [
        (404, KubeNotFound, None),
        (409, KubeConflict, None),
        (410, KubeGone, None),
        (422, KubeInvalid, PermanentError),
        (401, KubeForbidden, PermanentError),
        (403, KubeForbidden, PermanentError),
        (400, KubeError, None),
    ],
    ids=["404", "409", "410", "422", "401", "403", "400"],
)
async def test_client_errors_map_and_are_not_retried(
    code: int, cls: type[KubeError], kind: type[Exception] | None
) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(code, json=status_body(code, "Whatever", "the message " + "x" * 999))

    async with make_client(handler) as client:
        with pytest.raises(cls) as info:
            await client.request("GET", "/api/v1/pods")
    assert calls == 1
    assert info.value.status == code
    assert info.value.reason == "Whatever"
    assert "the message" in str(info.value)
    assert len(str(info.value)) <= 256
    if kind is not None:
        assert isinstance(info.value, kind)


async def test_retries_5xx_along_the_backoff_tuple(autojump_clock: trio.testing.MockClock) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls <= 3:
            return httpx.Response(503, text="<html>busy</html>")
        return httpx.Response(200, json={"kind": "Pod", "metadata": {"name": "p"}})

    start = trio.current_time()
    async with make_client(handler) as client:
        result = await client.request("GET", "/api/v1/namespaces/d/pods/p")
    assert result["metadata"]["name"] == "p"
    assert calls == 4
    assert trio.current_time() - start == pytest.approx(sum(BACKOFFS[:3]))


async def test_escalates_when_the_tuple_is_used_up(autojump_clock: trio.testing.MockClock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json=status_body(500, "InternalError", "etcd down"))

    start = trio.current_time()
    async with make_client(handler) as client:
        with pytest.raises(KubeServerError, match="etcd down") as info:
            await client.request("PUT", "/x", json={})
    assert isinstance(info.value, TemporaryError)
    assert trio.current_time() - start == pytest.approx(sum(BACKOFFS))


async def test_429_uses_retry_after_even_for_post(autojump_clock: trio.testing.MockClock) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(429, headers={"Retry-After": "3"}, json={})
        return httpx.Response(201, json={"ok": True})

    start = trio.current_time()
    async with make_client(handler) as client:
        assert await client.request("POST", "/x", json={"a": 1}) == {"ok": True}
    assert trio.current_time() - start == pytest.approx(3.0)


async def test_post_not_retried_after_5xx_or_read_errors() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(502, text="bad gateway")
        raise httpx.ReadError("connection reset", request=request)

    async with make_client(handler) as client:
        with pytest.raises(KubeServerError):
            await client.request("POST", "/x", json={})
        with pytest.raises(KubeUnavailable, match="ReadError"):
            await client.request("POST", "/x", json={})
    assert calls == 2


async def test_connect_errors_are_retried_even_for_post(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(201, json={})

    async with make_client(handler) as client:
        await client.request("POST", "/x", json={})
    assert calls == 3


def test_the_default_schedule_fits_in_a_lease_renewal() -> None:
    assert BACKOFFS == [0.2, 0.4, 0.8, 1.6, 3.2] and sum(BACKOFFS) < 10.0


async def test_no_retries_with_no_retry() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ReadTimeout("slow", request=request)

    async with make_client(handler) as client:
        with pytest.raises(KubeUnavailable) as info:
            await client.request("GET", "/x", retry=NO_RETRY)
    assert calls == 1
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


async def test_request_sends_json_and_content_type() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"")

    async with make_client(handler) as client:
        result = await client.request(
            "patch",
            "/api/v1/nodes/n/status",
            params={"fieldSelector": "a=b"},
            json={"status": {}},
            content_type="application/strategic-merge-patch+json",
        )
    assert result is None
    (request,) = seen
    assert request.method == "PATCH"
    assert request.headers["content-type"] == "application/strategic-merge-patch+json"
    assert request.url.params["fieldSelector"] == "a=b"
    assert msgspec.json.decode(request.content) == {"status": {}}


async def test_stream_lines_splits_chunks_and_maps_open_errors() -> None:
    class Chunks(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b'{"a":'
            yield b"1}\n\n"
            yield b'{"b":2}\n{"c"'
            yield b":3}"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/gone":
            return httpx.Response(410, json=status_body(410, "Expired", "too old"))
        return httpx.Response(200, stream=Chunks())

    async with make_client(handler) as client:
        async with client.stream_lines("/watch", params={"watch": "1"}) as lines:
            got = [line async for line in lines]
        assert got == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
        with pytest.raises(KubeGone, match="too old"):
            async with client.stream_lines("/gone") as lines:
                pass  # pragma: no cover


def test_time_formats() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)
    assert format_micro_time(when) == "2026-01-02T03:04:05.123456Z"
    assert format_micro_time(when.replace(microsecond=0)) == "2026-01-02T03:04:05.000000Z"
    assert format_micro_time(when.replace(microsecond=120)) == "2026-01-02T03:04:05.000120Z"
    assert format_time(when) == "2026-01-02T03:04:05Z"
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert format_time(when.astimezone(plus2)) == "2026-01-02T03:04:05Z"


def test_kube_never_imports_its_siblings_or_kubernetes_eagerly() -> None:
    import ast
    from pathlib import Path

    import vk_trio.kube

    package = Path(vk_trio.kube.__file__).parent
    for module in package.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in tree.body:  # top-level imports only: kubernetes is imported lazily
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(
                    ("vk_trio.vast", "vk_trio.node", "vk_trio.provider", "kubernetes")
                ), f"{module.name} imports {name}"
