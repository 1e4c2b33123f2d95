"""The figures logged with each task's run are real, non-empty PNGs."""

from __future__ import annotations

from pathlib import Path

import torch

from pipelines.figures import accuracy_heatmap, sample_grid, tile

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_accuracy_heatmap_writes_a_png_with_unseen_tasks_blank(tmp_path: Path) -> None:
    matrix = [[0.99, None, None], [0.9, 0.97, None], [0.8, 0.85, 0.95]]
    path = accuracy_heatmap(matrix, tmp_path / "plots" / "accuracy_matrix.png")
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


def test_sample_grid_writes_a_png(tmp_path: Path) -> None:
    path = sample_grid(torch.rand(10, 1, 8, 8), tmp_path / "samples.png", nrow=5)
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 100


def test_tile_places_each_image_in_its_cell_with_black_padding() -> None:
    images = torch.stack([torch.full((1, 3, 4), (i + 1) / 10) for i in range(5)])  # grey, one value each
    grid = tile(images, nrow=2, padding=1)
    assert grid.shape == (1 + 3 * (3 + 1), 1 + 2 * (4 + 1), 3)
    for i in range(5):
        top, left = 1 + (i // 2) * 4, 1 + (i % 2) * 5
        cell = grid[top:top + 3, left:left + 4]
        assert (abs(cell - (i + 1) / 10) < 1e-6).all()  # the grey value in all three channels
    assert grid[0].max() == 0 and grid[:, 0].max() == 0  # padding
    assert grid[9:12, 6:10].max() == 0  # the empty sixth cell


def test_tile_keeps_colour_channels_apart() -> None:
    image = torch.zeros(1, 3, 2, 2)
    image[0, 0], image[0, 2] = 1.0, 0.5
    pixel = tile(image, padding=0)[0, 0]
    assert pixel.tolist() == [1.0, 0.0, 0.5]
