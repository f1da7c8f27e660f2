"""The kubelet API end to end: the real kubectl → the API stand-in → HTTPS → the kubelet server.

The stand-in proxies as a real API server does (its kubelet-client certificate, verifying the
kubelet's serving certificate against its CA), so these pass only if TLS, client-certificate
authentication, SubjectAccessReview, routing and the log semantics all work.
"""

from __future__ import annotations

import datetime as _dt
import os
import ssl

import httpx
import msgspec
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.kubelet.conftest import Kubelet
from tests.kubelet.fakes import NODE
from tests.plugins.kube_sim import KUBECTL


async def test_kubectl_logs_shows_the_containers_output(kubelet: Kubelet) -> None:
    container = kubelet.pod("vllm")
    container.append("Pulling image vllm/vllm-openai:v0.6.3", "INFO: Uvicorn running on :8000")
    _, out, _ = await kubelet.kubectl("logs", "vllm")
    assert out == "Pulling image vllm/vllm-openai:v0.6.3\nINFO: Uvicorn running on :8000\n"


async def test_kubectl_logs_tail_limit_and_timestamps(kubelet: Kubelet) -> None:
    container = kubelet.pod("p")
    container.append(*(f"line {i}" for i in range(10)))
    _, out, _ = await kubelet.kubectl("logs", "p", "--tail=3")
    assert out.splitlines() == ["line 7", "line 8", "line 9"]
    _, out, _ = await kubelet.kubectl("logs", "p", "--limit-bytes=9")
    assert out == "line 0\nli"
    _, out, _ = await kubelet.kubectl("logs", "p", "--timestamps", "--tail=1")
    stamp, text = out.strip().split(" ", 1)
    seen = _dt.datetime.fromisoformat(stamp.replace("000Z", "+00:00"))
    assert text == "line 9"
    assert abs((_dt.datetime.now(_dt.UTC) - seen).total_seconds()) < 30


async def test_kubectl_logs_since_only_shows_lines_seen_after_the_cutoff(kubelet: Kubelet) -> None:
    container = kubelet.pod("p")
    container.append("old line")
    await kubelet.kubectl("logs", "p")  # the node sees "old line" now
    await trio.sleep(1.2)
    container.append("new line")
    _, out, _ = await kubelet.kubectl("logs", "p", "--since=1s")
    assert out == "new line\n"


async def test_kubectl_logs_previous_shows_the_replaced_instances_logs(kubelet: Kubelet) -> None:
    container = kubelet.pod("p")
    container.previous_text = "CUDA error: out of memory\n"
    container.append("restarted")
    _, out, _ = await kubelet.kubectl("logs", "p", "--previous")
    assert out == "CUDA error: out of memory\n"
    kubelet.pod("q")
    code, _, err = await kubelet.kubectl("logs", "q", "--previous", check=False)
    assert code != 0
    assert 'previous terminated container "main" in pod "q" not found' in err


async def test_kubectl_logs_before_an_instance_exists_says_what_the_pod_waits_for(
    kubelet: Kubelet,
) -> None:
    container = kubelet.pod("p")
    container.waiting = "no instance yet: waiting for an offer"
    code, out, err = await kubelet.kubectl("logs", "p", check=False)
    assert code != 0 and out == ""
    assert "Error from server (BadRequest)" in err
    assert "waiting to start: no instance yet: waiting for an offer" in err


async def test_kubectl_logs_follow_streams_new_lines_and_ends_with_the_container(
    kubelet: Kubelet,
) -> None:
    container = kubelet.pod("p")
    container.append("first")
    env = {**os.environ, "KUBECONFIG": str(kubelet.kubeconfig), "HOME": str(kubelet.home)}
    process = await trio.lowlevel.open_process(
        [str(KUBECTL), "logs", "-f", "p"], env=env, stdout=-1
    )
    stdout = process.stdout
    assert stdout is not None
    try:
        seen = b""

        async def read_until(text: bytes) -> None:
            nonlocal seen
            with trio.fail_after(15):
                while text not in seen:
                    chunk = await stdout.receive_some(4096)
                    assert chunk, f"kubectl ended early; got {seen!r}"
                    seen += chunk

        await read_until(b"first\n")
        container.append("second", "third")
        await read_until(b"third\n")
        assert seen == b"first\nsecond\nthird\n"
        container.append("last words")
        container.running = False  # the pod ended: the stream ends, and so does kubectl
        with trio.fail_after(15):
            await process.wait()
        rest = b""
        while chunk := await stdout.receive_some(4096):
            rest += chunk
        assert seen + rest == b"first\nsecond\nthird\nlast words\n"
        assert process.returncode == 0
    finally:
        if process.returncode is None:
            process.kill()


async def test_a_follower_that_leaves_stops_the_fetching(kubelet: Kubelet) -> None:
    container = kubelet.pod("p")
    container.append("hello")
    env = {**os.environ, "KUBECONFIG": str(kubelet.kubeconfig), "HOME": str(kubelet.home)}
    process = await trio.lowlevel.open_process(
        [str(KUBECTL), "logs", "-f", "p"], env=env, stdout=-1
    )
    assert process.stdout is not None
    with trio.fail_after(15):
        assert await process.stdout.receive_some(4096) == b"hello\n"
    process.kill()
    await process.wait()
    await trio.sleep(1.0)  # the stand-in and the kubelet notice the hang-up
    fetches = container.fetches
    await trio.sleep(1.0)  # ten follow intervals
    assert container.fetches == fetches


async def test_stats_summary_through_the_node_proxy(kubelet: Kubelet) -> None:
    kubelet.pod("p")
    _, out, _ = await kubelet.kubectl("get", "--raw", f"/api/v1/nodes/{NODE}/proxy/stats/summary")
    summary = msgspec.json.decode(out)
    assert summary["node"]["nodeName"] == NODE
    [pod] = summary["pods"]
    assert pod["podRef"]["name"] == "p"
    [container] = pod["containers"]
    assert container["cpu"]["usageNanoCores"] == 250_000_000
    assert container["memory"]["workingSetBytes"] == 3 * 2**30
    assert container["accelerators"][0]["dutyCycle"] == 87


async def test_resource_metrics_for_metrics_server(kubelet: Kubelet) -> None:
    """What metrics-server scrapes for ``kubectl top``: cumulative CPU that grows at the
    instance's rate, and the working set, per container, pod and node."""
    kubelet.pod("p")
    path = f"/api/v1/nodes/{NODE}/proxy/metrics/resource"
    _, first, _ = await kubelet.kubectl("get", "--raw", path)
    await trio.sleep(2.0)
    _, second, _ = await kubelet.kubectl("get", "--raw", path)

    def values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    before, after = values(first), values(second)
    labels = (("container", "main"), ("namespace", "default"), ("pod", "p"))
    cpu = ("container_cpu_usage_seconds_total", labels)
    grown = after[cpu] - before[cpu]
    assert 0.25 * 1.5 < grown < 0.25 * 4  # 250 millicores for about two seconds
    assert after[("container_memory_working_set_bytes", labels)] == 3 * 2**30
    assert after[("node_memory_working_set_bytes", ())] == 3 * 2**30
    assert after[("scrape_error", ())] == 0


async def test_pods_healthz_and_metrics_through_the_node_proxy(kubelet: Kubelet) -> None:
    kubelet.pod("p")
    _, out, _ = await kubelet.kubectl("get", "--raw", f"/api/v1/nodes/{NODE}/proxy/pods")
    pods = msgspec.json.decode(out)
    assert pods["kind"] == "PodList"
    assert [item["metadata"]["name"] for item in pods["items"]] == ["p"]
    _, out, _ = await kubelet.kubectl("get", "--raw", f"/api/v1/nodes/{NODE}/proxy/healthz")
    assert out == "ok"
    _, out, _ = await kubelet.kubectl("get", "--raw", f"/api/v1/nodes/{NODE}/proxy/metrics")
    assert out.startswith("# metrics")
    reviewed = {(r["resourceAttributes"]["subresource"]) for r in kubelet.sim.node_api.reviews}
    assert reviewed == {"proxy", "metrics"}


def _verifying(kubelet: Kubelet) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=kubelet.sim.node_api.ca.cert_pem.decode())


async def test_the_port_refuses_a_request_without_credentials(kubelet: Kubelet) -> None:
    async with httpx.AsyncClient(verify=_verifying(kubelet)) as client:
        for path in ("/healthz", "/pods", "/containerLogs/default/p/main", "/metrics"):
            response = await client.get(kubelet.url + path)
            assert response.status_code == 401, path
            assert response.text == "Unauthorized"
        response = await client.get(kubelet.url + "/pods", headers={"Authorization": "Bearer nope"})
        assert response.status_code == 401


async def test_a_token_without_nodes_proxy_is_forbidden_and_one_with_it_is_not(
    kubelet: Kubelet,
) -> None:
    kubelet.pod("p").append("x")
    api = kubelet.sim.node_api
    api.add_token("token-viewer", "viewer")
    api.add_token("token-logs", "log-reader")
    api.grant("log-reader", "get", "nodes/proxy")
    async with httpx.AsyncClient(verify=_verifying(kubelet)) as client:
        url = kubelet.url + "/containerLogs/default/p/main"
        denied = await client.get(url, headers={"Authorization": "Bearer token-viewer"})
        assert denied.status_code == 403
        assert denied.text == (
            "Forbidden (user=viewer, verb=get, resource=nodes, subresource=proxy)"
        )
        allowed = await client.get(url, headers={"Authorization": "Bearer token-logs"})
        assert (allowed.status_code, allowed.text) == (200, "x\n")
        stats = await client.get(
            kubelet.url + "/stats/summary", headers={"Authorization": "Bearer token-logs"}
        )
        assert stats.status_code == 403  # nodes/stats was not granted
    reviews = [r for r in api.reviews if r["user"] in ("viewer", "log-reader")]
    assert len(reviews) == 3
    assert reviews[0]["resourceAttributes"] == {
        "verb": "get",
        "resource": "nodes",
        "subresource": "proxy",
        "name": NODE,
    }


async def test_reviews_are_cached_so_a_client_is_not_reviewed_per_request(kubelet: Kubelet) -> None:
    kubelet.pod("p").append("x")
    kubelet.sim.node_api.add_token("t-cached", "reader")
    kubelet.sim.node_api.grant("reader", "get", "nodes/proxy")
    async with httpx.AsyncClient(verify=_verifying(kubelet)) as client:
        for _ in range(5):
            response = await client.get(
                kubelet.url + "/containerLogs/default/p/main",
                headers={"Authorization": "Bearer t-cached"},
            )
            assert response.status_code == 200
    token_reviews = kubelet.sim.requests["POST /apis/authentication.k8s.io/v1/tokenreviews"]
    access_reviews = [r for r in kubelet.sim.node_api.reviews if r["user"] == "reader"]
    assert (token_reviews, len(access_reviews)) == (1, 1)
