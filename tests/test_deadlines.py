"""Deadlines (deadlines.py): asyncio.timeout's behaviour on one shared timer per loop."""

from __future__ import annotations

import asyncio

import pytest

from dataflow_lab.deadlines import Deadline, watching

# runs alone under pytest -n: it times its limits
pytestmark = pytest.mark.exclusive


def test_a_passed_deadline_cancels_the_block_and_raises_timeout_error():
    async def go() -> Deadline:
        limit = Deadline(0.05)
        with pytest.raises(TimeoutError):
            with limit:
                await asyncio.sleep(5)
        return limit

    limit = asyncio.run(asyncio.wait_for(go(), 5))
    assert limit.expired


def test_a_block_that_ends_in_time_is_untouched_and_leaves_nothing_pending():
    async def go() -> int:
        with Deadline(0.05) as limit:
            await asyncio.sleep(0)
        await asyncio.sleep(0.1)  # past the deadline: the timer fires and finds nothing to cancel
        assert not limit.expired
        return watching()

    assert asyncio.run(go()) == (0, float("inf"))


def test_nested_deadlines_each_raise_only_for_their_own_limit():
    async def inner_first() -> str:
        with Deadline(5) as outer:
            try:
                with Deadline(0.05):
                    await asyncio.sleep(5)
            except TimeoutError:
                pass
            await asyncio.sleep(0)  # the outer block goes on, not cancelled
        return "outer expired" if outer.expired else "inner only"

    async def outer_first() -> tuple[bool, bool]:
        outer, inner = Deadline(0.05), Deadline(5)
        with pytest.raises(TimeoutError):
            with outer:
                try:
                    with inner:
                        await asyncio.sleep(5)
                except TimeoutError:  # pragma: no cover - the inner one must not claim it
                    raise AssertionError("the inner deadline claimed the outer's cancellation") from None
        return outer.expired, inner.expired

    assert asyncio.run(inner_first()) == "inner only"
    assert asyncio.run(outer_first()) == (True, False)


def test_someone_elses_cancellation_passes_as_cancelled_error():
    async def go() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().call_later(0.02, task.cancel)
        with Deadline(5):
            await asyncio.sleep(5)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(go())


def test_many_deadlines_share_one_timer_armed_for_the_earliest():
    async def go() -> tuple[int, bool, int]:
        limits = [Deadline(30 + i) for i in range(100)]
        for limit in limits:
            limit.__enter__()
        pending, armed_at = watching()
        for limit in reversed(limits):
            limit.__exit__(None, None, None)
        return pending, armed_at == limits[0].when, watching()[0]

    assert asyncio.run(go()) == (100, True, 0)


def test_no_limit_costs_nothing_and_never_expires():
    async def go() -> bool:
        with Deadline(None) as limit:
            await asyncio.sleep(0.01)
        return limit.expired

    assert asyncio.run(go()) is False
