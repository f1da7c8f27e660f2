"""VastClient against scripted HTTP answers (``httpx.MockTransport``): request shapes, the
mapping of every status/body form in ``vast-api.md`` §4.3/§7 to an error class, the retry
policy's exact timing (``autojump_clock``), the create-is-not-idempotent rule, and that the
API key never shows up in an error or a log line. The simulator-backed tests are in
``test_client_sim.py``."""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
import trio
from loguru import logger

from vk_trio.errors import PermanentError, TemporaryError
from vk_trio.retry import Backoff
from vk_trio.vast import (
    CreatedInstance,
    CreateInstance,
    CreateOutcomeUnknown,
    InstanceNotFound,
    InsufficientCredit,
    OfferGone,
    Pacer,
    RateLimited,
    RetryPolicy,
    VastAuthError,
    VastClient,
    VastError,
    VastInvalidRequest,
    VastUnavailable,
)

KEY = "vk-test-key-5f0c3a9e1b7d"
BASE = "https://vast.test"
NO_JITTER = RetryPolicy(backoff=Backoff(1.0, 30.0))
ONE_TRY = RetryPolicy(attempts=1, backoff=Backoff(1.0, 30.0))
REQUEST = CreateInstance(image="busybox", disk=10.0, label="vk-default-pod-1")

Reply = httpx.Response | type[Exception]


class Script:
    """A MockTransport handler answering with ``replies`` in order; an exception class is
    raised instead of answering. It fails loudly on a request nobody scripted."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(trio.current_time())
        assert self.replies, f"unexpected request {request.method} {request.url}"
        reply = self.replies.pop(0)
        if isinstance(reply, httpx.Response):
            return reply
        raise reply("scripted failure", request=request)  # type: ignore[call-arg]

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


def ok(payload: Any, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=payload, headers=headers)


def text(body: str, status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, text=body, headers=headers)


@asynccontextmanager
async def client_for(
    script: Script,
    *,
    retry: RetryPolicy = NO_JITTER,
    pacer: Pacer | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[VastClient]:
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(script)) as http,
        VastClient(
            api_key=KEY,
            base_url=BASE,
            http=http,
            pacer=pacer or Pacer(scale=0),
            retry=retry,
            rng=rng,
        ) as client,
    ):
        yield client


# -- request shapes -----------------------------------------------------------------------


async def test_search_posts_the_raw_query_with_auth_headers() -> None:
    query = {"gpu_name": {"eq": "RTX 4090"}, "num_gpus": {"eq": "1"}, "order": [["score", "desc"]]}
    script = Script(ok({"offers": [{"id": 7, "gpu_name": "RTX 4090", "dph_total": 0.4}]}))
    async with client_for(script) as client:
        offers = await client.search_offers(query)
    assert [(o.id, o.gpu_name, o.dph_total) for o in offers] == [(7, "RTX 4090", 0.4)]
    request = script.requests[0]
    assert (request.method, request.url.path) == ("POST", "/api/v0/bundles/")
    assert script.body() == query
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("vk-trio/")


async def test_without_a_key_no_authorization_header_is_sent() -> None:
    script = Script(ok({"offers": []}))
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(script)) as http,
        VastClient(api_key="", base_url=BASE, http=http, pacer=Pacer(scale=0)) as client,
    ):
        await client.search_offers({})
    assert "Authorization" not in script.requests[0].headers


async def test_create_sends_the_request_and_returns_the_contract() -> None:
    script = Script(ok({"success": True, "new_contract": 4242, "instance_api_key": "x" * 8}))
    async with client_for(script) as client:
        created = await client.create_instance(1001, REQUEST)
    assert created == CreatedInstance(instance_id=4242, started=True)
    assert (script.requests[0].method, script.requests[0].url.path) == ("PUT", "/api/v0/asks/1001/")
    body = script.body()
    assert (body["image"], body["label"], body["runtype"], body["client_id"]) == (
        "busybox",
        "vk-default-pod-1",
        "args",
        "me",
    )


async def test_a_sent_create_finishes_even_when_its_caller_is_cancelled() -> None:
    answered = trio.Event()

    async def slow_vast(request: httpx.Request) -> httpx.Response:
        await trio.sleep(0.2)
        answered.set()
        return ok({"success": True, "new_contract": 777})

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(slow_vast)) as http,
        VastClient(api_key=KEY, base_url=BASE, http=http, pacer=Pacer(scale=0)) as client,
    ):
        with trio.CancelScope() as scope:
            scope.deadline = trio.current_time() + 0.05  # cancelled while the request is out
            created = await client.create_instance(1001, REQUEST)
        assert answered.is_set()
        assert created.instance_id == 777  # the caller learns what it rented, then unwinds


async def test_create_failure_with_new_contract_is_a_stopped_instance() -> None:
    script = Script(ok({"success": False, "new_contract": 77, "msg": "created stopped"}))
    async with client_for(script) as client:
        created = await client.create_instance(1, REQUEST)
    assert created == CreatedInstance(instance_id=77, started=False)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (ok({"success": False, "error": "no_such_ask", "msg": "gone"}), OfferGone),
        (ok({"success": False, "error": "invalid_args", "msg": "bad"}), VastInvalidRequest),
        (ok({"success": False, "error": "missing_billing"}), InsufficientCredit),
        (ok({"success": True}), CreateOutcomeUnknown),
        (ok({}), CreateOutcomeUnknown),
        (ok({"msg": "queued"}), CreateOutcomeUnknown),
        (ok({"success": True, "new_contract": 0}), CreateOutcomeUnknown),
        (ok({"success": True, "new_contract": 2**63}), CreateOutcomeUnknown),
    ],
    ids=[
        "no_such_ask",
        "invalid_args",
        "missing_billing",
        "success_without_contract",
        "empty",
        "msg_only",
        "contract_zero",
        "contract_too_big",
    ],
)
async def test_create_answer_without_new_contract(reply: httpx.Response, expected: type) -> None:
    async with client_for(Script(reply)) as client:
        with pytest.raises(expected):
            await client.create_instance(5, REQUEST)


async def test_list_follows_next_token_pages() -> None:
    script = Script(
        ok({"instances": [{"id": 1}, {"id": 2}], "next_token": "t1"}),
        ok({"instances": [{"id": 3}], "next_token": "t2"}),
        ok({"instances": [], "next_token": None}),
    )
    async with client_for(script) as client:
        instances = await client.find_by_label("vk-a")
    assert [i.id for i in instances] == [1, 2, 3]
    params = [dict(r.url.params) for r in script.requests]
    assert all(r.url.path == "/api/v1/instances/" for r in script.requests)
    assert [p.get("after_token") for p in params] == [None, "t1", "t2"]
    assert {p["limit"] for p in params} == {"25"}
    assert json.loads(params[0]["select_filters"]) == {"label": {"eq": "vk-a"}}
    assert json.loads(params[0]["order_by"]) == [{"col": "id", "dir": "asc"}]


async def test_list_refuses_to_page_forever() -> None:
    page = {"instances": [{"id": 1}], "next_token": "same"}
    async with client_for(Script(ok(page), ok(page))) as client:
        with pytest.raises(VastUnavailable, match="repeats"):
            await client.list_instances()


async def test_list_stops_paging_after_max_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vk_trio.vast.client.MAX_PAGES", 3)
    pages = [ok({"instances": [{"id": n}], "next_token": f"t{n}"}) for n in range(1, 4)]
    async with client_for(Script(*pages)) as client:
        with pytest.raises(VastUnavailable, match="more than 3 pages"):
            await client.list_instances()


@pytest.mark.parametrize(
    "page",
    [
        {},
        {"instances": None},
        {"success": False, "error": "invalid_token", "msg": "bad token"},
        {"success": False, "instances": []},
        {"instances": {"id": 1}},
        {"instances": [{"id": 0}]},
    ],
    ids=["empty", "null", "refusal", "success_false", "object", "id_zero"],
)
async def test_a_malformed_list_page_is_an_error_not_zero_instances(page: Any) -> None:
    """Issue 4 invariant 5: "no instances" would make the lost-create lookup and the poller
    believe nothing is rented, and buy again."""
    async with client_for(Script(ok(page)), retry=ONE_TRY) as client:
        with pytest.raises(VastUnavailable):
            await client.list_instances()


@pytest.mark.parametrize(
    "reply",
    [
        ok({"success": True}),
        ok({"success": True, "msg": "destroying"}),
        ok({"success": False, "error": "no_such_instance", "msg": "Instance 5 not found."}, 404),
        ok({"success": False, "error": "not_found", "msg": "Instance not found"}, 404),
    ],
    ids=["ok", "ok_msg", "no_such_instance", "not_found"],
)
async def test_destroy_is_idempotent(reply: httpx.Response) -> None:
    script = Script(reply)
    async with client_for(script) as client:
        await client.destroy_instance(5)
    request = script.requests[0]
    assert (request.method, request.url.path, request.content) == (
        "DELETE",
        "/api/v0/instances/5/",
        b"{}",
    )


@pytest.mark.parametrize("reply", [{}, {"msg": "destroying"}, {"success": None}])
async def test_destroy_without_success_true_is_not_done(reply: Any) -> None:
    """The caller would stop destroying; an unconfirmed destroy is retried instead."""
    async with client_for(Script(ok(reply), ok(reply)), retry=ONE_TRY) as client:
        with pytest.raises(VastUnavailable, match="without success:true"):
            await client.destroy_instance(5)
        with pytest.raises(VastUnavailable):
            await client.destroy_instance(5)


async def test_destroy_refused_is_an_error() -> None:
    script = Script(ok({"success": False, "error": "invalid_args", "msg": "invalid instance_id"}))
    async with client_for(script) as client:
        with pytest.raises(VastInvalidRequest, match="invalid_args"):
            await client.destroy_instance(5)


async def test_request_logs_polls_the_result_url_without_auth(autojump_clock: Any) -> None:
    url = "https://s3.test/instance_logs/abc.log"
    script = Script(
        ok({"success": True, "result_url": url, "msg": "uploading"}),
        text("<Error>NoSuchKey</Error>", 404),
        text("denied", 403),
        text("line 1\nline 2\n", 200),
    )
    async with client_for(script) as client:
        started = trio.current_time()
        logs = await client.request_logs(12, tail=50)
        assert trio.current_time() - started == pytest.approx(3 * 0.3)
    assert logs == "line 1\nline 2\n"
    assert script.requests[0].url.path == "/api/v0/instances/request_logs/12/"
    assert script.body(0) == {"tail": "50"}
    assert [str(r.url) for r in script.requests[1:]] == [url] * 3
    assert all("Authorization" not in r.headers for r in script.requests[1:])


async def test_request_logs_gives_up_after_thirty_polls(autojump_clock: Any) -> None:
    url = "https://s3.test/never.log"
    script = Script(ok({"success": True, "result_url": url}), *[text("", 404)] * 30)
    async with client_for(script) as client:
        with pytest.raises(VastUnavailable, match="not uploaded"):
            await client.request_logs(1)
    assert len(script.requests) == 31


async def test_calls_counts_requests_by_endpoint() -> None:
    script = Script(
        ok({"offers": []}), text("busy", 503), ok({"offers": []}), ok({"success": True})
    )
    async with client_for(script, retry=RetryPolicy(backoff=Backoff(0.0, 30.0))) as client:
        await client.search_offers({})
        await client.search_offers({})
        await client.destroy_instance(1)
        assert client.calls() == {"search": 3, "destroy": 1}


# -- error mapping ------------------------------------------------------------------------


def refusal(code: str, msg: str = "refused") -> dict[str, Any]:
    return {"success": False, "error": code, "msg": msg}


def auth_body(msg: str) -> dict[str, Any]:
    return {"success": False, "error": "auth_error", "msg": msg}


@pytest.mark.parametrize(
    ("reply", "expected", "code"),
    [
        (ok(auth_body("Invalid user key"), 401), VastAuthError, "auth_error"),
        (
            ok({"success": False, "error": "not_authorized", "msg": "scope"}, 403),
            VastAuthError,
            None,
        ),
        (ok(auth_body("Invalid user key"), 404), VastAuthError, "auth_error"),
        (ok({"msg": "Invalid user key"}, 404), VastAuthError, None),
        (ok({"detail": "Session expired. Please log in again."}, 404), VastAuthError, None),
        (
            ok({"success": False, "error": "invalid_args", "msg": "bad"}, 400),
            VastInvalidRequest,
            None,
        ),
        (ok({"success": False, "error": "missing_billing"}, 400), InsufficientCredit, None),
        (text("Not Found", 404), VastInvalidRequest, None),
        (ok({"detail": "API requests too frequent"}, 429), RateLimited, None),
        (text("API requests too frequent: endpoint threshold=2", 429), RateLimited, None),
        (ok({"error": "rate_limit_exceeded", "msg": "threshold=3.0"}, 429), RateLimited, None),
        (ok({"success": False, "error": "server_error"}, 500), VastUnavailable, None),
        (text("<html>Bad Gateway</html>", 502), VastUnavailable, None),
        (text("", 503), VastUnavailable, None),
        (text("{not json", 200), VastUnavailable, None),
        (ok({"offers": "not a list"}), VastUnavailable, None),
        (text("", 301, location="https://elsewhere.test/"), VastInvalidRequest, None),
    ],
    ids=[
        "401",
        "403",
        "404_auth_error",
        "404_invalid_user_key",
        "404_session_expired",
        "400_invalid_args",
        "400_missing_billing",
        "404_plain",
        "429_json_detail",
        "429_plain_text",
        "429_json_error",
        "500",
        "502_html",
        "503_empty",
        "200_garbage",
        "200_wrong_shape",
        "301",
    ],
)
async def test_status_and_body_map_to_an_error_class(
    reply: httpx.Response, expected: type[VastError], code: str | None
) -> None:
    async with client_for(Script(reply), retry=ONE_TRY) as client:
        with pytest.raises(expected) as caught:
            await client.search_offers({})
    assert type(caught.value) is expected
    assert caught.value.status == reply.status_code
    if code:
        assert caught.value.code == code


def test_error_classes_say_temporary_or_permanent() -> None:
    temporary = (RateLimited, VastUnavailable, CreateOutcomeUnknown)
    permanent = (VastAuthError, VastInvalidRequest, InsufficientCredit)
    assert all(issubclass(cls, TemporaryError) for cls in temporary)
    assert all(issubclass(cls, PermanentError) for cls in permanent)
    for cls in (OfferGone, InstanceNotFound):
        assert not issubclass(cls, TemporaryError | PermanentError)


@pytest.mark.parametrize("status", [404, 410])
async def test_create_on_a_sold_offer_is_offer_gone(status: int) -> None:
    body = {
        "success": False,
        "error": "no_such_ask",
        "msg": f"error {status}/3603: no_such_ask Instance type by id 1234567 is not available.",
        "ask_id": 1234567,
    }
    async with client_for(Script(ok(body, status))) as client:
        with pytest.raises(OfferGone) as caught:
            await client.create_instance(1234567, REQUEST)
    assert (caught.value.offer_id, caught.value.status, caught.value.code) == (
        1234567,
        status,
        "no_such_ask",
    )
    assert "is not available" in str(caught.value)


@pytest.mark.parametrize(
    ("failure", "sent"),
    [
        (httpx.ConnectError, False),
        (httpx.ConnectTimeout, False),
        (httpx.PoolTimeout, False),
        (httpx.ReadTimeout, True),
        (httpx.WriteTimeout, True),
        (httpx.ReadError, True),
        (httpx.RemoteProtocolError, True),
    ],
)
async def test_transport_errors_become_vast_unavailable(failure: type, sent: bool) -> None:
    async with client_for(Script(failure), retry=ONE_TRY) as client:
        with pytest.raises(VastUnavailable) as caught:
            await client.search_offers({})
    assert caught.value.request_sent is sent
    assert isinstance(caught.value.__cause__, failure)
    assert failure.__name__ in str(caught.value)


async def test_a_bad_scheme_is_a_permanent_error() -> None:
    async with client_for(Script(httpx.UnsupportedProtocol), retry=ONE_TRY) as client:
        with pytest.raises(VastInvalidRequest):
            await client.search_offers({})


async def test_long_messages_are_truncated() -> None:
    reply = ok({"success": False, "error": "invalid_args", "msg": "x" * 5000}, 400)
    async with client_for(Script(reply)) as client:
        with pytest.raises(VastInvalidRequest) as caught:
            await client.search_offers({})
    assert len(str(caught.value)) <= 300


# -- retries ------------------------------------------------------------------------------


async def test_retries_wait_the_exponential_backoff(autojump_clock: Any) -> None:
    script = Script(text("", 503), httpx.ReadTimeout, text("slow down", 429), ok({"offers": []}))
    async with client_for(script) as client:
        assert await client.search_offers({}) == []
    gaps = [b - a for a, b in zip(script.times, script.times[1:], strict=False)]
    assert gaps == [1.0, 2.0, 4.0]


async def test_jitter_is_drawn_from_the_injected_rng(autojump_clock: Any) -> None:
    policy = RetryPolicy(backoff=Backoff(2.0, 30.0, factor=3.0, jitter=0.5))
    expected_rng = random.Random(7)
    expected = [policy.backoff.delay(n, expected_rng) for n in (1, 2)]
    script = Script(text("", 502), text("", 502), ok({"offers": []}))
    async with client_for(script, retry=policy, rng=random.Random(7)) as client:
        started = trio.current_time()
        await client.search_offers({})
        assert trio.current_time() - started == pytest.approx(sum(expected))
    assert expected != [2.0, 6.0]  # the jitter really moved them


async def test_retry_after_is_honoured_up_to_sixty_seconds(autojump_clock: Any) -> None:
    script = Script(
        text("", 429, **{"Retry-After": "7"}),
        text("", 429, **{"Retry-After": "600"}),  # too long: the backoff (2 s) applies
        ok({"offers": []}),
    )
    async with client_for(script) as client:
        started = trio.current_time()
        await client.search_offers({})
        assert trio.current_time() - started == 7.0 + 2.0


async def test_exhausted_retries_raise_with_the_next_delay(autojump_clock: Any) -> None:
    script = Script(*[text("", 503)] * 3)
    async with client_for(
        script, retry=RetryPolicy(attempts=3, backoff=Backoff(1.0, 30.0))
    ) as client:
        started = trio.current_time()
        with pytest.raises(VastUnavailable) as caught:
            await client.list_instances()
        assert trio.current_time() - started == 1.0 + 2.0
    assert caught.value.delay == 4.0
    assert len(script.requests) == 3


async def test_rate_limited_after_retries_carries_retry_after(autojump_clock: Any) -> None:
    script = Script(*[text("", 429, **{"Retry-After": "5"})] * 2)
    async with client_for(
        script, retry=RetryPolicy(attempts=2, backoff=Backoff(1.0, 30.0))
    ) as client:
        with pytest.raises(RateLimited) as caught:
            await client.destroy_instance(1)
    assert (caught.value.delay, caught.value.retry_after) == (5.0, 5.0)


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(1)
    exact = Backoff(1.0, 30.0, factor=10.0)
    assert [exact.delay(n, rng) for n in (1, 2, 3, 4)] == [1.0, 10.0, 30.0, 30.0]
    jittered = Backoff(1.0, 30.0, factor=10.0, jitter=0.5)
    assert all(0.5 <= jittered.delay(n, rng) <= 30.0 for n in range(1, 50))
    assert exact.delay(10_000) == 30.0  # no overflow however long the outage


@pytest.mark.parametrize(
    "bad",
    [
        {"first": -1.0, "cap": 1.0},
        {"first": 1.0, "cap": 1.0, "factor": 0.5},
        {"first": 1.0, "cap": 1.0, "jitter": 1.5},
        {"first": 2.0, "cap": 1.0},
    ],
)
def test_nonsense_backoffs_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Backoff(**bad)


def test_a_retry_policy_needs_one_attempt() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


async def test_search_quota_is_not_retried(autojump_clock: Any) -> None:
    reset = time.time() + 500
    reply = ok(
        {"error": "search_quota_exceeded", "msg": "daily quota"},
        429,
        **{"X-RateLimit-Reset": str(reset)},
    )
    script = Script(reply)
    async with client_for(script) as client:
        with pytest.raises(RateLimited) as caught:
            await client.search_offers({})
    assert len(script.requests) == 1
    assert 490 < caught.value.delay <= 500


@pytest.mark.parametrize("reset", ["inf", "1e400", "nan", "soon"])
async def test_search_quota_with_a_nonsense_reset_waits_the_default(reset: str) -> None:
    reply = ok({"error": "search_quota_exceeded"}, 429, **{"X-RateLimit-Reset": reset})
    async with client_for(Script(reply)) as client:
        with pytest.raises(RateLimited) as caught:
            await client.search_offers({})
    assert caught.value.delay == 3600.0


# -- create is not idempotent -------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        text("", 500),
        text("<html>502</html>", 502),
        text("", 503),
        httpx.ReadTimeout,
        httpx.RemoteProtocolError,
        text("{garbage", 200),
    ],
    ids=["500", "502", "503", "read_timeout", "dropped", "200_garbage"],
)
async def test_create_is_not_retried_once_it_may_have_been_processed(failure: Reply) -> None:
    script = Script(failure, ok({"success": True, "new_contract": 1}))
    async with client_for(script) as client:
        with pytest.raises(CreateOutcomeUnknown) as caught:
            await client.create_instance(31, REQUEST)
    assert len(script.requests) == 1
    assert (caught.value.offer_id, caught.value.label) == (31, REQUEST.label)
    assert isinstance(caught.value, TemporaryError)


@pytest.mark.parametrize(
    "failure",
    [text("too frequent", 429), httpx.ConnectError, httpx.ConnectTimeout],
    ids=["429", "connect_error", "connect_timeout"],
)
async def test_create_is_retried_when_it_was_never_processed(
    failure: Reply, autojump_clock: Any
) -> None:
    script = Script(failure, ok({"success": True, "new_contract": 8}))
    async with client_for(script) as client:
        created = await client.create_instance(31, REQUEST)
    assert created.instance_id == 8
    assert len(script.requests) == 2


async def test_create_that_never_connected_is_not_outcome_unknown(autojump_clock: Any) -> None:
    script = Script(*[httpx.ConnectError] * 2)
    async with client_for(
        script, retry=RetryPolicy(attempts=2, backoff=Backoff(1.0, 30.0))
    ) as client:
        with pytest.raises(VastUnavailable) as caught:
            await client.create_instance(31, REQUEST)
    assert type(caught.value) is VastUnavailable
    assert caught.value.request_sent is False


# -- pacing -------------------------------------------------------------------------------


async def test_client_requests_go_through_the_pacer(autojump_clock: Any) -> None:
    script = Script(*[ok({"success": True, "new_contract": n}) for n in range(1, 4)])
    async with client_for(script, pacer=Pacer(scale=1.0)) as client, trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(client.create_instance, 1, REQUEST)
    assert [t - script.times[0] for t in script.times] == [0.0, 4.5, 9.0]


# -- the API key stays secret -------------------------------------------------------------


@contextmanager
def captured_logs() -> Iterator[list[str]]:
    lines: list[str] = []
    handler = logger.add(lambda m: lines.append(str(m)), level="DEBUG", serialize=True)
    try:
        yield lines
    finally:
        logger.remove(handler)


async def test_the_api_key_never_appears_in_errors_or_logs(autojump_clock: Any) -> None:
    echo = {"success": False, "error": "auth_error", "msg": f"Invalid user key {KEY}"}
    failing: list[tuple[Reply, Callable[[VastClient], Any]]] = [
        (ok(echo, 401), lambda c: c.search_offers({})),
        (text(f"Authorization: Bearer {KEY}", 429), lambda c: c.find_by_label("x")),
        (text("", 503), lambda c: c.create_instance(1, REQUEST)),
        (httpx.ReadTimeout, lambda c: c.list_instances()),
        (httpx.ConnectError, lambda c: c.destroy_instance(1)),
        (
            ok({"success": False, "error": "no_such_ask"}, 404),
            lambda c: c.create_instance(2, REQUEST),
        ),
        (text("{garbage", 200), lambda c: c.destroy_instance(1)),
    ]
    errors: list[BaseException] = []
    with captured_logs() as lines:
        for reply, call in failing:
            async with client_for(Script(reply), retry=ONE_TRY) as client:
                assert KEY not in repr(client)
                with pytest.raises(VastError) as caught:
                    await call(client)
                errors.append(caught.value)
        async with client_for(Script(text("", 502), ok({"offers": []}))) as client:
            await client.search_offers({})
    assert len(errors) == len(failing)
    for error in errors:
        for shown in (str(error), repr(error), str(error.__cause__), repr(error.args)):
            assert KEY not in shown
    assert lines, "expected debug/warning lines"
    assert not [line for line in lines if KEY in line]
