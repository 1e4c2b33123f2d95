"""The chain on a simulated multi-node Ray cluster on one machine: a head without CPUs for workers (where
the driver runs, as under `ray job submit`) and two one-CPU nodes, so the two workers land on different
nodes. One version per task, the scholars reach the driver through the gate and the registry alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from mlflow.tracking import MlflowClient

from pipelines.sequence import main
from tests.pipelines.conftest import chain_args

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]


@pytest.fixture
def three_nodes() -> Iterator[str]:
    """The driver's node id; stops only the nodes it started."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        yield ray.get_runtime_context().get_node_id()
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_workers_on_two_nodes_train_the_chain(three_nodes: str, fake_data_root: Path, workdir: Path) -> None:
    assert main(chain_args(fake_data_root, workdir, "stream.num_tasks=2")) == 0
    result = json.loads((workdir / "result.json").read_text())
    assert result["versions"] == ["1", "2"]
    assert len(MlflowClient().search_model_versions("name='tiny-chain'")) == 2
    for nodes in result["worker_nodes"]:  # per task: rank 0's node, rank 1's node
        assert len(set(nodes)) == 2 and three_nodes not in nodes
    assert not list((workdir / "ray_results").rglob("*.pt"))  # no Ray checkpoint on any node
