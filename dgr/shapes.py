"""One common input shape for every task of a stream: resize or pad, and channel conversion.

A scholar has one input shape, so images of every source must reach it: `stream.image_size` (square,
0 keeps the sources' size), `stream.fit` (resize bilinear, or pad with a centred zero border) and
`stream.channels` (1 grey, 3 RGB, 0 keep). Images stay uint8 (N, C, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dgr.config import StreamConfig
from dgr.datasets import DatasetError

# ITU-R 601-2 luma, the weights PIL's "L" conversion uses.
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


@dataclass(frozen=True)
class InputShape:
    size: int = 0  # 0: keep
    fit: str = "resize"
    channels: int = 0  # 0: keep

    @staticmethod
    def of(config: StreamConfig) -> "InputShape":
        return InputShape(config.image_size, config.fit, config.channels)

    def apply(self, images: torch.Tensor, origin: str) -> torch.Tensor:
        """uint8 (N, C, H, W) -> uint8 (N, C', size, size); `origin` names the data in errors."""
        return self._channels(self._size(images, origin))

    def _size(self, images: torch.Tensor, origin: str) -> torch.Tensor:
        height, width = images.shape[-2:]
        if self.size == 0 or (height, width) == (self.size, self.size):
            return images
        if self.fit == "pad":
            if height > self.size or width > self.size:
                raise DatasetError(f"{origin}: {height}x{width} images cannot be padded to {self.size}x{self.size}; "
                                   f"set stream.fit: resize")
            top, left = (self.size - height) // 2, (self.size - width) // 2
            return F.pad(images, (left, self.size - width - left, top, self.size - height - top))
        resized = F.interpolate(images.float(), size=(self.size, self.size), mode="bilinear", antialias=True,
                                align_corners=False)
        return resized.round_().clamp_(0, 255).to(torch.uint8)

    def _channels(self, images: torch.Tensor) -> torch.Tensor:
        have = images.shape[1]
        if self.channels == 0 or have == self.channels:
            return images
        if self.channels == 3:  # have == 1: grey replicated
            return images.expand(-1, 3, -1, -1).contiguous()
        grey = (images.float() * _LUMA).sum(1, keepdim=True)
        return grey.round_().clamp_(0, 255).to(torch.uint8)

    def stack(self, images: Sequence[np.ndarray], names: Sequence[str], origin: str) -> torch.Tensor:
        """Decoded images (H, W, C) of possibly different sizes -> one uint8 (N, C, H, W) tensor.

        Each group of equal shape is fitted at once; without a rule that makes them equal, mixed shapes
        fail naming one file of each.
        """
        if not images:
            return torch.empty(0, max(self.channels, 1), self.size, self.size, dtype=torch.uint8)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape, []).append(i)
        fitted = {shape: self.apply(torch.from_numpy(np.stack([images[i] for i in rows])).permute(0, 3, 1, 2),
                                    origin) for shape, rows in groups.items()}
        first, *others = groups
        target = fitted[first].shape[1:]
        for other in others:
            if fitted[other].shape[1:] != target:
                raise DatasetError(f"{origin}: images of different shapes, {names[groups[first][0]]} is "
                                   f"{_hwc(first)} and {names[groups[other][0]]} is {_hwc(other)}; set "
                                   f"stream.image_size (and stream.channels)")
        out = torch.empty(len(images), *target, dtype=torch.uint8)
        for shape, rows in groups.items():
            out[torch.tensor(rows)] = fitted[shape]
        return out


def _hwc(shape: tuple[int, ...]) -> str:
    height, width, channels = shape
    return f"{height}x{width} with {channels} channel{'s' if channels > 1 else ''}"
