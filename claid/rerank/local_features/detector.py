"""The local-feature detector of AMES (github pavelsuma/ames, ``extract/spatial_attention_2d.py``;
DELG's attention): a 2-layer 1x1-conv network over a patch-token grid.

    f = BatchNorm(Conv1x1(x))             (D -> D)
    descriptors = f / ||f||                (per position)
    weights = softplus(Conv1x1(relu(f)))   (D -> 1)

The parameter names are the release file's (``conv1``, ``bn``, ``conv2``), so its
``state`` dict loads strictly. Always run in evaluation mode (BatchNorm's running
statistics).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class LocalDetector(nn.Module):
    def __init__(self, dim: int = 768) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 1, 1)
        self.bn = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D, H, W) tokens -> ((B, D, H, W) L2-normalised descriptors, (B, 1, H, W) weights)."""
        x = self.bn(self.conv1(x))
        descriptors = F.normalize(x, p=2, dim=1, eps=1e-15)
        return descriptors, F.softplus(self.conv2(F.relu(x)), beta=1, threshold=20)

    @torch.no_grad()
    def detect(self, tokens: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """One PatchGrid's tokens (H*W, D), row-major -> ((H*W, D) float32 descriptors,
        (H, W) float32 weights)."""
        h, w = grid
        device = next(self.parameters()).device
        x = torch.as_tensor(np.asarray(tokens, np.float32), device=device).T.reshape(1, -1, h, w)
        descriptors, weights = self(x)
        return (descriptors[0].reshape(descriptors.shape[1], -1).T.cpu().numpy(),
                weights[0, 0].cpu().numpy())


def random_init(detector: LocalDetector) -> None:
    """The reference's initialisation (ResNet-style conv weights, zero biases), seeded by
    the caller; BatchNorm keeps its identity statistics."""
    for conv in (detector.conv1, detector.conv2):
        fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
        nn.init.normal_(conv.weight, mean=0.0, std=(2.0 / fan_out) ** 0.5)
        nn.init.zeros_(conv.bias)


def build_detector(*, dim: int, pretrained: bool, checkpoint: str | None = None, seed: int = 0,
                   cache_dir: str | None = None) -> tuple[LocalDetector, str]:
    """The published detector (its ``state`` dict, strictly), a local file, or seeded
    random weights; in evaluation mode. Returns (detector, where its weights came from)."""
    from claid.rerank.local_features.weight_file import load_weights

    detector = LocalDetector(dim)
    source = load_weights(detector, "detector", checkpoint=checkpoint, pretrained=pretrained, seed=seed,
                          cache_dir=cache_dir, option="detector_checkpoint", init=random_init)
    return detector.eval(), source
