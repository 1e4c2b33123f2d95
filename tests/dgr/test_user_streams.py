"""Streams over users' sources: class splits, new-domain chains, permutations, and the validation split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dgr.config import StreamConfig
from dgr.datasets import DatasetError
from dgr.scenario import Scenario, output_size
from dgr.sequence import run_sequence
from dgr.streams import Task, build_stream, iter_stream, stream_infos
from tests.conftest import tiny_config
from tests.example_configs import example_config
from tests.userfiles import write_folder, write_npz

yaml = pytest.importorskip("yaml")  # absent where only torch is (a GPU machine)


def marks(x: torch.Tensor) -> list[int]:
    return x[:, 0, 0, 0].tolist()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_npz(tmp_path / "six", 6, {"train": 8, "test": 3})
    write_npz(tmp_path / "colour", 2, {"train": 6, "test": 2}, size=12, channels=3)
    write_folder(tmp_path / "site", ["ill", "well"], {"train": 5, "test": 2})
    return tmp_path


def test_class_split_in_groups_of_three(root: Path) -> None:
    tasks = build_stream(StreamConfig(name="split", sources="npz:six", classes_per_task=3), root, seed=1)
    assert [t.classes for t in tasks] == [(0, 1, 2), (3, 4, 5)]
    assert [t.name for t in tasks] == ["six 0/1/2", "six 3/4/5"]
    for task in tasks:
        assert marks(task.train_x) == task.train_y.tolist() and len(task.train_y) == 24
        assert marks(task.test_x) == task.test_y.tolist()


def test_seeded_class_split_relabels_consistently(root: Path) -> None:
    config = StreamConfig(name="split", sources="npz:six", classes_per_task=3, class_order="seeded")
    tasks = build_stream(config, root, seed=3)
    written = [sorted(set(marks(t.train_x))) for t in tasks]
    assert sorted(d for group in written for d in group) == list(range(6)) and written[0] != [0, 1, 2]
    for task in tasks:
        pairs = {*zip(marks(task.train_x), task.train_y.tolist()), *zip(marks(task.test_x), task.test_y.tolist())}
        assert len(pairs) == 3 and {label for _, label in pairs} == set(task.classes)


def test_new_domains_reach_one_input_shape_and_follow_each_others_labels(root: Path) -> None:
    config = StreamConfig(name="domains", scenario="domain", sources="folder:site,npz:colour", image_size=8,
                          channels=3)
    site, colour = build_stream(config, root, seed=1)
    assert site.input_shape == colour.input_shape == (3, 8, 8)
    assert (site.name, colour.name) == ("site", "colour")
    assert (site.classes, colour.classes) == ((0, 1), (2, 3))
    assert torch.equal(site.train_x[:, 0], site.train_x[:, 2])  # grey replicated to RGB
    assert set(colour.train_y.tolist()) == {2, 3} and set(colour.test_y.tolist()) == {2, 3}


def test_permutations_of_one_source(root: Path) -> None:
    tasks = build_stream(StreamConfig(name="permuted", scenario="domain", sources="npz:colour", num_tasks=3),
                         root, seed=1)
    first = tasks[0]
    assert [t.classes for t in tasks] == [(0, 1), (2, 3), (4, 5)]
    for task in tasks[1:]:
        assert not torch.equal(task.train_x, first.train_x)
        assert torch.equal(task.train_x.flatten(1).sort(1).values, first.train_x.flatten(1).sort(1).values)
        assert torch.equal(task.train_y, first.train_y + task.classes[0])


def rows(x: torch.Tensor) -> list[bytes]:
    return sorted(bytes(r.tolist()) for r in x.flatten(1))


@pytest.mark.parametrize("name, sources", [("split", "npz:six"), ("domains", "folder:site")])
def test_validation_is_held_out_of_the_training_data(root: Path, name: str, sources: str) -> None:
    whole = build_stream(StreamConfig(name=name, sources=sources), root, seed=1)
    held = build_stream(StreamConfig(name=name, sources=sources, validation=0.25), root, seed=1)
    for full, task in zip(whole, held):
        assert full.valid_x is None and task.valid_x is not None and task.valid_y is not None
        assert rows(torch.cat([task.train_x, task.valid_x])) == rows(full.train_x)
        assert not set(rows(task.train_x)) & set(rows(task.valid_x))
        for label in task.classes:  # per class: a quarter held out (rounded), never all
            count = int((full.train_y == label).sum())
            assert int((task.valid_y == label).sum()) == round(0.25 * count)
        assert torch.equal(task.test_x, full.test_x)


def test_validation_is_seeded(root: Path) -> None:
    config = StreamConfig(name="split", sources="npz:six", validation=0.5)
    a, b, c = (build_stream(config, root, seed=s)[0].valid_x for s in (1, 1, 2))
    assert a is not None and b is not None and c is not None
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_runner_reports_validation_accuracy_per_task(root: Path) -> None:
    config = tiny_config(stream={"name": "split", "sources": "npz:six", "classes_per_task": 3, "validation": 0.25})
    tasks = build_stream(config.stream, root, config.run.seed)
    reported: list[list[float]] = []
    result = run_sequence(config, tasks, callback=lambda e: reported.append(getattr(e, "validation", None)))
    assert [len([a for a in row if a is not None]) for row in result.validation_matrix] == [1, 2]
    assert [r for r in reported if r is not None] == [[a for a in row if a is not None]
                                                      for row in result.validation_matrix]
    assert all(0 <= a <= 1 for row in result.validation_matrix for a in row if a is not None)
    plain = run_sequence(tiny_config(stream={"name": "split", "sources": "npz:six", "classes_per_task": 3}),
                         build_stream(StreamConfig(name="split", sources="npz:six", classes_per_task=3), root, 3))
    assert plain.validation_matrix == []


@pytest.mark.integration
def test_mnist_then_fashion_mnist_from_the_real_data(real_data_root: Path) -> None:
    config = StreamConfig(name="domains", scenario="domain", sources="mnist,fashion_mnist", validation=0.1)
    tasks: list[Task] = build_stream(config, real_data_root, seed=1)
    assert [t.name for t in tasks] == ["mnist", "fashion"]
    assert [t.classes for t in tasks] == [tuple(range(10)), tuple(range(10, 20))]
    for task in tasks:
        assert task.input_shape == (1, 28, 28) and len(task.test_y) == 10000
        assert task.valid_y is not None and len(task.train_y) + len(task.valid_y) == 60000
        assert 5900 <= len(task.valid_y) <= 6100
        counts = torch.bincount(task.test_y - task.classes[0])
        assert len(counts) == 10 and int(counts.min()) >= 800


def test_the_example_configs_build_their_streams(tmp_path: Path) -> None:
    for site in ("site_a", "site_b"):
        write_folder(tmp_path / site, ["normal", "pneumonia"], {"train": 10, "test": 2}, size=20, channels=3)
    config = example_config("own_images.yaml")
    tasks = build_stream(config.stream, tmp_path, config.run.seed)
    assert [t.name for t in tasks] == ["site_a", "site_b"] and tasks[1].classes == (2, 3)
    assert all(t.input_shape == (1, 32, 32) and t.valid_y is not None for t in tasks)
    assert example_config("new_domains_mnist_fashion.yaml").stream.sources == ("mnist", "fashion_mnist")


@pytest.mark.parametrize("stream", [
    {"name": "split", "sources": "npz:six", "classes_per_task": 3, "class_order": "seeded"},
    {"name": "domains", "sources": "folder:site,npz:colour", "image_size": 8, "channels": 3},
    {"name": "permuted", "sources": "folder:site", "num_tasks": 3},
])
def test_stream_infos_are_the_built_tasks_infos(root: Path, stream: dict) -> None:
    config = StreamConfig(**stream)
    assert stream_infos(config, root, seed=2) == [t.info for t in build_stream(config, root, seed=2)]


def test_a_lazy_stream_reads_a_source_when_its_task_is_reached(root: Path) -> None:
    (root / "colour" / "test.npz").write_bytes(b"truncated")
    tasks = iter_stream(StreamConfig(name="domains", sources="folder:site,npz:colour", image_size=8, channels=3),
                        root, seed=1)
    assert next(tasks).name == "site"
    with pytest.raises(DatasetError, match="test.npz"):
        next(tasks)


def test_the_runner_learns_a_lazy_stream_as_it_learns_the_built_one(root: Path) -> None:
    config = tiny_config(stream={"name": "domains", "scenario": "domain", "sources": "folder:site,npz:colour",
                                 "image_size": 8, "channels": 3, "validation": 0.2})
    infos = stream_infos(config.stream, root, config.run.seed)
    lazy = run_sequence(config, iter_stream(config.stream, root, config.run.seed),
                        outputs=output_size(Scenario.DOMAIN, infos), num_tasks=len(infos))
    eager = run_sequence(config, build_stream(config.stream, root, config.run.seed))
    assert lazy.accuracy_matrix == eager.accuracy_matrix and lazy.validation_matrix == eager.validation_matrix
