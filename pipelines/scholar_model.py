"""A registered scholar as an MLflow pyfunc model. MLflow runs this file to load a version ("model from
code"): the solver and generator come from the version's `spec.json` + `weights.pt` (read with
`torch.load(weights_only=True)`), so loading unpickles nothing. It imports only `dgr` (bundled with each
version), torch, numpy and MLflow, never `pipelines`.

`predict(images)`: float32 images (B, C, H, W) in [0, 1] -> `predicted_class` (B,) int64, the solver's
arg-max over the outputs that compete in the version's scenario (as the chain evaluated it), and
`scores` (B, outputs) float32, the softmax over those outputs (0 elsewhere). `params={"task": j}` picks
task j's head: required for a task-incremental scholar, optional otherwise (default: the latest task).
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException
from mlflow.pyfunc import PythonModel

from dgr.checkpoint import load_scholar
from dgr.scenario import Scenario, head
from dgr.streams import TaskInfo
from dgr.targets import predictions

SCHOLAR_ARTIFACT = "scholar"
LATEST = -1  # the `task` parameter's default


class ScholarModel(PythonModel):
    def load_context(self, context: Any) -> None:
        origin = context.model_config.get("registered_as")  # errors name the model, not a download folder
        self.scholar = load_scholar(context.artifacts[SCHOLAR_ARTIFACT], origin=origin).eval()
        self.scenario = Scenario(context.model_config["scenario"])
        self.tasks = [TaskInfo(t["index"], t["name"], tuple(t["classes"])) for t in context.model_config["tasks"]]

    # np.ndarray is a type hint MLflow infers no schema from (and without one it warns at every import);
    # the signature logged with each version, float32 (-1, C, H, W), is the schema.
    def predict(self, context: Any, model_input: np.ndarray,
                params: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        images = torch.as_tensor(np.asarray(model_input, dtype=np.float32))  # (B, C, H, W)
        start, stop = self._head(int((params or {}).get("task", LATEST)))
        logits = self.scholar.label(images)  # (B, outputs)
        heads = torch.tensor([[start, stop]]).expand(len(logits), 2)
        scores = torch.zeros_like(logits)
        scores[:, start:stop] = logits[:, start:stop].softmax(1)
        return {"predicted_class": predictions(logits, heads).numpy(), "scores": scores.numpy()}

    def _head(self, task: int) -> tuple[int, int]:
        latest, learned = self.tasks[-1], f"a learned task 0..{len(self.tasks) - 1}"
        if task == LATEST:
            if self.scenario is Scenario.TASK:
                raise MlflowException(f"params task: required by a task-incremental scholar ({learned})",
                                      INVALID_PARAMETER_VALUE)
            return head(self.scenario, latest, latest)
        if not 0 <= task < len(self.tasks):
            raise MlflowException(f"params task: expected {learned}, got {task}", INVALID_PARAMETER_VALUE)
        return head(self.scenario, self.tasks[task], latest)


mlflow.models.set_model(ScholarModel())
