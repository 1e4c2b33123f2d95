"""PNG figures logged with each task's run: the accuracy matrix and a grid of generated samples.

Drawn with matplotlib's object API on the Agg canvas, so nothing depends on pyplot's global state or a
display, and it works inside Ray workers.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def accuracy_heatmap(matrix: list[list[float | None]], path: Path) -> Path:
    """Row i: test accuracy on each task j after training task i; None (not seen yet) stays blank."""
    rows, cols = len(matrix), max((len(row) for row in matrix), default=0)
    values = np.full((max(rows, 1), max(cols, 1)), np.nan)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if value is not None:
                values[i, j] = value
    figure = Figure(figsize=(1.2 + 0.8 * cols, 1.0 + 0.6 * rows))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(values), vmin=0.0, vmax=1.0, cmap="viridis")
    for (i, j), value in np.ndenumerate(values):
        if not math.isnan(value):  # dark text on the bright end of viridis, light text elsewhere
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", color="black" if value > 0.6 else "white")
    axes.set_xticks(range(cols), [f"task {j}" for j in range(cols)])
    axes.set_yticks(range(rows), [f"after task {i}" for i in range(rows)])
    figure.colorbar(image, ax=axes, label="test accuracy")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def tile(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """images (N, C, H, W), C 1 or 3, in [0, 1] -> one (H', W', 3) array: `nrow` images per row, `padding`
    black pixels around each, grey images as three equal channels. (torchvision's `make_grid` would do it,
    but importing torchvision costs the driver about 2 s.)"""
    x = images.detach().float().cpu().clamp(0, 1)
    n, channels, h, w = x.shape
    x = x.expand(n, 3, h, w) if channels == 1 else x
    rows, cols = math.ceil(n / nrow), min(n, nrow)
    grid = torch.zeros(3, padding + rows * (h + padding), padding + cols * (w + padding))
    for i, image in enumerate(x):
        top, left = padding + (i // nrow) * (h + padding), padding + (i % nrow) * (w + padding)
        grid[:, top:top + h, left:left + w] = image
    return grid.permute(1, 2, 0).numpy()


def sample_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> Path:
    """images (N, C, H, W) in [0, 1] -> one PNG, `nrow` images per row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(path, tile(images, nrow))
    return path


def sweep_plot(rows: list[dict], keys: list[str], path: Path) -> Path:
    """Validation accuracy of each trial against its first swept key, one series per value of the others."""
    x_key, others = keys[0], keys[1:]
    x_values = sorted({str(r[x_key]) for r in rows}, key=lambda v: (v != "1/t", v))  # the 1/t rule first
    figure = Figure(figsize=(6, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    series: dict[str, list[tuple[int, float, bool]]] = {}
    for r in rows:
        label = ", ".join(f"{k}={r[k]}" for k in others) or "trials"
        series.setdefault(label, []).append((x_values.index(str(r[x_key])), r["validation_accuracy"], r["finished"]))
    for label, points in sorted(series.items()):
        done = [(x, y) for x, y, finished in points if finished]
        stopped = [(x, y) for x, y, finished in points if not finished]
        line = axes.plot(*zip(*done), "o", label=label)[0] if done else None
        if stopped:  # hollow markers: stopped early by ASHA (accuracy over fewer tasks)
            color = line.get_color() if line is not None else None
            axes.plot(*zip(*stopped), "o", mfc="none", color=color, label=None if done else f"{label} (stopped)")
    axes.set_xticks(range(len(x_values)), x_values)
    axes.set_xlabel(x_key)
    axes.set_ylabel("validation accuracy (hollow: stopped early)")
    axes.legend(fontsize=7)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
