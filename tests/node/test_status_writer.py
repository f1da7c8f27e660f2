"""The status writer: the newest status per pod, one write per pod at a time, never stops."""

from __future__ import annotations

import trio

from vk_trio.node.status_writer import StatusWriter, Write


async def test_a_queued_status_is_replaced_by_the_newest(nursery: trio.Nursery) -> None:
    writer = StatusWriter(workers=1)
    written: list[str] = []
    gate = trio.Event()

    async def slow() -> None:
        await gate.wait()
        written.append("other pod")

    def status(name: str) -> Write:
        async def write() -> None:
            written.append(name)

        return write

    writer.submit("b", slow)  # keeps the only worker busy while "a" changes three times
    for name in ("searching", "buying", "provisioning"):
        writer.submit("a", status(name))
    await nursery.start(writer.run)
    await trio.testing.wait_all_tasks_blocked()
    gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert written == ["other pod", "provisioning"]


async def test_one_pods_writes_never_overlap(nursery: trio.Nursery) -> None:
    writer = StatusWriter(workers=4)
    await nursery.start(writer.run)
    active = 0
    order: list[int] = []
    gates = [trio.Event(), trio.Event()]

    def status(number: int) -> Write:
        async def write() -> None:
            nonlocal active
            active += 1
            assert active == 1, "two writes of one pod at once"
            await gates[number].wait()
            order.append(number)
            active -= 1

        return write

    writer.submit("a", status(0))
    await trio.testing.wait_all_tasks_blocked()
    writer.submit("a", status(1))  # while the first is on the wire: it waits, then goes
    await trio.testing.wait_all_tasks_blocked()
    gates[1].set()
    await trio.testing.wait_all_tasks_blocked()
    assert order == []
    gates[0].set()
    await trio.testing.wait_all_tasks_blocked()
    assert order == [0, 1]


async def test_a_failing_write_does_not_stop_the_others(nursery: trio.Nursery) -> None:
    writer = StatusWriter(workers=1)
    await nursery.start(writer.run)
    written: list[str] = []

    async def broken() -> None:
        raise KeyError("a bug in one pod's status")

    async def fine() -> None:
        written.append("b")

    writer.submit("a", broken)
    writer.submit("b", fine)
    await trio.testing.wait_all_tasks_blocked()
    assert written == ["b"]


async def test_the_queue_holds_one_status_per_pod_in_turn(nursery: trio.Nursery) -> None:
    """The bound the docstring promises: however many statuses come while the workers are
    busy, each pod waits with its newest one only, in the turn it first took."""
    writer = StatusWriter(workers=1)
    written: list[tuple[str, int]] = []
    gate = trio.Event()

    async def busy() -> None:
        await gate.wait()

    def status(pod: str, n: int) -> Write:
        async def write() -> None:
            written.append((pod, n))

        return write

    await nursery.start(writer.run)
    writer.submit("busy", busy)
    await trio.testing.wait_all_tasks_blocked()
    pods = [f"p{i}" for i in range(100)]
    for n in range(10):
        for pod in pods:
            writer.submit(pod, status(pod, n))
    gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert written == [(pod, 9) for pod in pods]
