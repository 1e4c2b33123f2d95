"""How a scholar is written as an MLflow Model and read back.

Each version is a pyfunc "model from code" (`pipelines/scholar_model.py`) with the scholar's
`spec.json` + `weights.pt` as its artifact `scholar`, the `dgr` package as its code, a tensor signature,
pinned requirements and an input example of generated images. Reading it back for training or for
`load_scholar(uri)` takes only the artifact: no model code runs and nothing is unpickled.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from pathlib import Path
from typing import Sequence

import mlflow
import numpy as np
import torch
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

import dgr
from dgr.checkpoint import load_scholar as load_scholar_folder
from dgr.checkpoint import SPEC_FILE, save_scholar
from dgr.scholar import Scholar
from dgr.streams import TaskInfo
from pipelines import scholar_model
from pipelines.tracking import RegistryError, one_line

EXAMPLE_ROWS = 2
REQUIREMENTS = ("torch", "numpy", "mlflow")  # what scholar_model.py and dgr import at load time


def signature(scholar: Scholar) -> ModelSignature:
    channels, height, width = scholar.spec["input_shape"]
    outputs = scholar.spec["outputs"]
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, channels, height, width))]),
        outputs=Schema([TensorSpec(np.dtype(np.int64), (-1,), "predicted_class"),
                        TensorSpec(np.dtype(np.float32), (-1, outputs), "scores")]),
        params=ParamSchema([ParamSpec("task", "long", scholar_model.LATEST)]),
    )


def _requirements() -> list[str]:
    """Pinned to what is installed (torch's local tag, e.g. +cpu, is dropped: pip cannot resolve it)."""
    return [f"{name}=={importlib.metadata.version(name).split('+')[0]}" for name in REQUIREMENTS]


def _example(scholar: Scholar) -> np.ndarray:
    """Generated images (B, C, H, W): a sample of the generator, or noise for a scholar without one;
    never a training image."""
    rng = torch.Generator().manual_seed(0)
    if scholar.generator is not None:
        return scholar.sample(EXAMPLE_ROWS, rng).float().numpy()
    return torch.rand(EXAMPLE_ROWS, *scholar.spec["input_shape"], generator=rng).numpy()


def log_scholar_model(run_id: str, scholar: Scholar, tasks: Sequence[TaskInfo], scenario: str,
                      registered_as: str) -> str:
    """Log `scholar` as an MLflow Model of run `run_id`; returns its model id. `tasks`: the tasks learned
    so far (their heads), `registered_as`: the URI its errors name."""
    config = {"scenario": scenario, "registered_as": registered_as,
              "tasks": [{"index": t.index, "name": t.name, "classes": list(t.classes)} for t in tasks]}
    name = f"scholar-task-{tasks[-1].index}"  # the experiment's Models tab lists one per task of each chain
    client = MlflowClient()
    run = client.get_run(run_id)
    # Created here in the run's experiment: Model.log alone would put it in the active experiment (the
    # Default one, artifacts in ./mlruns) when no run is active in this process.
    model = client.create_logged_model(run.info.experiment_id, name, run_id, params=run.data.params)
    try:
        with tempfile.TemporaryDirectory(prefix="dgr-scholar-") as tmp:
            folder = save_scholar(scholar, Path(tmp) / "scholar")
            Model.log(
                artifact_path=None, name=name, flavor=mlflow.pyfunc, run_id=run_id, model_id=model.model_id,
                python_model=scholar_model.__file__, artifacts={scholar_model.SCHOLAR_ARTIFACT: str(folder)},
                code_paths=[str(Path(dgr.__file__).parent)], model_config=config,
                signature=signature(scholar), input_example=(_example(scholar), {"task": tasks[-1].index}),
                pip_requirements=_requirements(),
            )
    except BaseException:
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    return model.model_id


def load_scholar(uri: str, device: torch.device | str = "cpu") -> Scholar:
    """The whole scholar (generator and solver: `sample(n)`, `label(x)`) of a model URI, e.g.
    `models:/<chain>@task-<k>`. Only the weights and spec are read; errors name `uri`."""
    with tempfile.TemporaryDirectory(prefix="dgr-scholar-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
            if (local / SPEC_FILE).is_file():  # a version registered as a bare folder, before it was a Model
                return load_scholar_folder(local, device, origin=uri)
            flavor = Model.load(str(local)).flavors["python_function"]
            relative = flavor["artifacts"][scholar_model.SCHOLAR_ARTIFACT]["path"]
        except (MlflowException, OSError) as exc:
            raise RegistryError(f"cannot download scholar {uri}: {one_line(exc)}") from None
        except KeyError:
            raise RegistryError(f"{uri} is not a dgr scholar: its MLmodel has no pyfunc artifact "
                                f"{scholar_model.SCHOLAR_ARTIFACT!r}") from None
        return load_scholar_folder(local / relative, device, origin=uri)
