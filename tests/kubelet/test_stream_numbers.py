"""Numbers for the streaming path, printed (run with ``pytest -m measure -s``; deselected
otherwise, as they take a minute and only mean something on a quiet machine):

- ``kubectl exec pod -- true``: the round trip, median and worst of 10 (kubectl's own start
  included, as a user sees it);
- ``kubectl port-forward``: MB/s of a 64 MiB download from the pod over loopback;
- the node's event-loop stall (``/debug/vars``, the health watchdog's per-second longest
  loop turn) while 50 exec sessions stream 4 MiB of output each at once.

Everything here shares one process and one Trio loop: the node, the API stand-in (which
splices every byte too) and the Vast simulator; the agent and kubectl are processes of
their own. So the stall is an upper bound for a node alone.
"""

from __future__ import annotations

import statistics
import time

import httpx
import pytest
import trio

from tests.kubelet.conftest import Kubectl, free_port
from tests.kubelet.test_agent_streams import kubectl as kubectl  # the agent pod fixture

pytestmark = pytest.mark.measure

SESSIONS = 50
OUTPUT = 4 * 2**20
DOWNLOAD = 64 * 2**20


async def test_print_exec_round_trip_forward_throughput_and_loop_stall(
    kubectl: Kubectl, nursery: trio.Nursery
) -> None:
    trips = []
    for _ in range(10):
        started = time.perf_counter()
        assert (await kubectl("exec", "shell", "--", "true"))[0] == 0
        trips.append(time.perf_counter() - started)
    print(
        f"\nkubectl exec -- true: median {statistics.median(trips) * 1000:.0f} ms, "
        f"worst {max(trips) * 1000:.0f} ms"
    )

    make = f"head -c {DOWNLOAD} /dev/zero > /tmp/www-8000/big"
    assert (await kubectl("exec", "shell", "--", "sh", "-c", make))[0] == 0
    local = free_port()
    ready = trio.Event()
    nursery.start_soon(kubectl.port_forward, "shell", f"{local}:8000", ready)
    with trio.fail_after(30):
        await ready.wait()
    received = 0
    started = time.perf_counter()
    async with (
        httpx.AsyncClient(timeout=60) as client,
        client.stream("GET", f"http://127.0.0.1:{local}/big") as response,
    ):
        async for chunk in response.aiter_raw():
            received += len(chunk)
    seconds = time.perf_counter() - started
    assert received == DOWNLOAD
    print(f"port-forward: {DOWNLOAD / 2**20 / seconds:.1f} MiB/s ({seconds:.2f} s for 64 MiB)")

    async def one(outputs: list[int]) -> None:
        code, out, _ = await kubectl(
            "exec", "shell", "--", "head", "-c", str(OUTPUT), "/dev/zero", within=300
        )
        assert code == 0
        outputs.append(len(out))

    outputs: list[int] = []
    started = time.perf_counter()
    async with trio.open_nursery() as sessions:
        for _ in range(SESSIONS):
            sessions.start_soon(one, outputs)
    seconds = time.perf_counter() - started
    assert outputs == [OUTPUT] * SESSIONS
    window = int(seconds) + 1
    async with httpx.AsyncClient() as client:
        stats = (await client.get(f"{kubectl.health_url}/debug/vars?stall_seconds={window}")).json()
    stall = stats["loop_stall"]
    print(
        f"{SESSIONS} concurrent exec sessions x {OUTPUT // 2**20} MiB: {seconds:.1f} s; "
        f"loop stall per second p50 {stall['p50_s'] * 1000:.0f} ms, "
        f"p99 {stall['p99_s'] * 1000:.0f} ms, max {stall['max_s'] * 1000:.0f} ms "
        f"over {stall['samples']} s"
    )
