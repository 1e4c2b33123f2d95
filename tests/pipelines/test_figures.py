"""The figures logged with each task's run are real, non-empty PNGs."""

from __future__ import annotations

from pathlib import Path

import torch

from pipelines.figures import accuracy_heatmap, sample_grid

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_accuracy_heatmap_writes_a_png_with_unseen_tasks_blank(tmp_path: Path) -> None:
    matrix = [[0.99, None, None], [0.9, 0.97, None], [0.8, 0.85, 0.95]]
    path = accuracy_heatmap(matrix, tmp_path / "plots" / "accuracy_matrix.png")
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


def test_sample_grid_writes_a_png(tmp_path: Path) -> None:
    path = sample_grid(torch.rand(10, 1, 8, 8), tmp_path / "samples.png", nrow=5)
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 100
