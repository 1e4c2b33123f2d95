"""A worker builds its tasks one at a time: it holds the task it trains (and, under ER and Joint only, the
past data those arms keep), never the whole stream, so its memory does not grow with the number of tasks."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
import torch

from dgr.config import Config
from dgr.streams import build_stream
from pipelines.settings import load_settings
from pipelines.worker import TaskFeed
from tests.pipelines.conftest import TINY_CHAIN


def _config(arm: str) -> Config:
    config, _ = load_settings(None, [*TINY_CHAIN, "stream.num_tasks=4", f"replay.arm={arm}"])
    return config


@pytest.mark.parametrize("arm", ["gr", "none"])
def test_a_generative_replay_worker_releases_each_task_before_the_next(fake_data_root: Path, arm: str) -> None:
    feed = TaskFeed(_config(arm), fake_data_root)
    alive = []
    for k in range(4):
        alive.append(weakref.ref(feed.at(k).train_x))
        gc.collect()
        assert [ref() is not None for ref in alive] == [False] * k + [True]
        assert feed.stored is None


def test_tasks_from_the_feed_are_the_streams_tasks(fake_data_root: Path) -> None:
    config = _config("gr")
    stream = build_stream(config.stream, fake_data_root, config.run.seed)
    feed = TaskFeed(config, fake_data_root)
    assert feed.infos == [t.info for t in stream]
    for k in (0, 1, 3):  # a resumed worker group may start at any task; later tasks follow in order
        task = feed.at(k)
        assert torch.equal(task.train_x, stream[k].train_x) and torch.equal(task.train_y, stream[k].train_y)


@pytest.mark.parametrize("arm", ["er", "joint"])
def test_exact_replay_and_joint_keep_the_past_data_by_design(fake_data_root: Path, arm: str) -> None:
    config = _config(arm)
    stream = build_stream(config.stream, fake_data_root, config.run.seed)
    resumed = TaskFeed(config, fake_data_root)
    resumed.at(2)  # a worker group that starts at task 2 rebuilds what the arm stored of tasks 0 and 1
    in_order = TaskFeed(config, fake_data_root)
    for k in range(3):
        in_order.at(k)
    for feed in (resumed, in_order):
        assert feed.stored is not None
        assert torch.equal(feed.stored.x, torch.cat([stream[0].train_x, stream[1].train_x]))
    assert torch.equal(resumed.at(0).train_x, stream[0].train_x)  # going back starts over
    assert resumed.stored is None
