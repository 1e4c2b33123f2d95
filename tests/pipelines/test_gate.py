"""The gate between the driver and the workers, without Ray: where a worker group starts, the task runs,
and an abort that frees every waiting worker."""

from __future__ import annotations

import asyncio

from pipelines.gate import TaskGate


def _run(steps) -> object:
    return asyncio.run(steps())


def test_a_group_starts_at_the_first_unregistered_task() -> None:
    async def steps():
        gate = TaskGate(2)
        waiting = asyncio.ensure_future(gate.wait_trained(2, 0.01))  # the driver waiting adds nothing posted
        assert await waiting is None
        return await asyncio.wait_for(gate.next_task(), 1)

    assert _run(steps) == 2


def test_a_restarted_group_waits_until_a_posted_task_is_registered() -> None:
    """A group that died after posting task 0 (its replacement must not retrain 0 from another scholar)."""
    async def steps():
        gate = TaskGate(0)
        await gate.trained(0, {"weights": b""})
        asking = asyncio.ensure_future(gate.next_task())
        await asyncio.sleep(0.01)
        assert not asking.done()
        await gate.registered(0, "1")
        return await asyncio.wait_for(asking, 1)

    assert _run(steps) == 1


def test_the_task_run_is_handed_out_once_the_driver_opened_it() -> None:
    async def steps():
        gate = TaskGate(0)
        asking = asyncio.ensure_future(gate.task_run(1))
        await asyncio.sleep(0.01)
        assert not asking.done()
        await gate.set_run(1, "run-1")
        return await asyncio.wait_for(asking, 1)

    assert _run(steps) == "run-1"


def test_an_abort_frees_every_waiting_worker_and_stops_new_groups() -> None:
    async def steps():
        gate = TaskGate(0)
        await gate.trained(0, {"weights": b""})
        waiting = [asyncio.ensure_future(call) for call in (gate.next_task(), gate.task_run(1),
                                                            gate.wait_registered(0))]
        await asyncio.sleep(0.01)
        await gate.abort()
        freed = await asyncio.wait_for(asyncio.gather(*waiting), 1)
        return freed, await gate.next_task(), await gate.task_run(2), await gate.wait_registered(1)

    assert _run(steps) == ([None, "", ""], None, "", "")
