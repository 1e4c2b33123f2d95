"""Workers are planned from the Ray cluster's nodes, never from the driver's machine (fake nodes here)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dgr.config import ConfigError
from pipelines.cluster import (WorkerPlan, check_placeable, pinned, plan_workers, trial_plan, trial_slots,
                              wants_gpu)
from pipelines.settings import PipelineConfig
from pipelines.trainer import chain_trainer

AUTO = PipelineConfig()
LAPTOP = [{"CPU": 2.0}]
# ray_cluster.yaml: a head without GPU (where `ray job submit` runs the driver) and g5.xlarge workers.
GPU_CLUSTER = [{"CPU": 8.0}, {"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}]


def test_the_gpu_decision_is_the_clusters() -> None:
    assert wants_gpu("auto", GPU_CLUSTER)
    assert not wants_gpu("auto", LAPTOP)
    assert not wants_gpu("false", GPU_CLUSTER)
    assert wants_gpu("true", LAPTOP)  # an autoscaler may add GPU nodes on demand


def test_auto_without_gpus_is_one_worker_on_every_cpu_of_the_largest_node() -> None:
    assert plan_workers(AUTO, LAPTOP) == WorkerPlan(1, 2, 2.0, 0.0)
    assert plan_workers(AUTO, [{"CPU": 2.0}, {"CPU": 16.0}, {"CPU": 0.0}]) == WorkerPlan(1, 16, 16.0, 0.0)


def test_explicit_workers_share_the_cpus_they_can_all_get() -> None:
    assert plan_workers(replace(AUTO, num_workers=2), LAPTOP) == WorkerPlan(2, 1, 1.0, 0.0)
    # 2 workers of 8 CPUs fit on a 16-CPU node: the 2-CPU node does not cut them down.
    assert plan_workers(replace(AUTO, num_workers=2), [{"CPU": 16.0}, {"CPU": 2.0}]).cpus == 8.0
    assert plan_workers(replace(AUTO, num_workers=3, threads_per_worker=2), LAPTOP) == WorkerPlan(3, 2, 2, 0.0)
    assert plan_workers(replace(AUTO, worker_cpus=0.5), LAPTOP) == WorkerPlan(1, 1, 0.5, 0.0)


def test_workers_run_ahead_of_the_registry_only_where_it_takes_them_no_cpu() -> None:
    """GPU workers, or a driver's node with a CPU the workers do not reserve: the workers train the next
    task while the driver registers the last. A laptop whose cores the worker takes: they wait."""
    assert not plan_workers(AUTO, LAPTOP, driver=LAPTOP[0]).run_ahead
    assert not plan_workers(AUTO, LAPTOP).run_ahead  # the driver's node unknown
    assert plan_workers(AUTO, GPU_CLUSTER, driver=GPU_CLUSTER[0]).run_ahead
    two_small = replace(AUTO, use_gpu="false", num_workers=2, threads_per_worker=2)
    assert plan_workers(two_small, GPU_CLUSTER, driver=GPU_CLUSTER[0]).run_ahead  # 8 CPUs there, 4 reserved
    assert not plan_workers(replace(AUTO, use_gpu="false"), GPU_CLUSTER, driver=GPU_CLUSTER[0]).run_ahead  # all 8
    head_without_cpus = [{"CPU": 0.0}, {"CPU": 8.0}]
    assert plan_workers(AUTO, head_without_cpus, driver=head_without_cpus[0]).run_ahead
    assert not plan_workers(replace(AUTO, worker_cpus=7.5), [{"CPU": 8.0}], driver={"CPU": 8.0}).run_ahead
    assert plan_workers(replace(AUTO, worker_cpus=7.0), [{"CPU": 8.0}], driver={"CPU": 8.0}).run_ahead
    assert plan_workers(replace(AUTO, run_ahead="true"), LAPTOP, driver=LAPTOP[0]).run_ahead
    assert not plan_workers(replace(AUTO, run_ahead="false"), GPU_CLUSTER, driver=GPU_CLUSTER[0]).run_ahead


def test_auto_on_a_gpu_cluster_is_one_worker_per_gpu_with_its_nodes_cpus() -> None:
    assert plan_workers(AUTO, GPU_CLUSTER) == WorkerPlan(2, 4, 4.0, 1.0, True)
    assert plan_workers(replace(AUTO, num_workers=1, threads_per_worker=2), GPU_CLUSTER) == WorkerPlan(1, 2, 2, 1.0, True)


def test_a_fraction_of_a_gpu_is_one_worker_with_that_share_of_the_node() -> None:
    assert plan_workers(replace(AUTO, gpus_per_worker=0.25), GPU_CLUSTER) == WorkerPlan(1, 1, 1.0, 0.25, True)
    with pytest.raises(ConfigError, match=r"pipeline\.gpus_per_worker.*pipeline\.num_workers"):
        plan_workers(replace(AUTO, gpus_per_worker=0.5, num_workers=2), GPU_CLUSTER)


def test_gpus_asked_for_where_none_are_up_need_a_worker_count() -> None:
    with pytest.raises(ConfigError, match=r"pipeline\.num_workers: auto found no GPU"):
        plan_workers(replace(AUTO, use_gpu="true"), LAPTOP)
    assert plan_workers(replace(AUTO, use_gpu="true", num_workers=4), LAPTOP) == WorkerPlan(4, 1, 1.0, 1.0, True)


def test_sweep_trials_default_to_one_small_worker_and_count_fractions_of_gpus() -> None:
    cpu_trial = trial_plan(AUTO, LAPTOP)
    assert cpu_trial == WorkerPlan(1, 1, 0.99, 0.0)
    assert trial_slots(LAPTOP, cpu_trial) == 2  # each trial: 0.01 CPU for itself, 0.99 for its worker
    assert trial_slots(LAPTOP, trial_plan(replace(AUTO, num_workers=2), LAPTOP)) == 1
    assert trial_slots([{"CPU": 1.0}], trial_plan(replace(AUTO, num_workers=4), LAPTOP)) == 1  # never 0
    quarter = trial_plan(replace(AUTO, gpus_per_worker=0.25), GPU_CLUSTER)
    assert quarter == WorkerPlan(1, 1, 0.99, 0.25)
    assert trial_slots(GPU_CLUSTER, quarter) == 8  # 4 trials on each of the 2 GPUs
    assert trial_slots(GPU_CLUSTER, trial_plan(AUTO, GPU_CLUSTER)) == 2
    tenth = trial_plan(replace(AUTO, gpus_per_worker=0.1, worker_cpus=0.1), [{"CPU": 64.0, "GPU": 1.0}])
    assert trial_slots([{"CPU": 64.0, "GPU": 1.0}], tenth) == 10  # not 9: 1.0 // 0.1 == 9.0 in floats
    assert trial_slots(GPU_CLUSTER, trial_plan(replace(AUTO, use_gpu="false"), GPU_CLUSTER)) == 16


@pytest.mark.parametrize("pipeline", [AUTO, replace(AUTO, gpus_per_worker=0.25), replace(AUTO, num_workers=2)])
def test_a_pinned_plan_resolves_to_itself_in_every_trial(pipeline: PipelineConfig) -> None:
    for nodes in (LAPTOP, GPU_CLUSTER):
        plan = trial_plan(pipeline, nodes)
        assert plan_workers(pinned(pipeline, plan), nodes) == plan


@pytest.mark.parametrize("plan", [WorkerPlan(2, 4, 4.0, 1.0, True), WorkerPlan(1, 1, 0.99, 0.25), WorkerPlan(3, 1, 1.0, 0.0)])
def test_the_torch_trainer_asks_for_the_planned_resources(plan: WorkerPlan, tmp_path) -> None:
    trainer = chain_trainer({}, plan, max_failures=3, run_name="chain", storage=str(tmp_path))
    scaling = trainer.scaling_config
    assert (scaling.num_workers, scaling.use_gpu) == (plan.num_workers, plan.use_gpu)
    expected = {"CPU": plan.cpus, **({"GPU": plan.gpus} if plan.gpus else {})}
    assert scaling.resources_per_worker == expected
    assert trainer.run_config.failure_config.max_failures == 3


@pytest.mark.parametrize("pipeline, named", [
    (replace(AUTO, threads_per_worker=8), r"^pipeline\.threads_per_worker: 1 worker\(s\) holding 8 CPU each do not fit"),
    (replace(AUTO, num_workers=3, threads_per_worker=1), r"^pipeline\.threads_per_worker: 3 worker\(s\)"),
    (replace(AUTO, num_workers=4), r"^pipeline\.num_workers: 4 worker\(s\) holding 1 CPU"),
    (replace(AUTO, worker_cpus=3.0), r"^pipeline\.worker_cpus: "),
    (replace(AUTO, use_gpu="true", num_workers=1), r"^pipeline\.use_gpu: true, but this machine's Ray has no GPU"),
])
def test_a_worker_group_a_fixed_ray_cannot_hold_names_the_setting(pipeline: PipelineConfig, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        check_placeable(plan_workers(pipeline, LAPTOP), LAPTOP, pipeline)


@pytest.mark.parametrize("pipeline", [AUTO, replace(AUTO, num_workers=2), replace(AUTO, worker_cpus=0.5)])
def test_a_worker_group_that_fits_passes(pipeline: PipelineConfig) -> None:
    check_placeable(plan_workers(pipeline, LAPTOP), LAPTOP, pipeline)
    two_gpus = [{"CPU": 0.0}, {"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}]
    check_placeable(plan_workers(AUTO, two_gpus), two_gpus, AUTO)
    with pytest.raises(ConfigError, match=r"^pipeline\.num_workers: 3 worker\(s\) holding 4 CPU and 1 GPU"):
        check_placeable(plan_workers(replace(AUTO, num_workers=3), two_gpus), two_gpus, AUTO)
    gpus_only = [{"CPU": 0.0, "GPU": 2.0}]  # a share of no CPU: the GPUs alone decide
    check_placeable(plan_workers(AUTO, gpus_only), gpus_only, AUTO)
