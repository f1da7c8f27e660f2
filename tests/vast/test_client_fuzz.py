"""Issue 4, bad input: the real ``VastClient``, over a real socket, against malformed answers.

Each example starts a one-answer server on 127.0.0.1 and makes one call (search, create,
list or destroy) to it. The answer is a valid document with fields deleted or replaced
(nulls where objects are expected, wrong types, huge numbers), any JSON, non-JSON, an HTML
error page or a truncated body, under any status; or, from a raw TCP server, a response cut
off mid-body, garbage instead of HTTP, or a connection closed without a word.

Whatever comes back, the call ends in a valid model or a typed ``VastError`` with a clear
message, never a raw msgspec/KeyError/TypeError/ValueError; and the money rules hold:

- a list that is not a well-formed success is an error, never "zero instances" (invariant 5);
- a create whose answer is unreadable is ``CreateOutcomeUnknown`` and is not sent twice;
- destroy's "done" comes only from an answer that says so.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vk_trio.http_server import Request, Response, serve_http
from vk_trio.retry import Backoff
from vk_trio.vast import (
    CreatedInstance,
    CreateInstance,
    CreateOutcomeUnknown,
    Instance,
    Offer,
    Pacer,
    RetryPolicy,
    VastClient,
    VastError,
)
from vk_trio.vast.errors import MAX_MESSAGE

OFFER: dict[str, Any] = {
    "id": 7,
    "machine_id": 3,
    "gpu_name": "RTX 3060",
    "num_gpus": 1,
    "gpu_ram": 12288,
    "dph_total": 0.2,
    "min_bid": 0.1,
    "reliability": 0.99,
    "geolocation": "Texas, US",
    "verification": "verified",
    "cuda_max_good": 12.4,
    "disk_space": 100.0,
    "rentable": True,
    "rented": False,
}
INSTANCE: dict[str, Any] = {
    "id": 42,
    "actual_status": "running",
    "label": "vk-node/default/p/uid",
    "public_ipaddr": "1.2.3.4\n",
    "ports": {"8000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "41201"}]},
    "extra_env": [["FOO", "bar"]],
    "start_date": 1.7e9,
}
VALID: dict[str, Any] = {
    "search": {"offers": [OFFER, {**OFFER, "id": 8}]},
    "create": {"success": True, "new_contract": 4242, "instance_api_key": "k"},
    "list": {"success": True, "instances_found": 1, "next_token": None, "instances": [INSTANCE]},
    "destroy": {"success": True},
}
REQUEST = CreateInstance(image="nginx:1.27", disk=20.0, label="vk-node/default/p/uid")
MISSING_CODES = {"no_such_instance", "not_found", "invalid_id"}

Call = Callable[[VastClient], Awaitable[Any]]
CALLS: dict[str, Call] = {
    "search": lambda client: client.search_offers({"limit": 5}),
    "create": lambda client: client.create_instance(7, REQUEST),
    "list": lambda client: client.list_instances(),
    "destroy": lambda client: client.destroy_instance(42),
}

# --------------------------------------------------------------------------------------------
# Answers

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**63, 10**30, 1e308, -1e308, 1e-300, ""]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.just({}),
    st.just([]),
    st.just([None]),
    st.just({"id": None}),
)


def paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path inside ``document``."""
    found: list[tuple[Any, ...]] = []
    items: list[tuple[Any, Any]] = []
    if isinstance(document, dict):
        items = list(document.items())
    elif isinstance(document, list):
        items = list(enumerate(document))
    for key, value in items:
        found.append((*prefix, key))
        found.extend(paths(value, (*prefix, key)))
    return found


def copy(document: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(document))


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> Any:
    """``document`` with up to four fields deleted or replaced by junk."""
    doc = copy(document)
    for _ in range(draw(st.integers(0, 4))):
        where = paths(doc)
        if not where:
            break
        path = draw(st.sampled_from(where))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy(draw(JUNK))  # st.just({}) is one shared object
    return doc


JSON = st.recursive(
    JUNK,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)
HTML = b"<html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>"


def bodies(endpoint: str) -> st.SearchStrategy[bytes]:
    valid = msgspec.json.encode(VALID[endpoint])
    return st.one_of(
        mutated(VALID[endpoint]).map(msgspec.json.encode),
        mutated(VALID[endpoint]).map(msgspec.json.encode),
        JSON.map(msgspec.json.encode),
        st.just(valid),
        st.integers(0, len(valid) - 1).map(lambda cut: valid[:cut]),  # truncated JSON
        st.sampled_from([HTML, b"", b"null", b"OK", b"\xff\xfe\x00", b'{"offers": NaN}']),
        st.binary(max_size=40),
    )


STATUSES = st.one_of(
    st.just(200),
    st.sampled_from([201, 204, 301, 302, 400, 401, 403, 404, 410, 418, 429, 500, 502, 503]),
    st.integers(200, 599),
)
HEADERS = st.lists(
    st.sampled_from(
        [
            ("Content-Type", "application/json"),
            ("Content-Type", "text/html; charset=utf-8"),
            ("Retry-After", "0"),
            ("Retry-After", "nan"),
            ("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("X-RateLimit-Reset", "1e400"),
            ("Location", "/elsewhere"),
        ]
    ),
    max_size=3,
    unique=True,
)


class Answer(msgspec.Struct, frozen=True):
    """What the server sends: a well-formed HTTP response, or ``raw`` bytes then a close."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    raw: bool = False

    def wire(self) -> bytes:
        """For ``raw``: a head promising more body than is sent, or garbage, or nothing."""
        if self.status % 3 == 0:
            return self.body
        head = f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(self.body) + 10}\r\n\r\n"
        return head.encode() + self.body


@st.composite
def answers(draw: st.DrawFn, endpoint: str) -> Answer:
    return Answer(
        status=draw(STATUSES),
        body=draw(bodies(endpoint)),
        headers=tuple(draw(HEADERS)),
        raw=draw(st.integers(0, 5)) == 0,
    )


# --------------------------------------------------------------------------------------------
# One call against one answer, over a real socket


async def exchange(endpoint: str, answer: Answer) -> tuple[Any, int]:
    """The call's result (or the exception it raised) and how many requests reached us."""
    requests = 0

    async def handler(request: Request) -> Response:
        nonlocal requests
        requests += 1
        return Response(status=answer.status, body=answer.body, headers=list(answer.headers))

    async def raw_handler(stream: trio.SocketStream) -> None:
        nonlocal requests
        requests += 1
        async with stream:
            await stream.receive_some(65536)
            await stream.send_all(answer.wire())

    async with trio.open_nursery() as nursery:
        if answer.raw:
            listeners = await nursery.start(trio.serve_tcp, raw_handler, 0)
            url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        else:
            url = await nursery.start(serve_http, handler)
        retry = RetryPolicy(attempts=2, backoff=Backoff(0.0, 30.0), max_retry_after=0.0)
        async with VastClient(
            api_key="fuzz-key-0123456789",
            base_url=url,
            pacer=Pacer(scale=0),
            retry=retry,
            rng=random.Random(0),
        ) as client:
            try:
                with trio.fail_after(10):
                    result: Any = await CALLS[endpoint](client)
            except VastError as error:
                result = error
        nursery.cancel_scope.cancel()
    return result, requests


def body_json(answer: Answer) -> Any:
    try:
        return msgspec.json.decode(answer.body)
    except msgspec.DecodeError:
        return msgspec.UNSET


def says(answer: Answer, **fields: Any) -> bool:
    """Whether the answer is a complete HTTP 2xx JSON object with these field values."""
    document = body_json(answer)
    return (
        not answer.raw
        and 200 <= answer.status < 300
        and isinstance(document, dict)
        and all(key in document and document[key] == value for key, value in fields.items())
    )


def missing(answer: Answer) -> bool:
    """Whether the answer is an error status whose Vast code means "no such instance"."""
    document = body_json(answer)
    return (
        not answer.raw
        and not 200 <= answer.status < 300
        and answer.status not in (401, 403, 429)
        and answer.status < 500
        and isinstance(document, dict)
        and document.get("error") in MISSING_CODES
    )


def check(endpoint: str, answer: Answer, result: Any, requests: int) -> None:
    if isinstance(result, VastError):
        assert str(result) and len(str(result)) <= MAX_MESSAGE, result
        assert "fuzz-key" not in str(result)
    if endpoint == "search" and not isinstance(result, VastError):
        assert all(isinstance(offer, Offer) and offer.id >= 1 for offer in result)
    elif endpoint == "create":
        if answer.status != 429:
            assert requests == 1, "a create is never repeated blindly"
        if isinstance(result, CreatedInstance):
            assert says(answer) and 1 <= result.instance_id < 2**63
        elif says(answer) and not isinstance(result, CreateOutcomeUnknown):
            assert body_json(answer).get("success") is False, result  # an explicit refusal
    elif endpoint == "list" and not isinstance(result, VastError):
        assert says(answer), "a list that is not a well-formed success must be an error"
        assert all(isinstance(instance, Instance) for instance in result)
        assert result or says(answer, instances=[]), "never 'zero instances' by accident"
        assert body_json(answer).get("success") is not False
    elif endpoint == "destroy" and not isinstance(result, VastError):
        assert result is None and (says(answer, success=True) or missing(answer))


# --------------------------------------------------------------------------------------------
# The tests: one per endpoint, so a failure names it


def fuzz(endpoint: str) -> Callable[[Answer], None]:
    def run(answer: Answer) -> None:
        result, requests = trio.run(exchange, endpoint, answer)
        check(endpoint, answer, result, requests)

    return run


VAST_FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@VAST_FUZZ
@given(answer=answers("search"))
@example(answer=Answer(200, b'{"offers": [{"id": 7, "dph_total": 1e400}]}'))
@example(answer=Answer(200, b'{"offers": null}'))
def test_search_answers(answer: Answer) -> None:
    fuzz("search")(answer)


@VAST_FUZZ
@given(answer=answers("create"))
@example(answer=Answer(200, b"{}"))
@example(answer=Answer(200, b'{"success": true, "new_contract": 0}'))
@example(answer=Answer(200, b'{"success": true, "new_contract": 4242}', raw=True))
@example(answer=Answer(200, HTML))
def test_create_answers(answer: Answer) -> None:
    fuzz("create")(answer)


@VAST_FUZZ
@given(answer=answers("list"))
@example(answer=Answer(200, b"{}"))
@example(answer=Answer(200, b'{"instances": null}'))
@example(answer=Answer(200, b'{"success": false, "error": "invalid_token"}'))
@example(answer=Answer(200, b'{"instances": [], "next_token": "again"}'))
def test_list_answers(answer: Answer) -> None:
    fuzz("list")(answer)


@VAST_FUZZ
@given(answer=answers("destroy"))
@example(answer=Answer(200, b"{}"))
@example(answer=Answer(404, b'{"success": false, "error": "no_such_instance"}'))
def test_destroy_answers(answer: Answer) -> None:
    fuzz("destroy")(answer)
