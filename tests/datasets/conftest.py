"""Helpers shared by the dataset-loader tests: tiny real images written on the fly."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from skimage import data


def save_image(path: Path, height: int = 48, width: int = 64) -> Path:
    """Write a small crop of a real photo (skimage's astronaut) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.astronaut()[:height, :width]).save(path)
    return path


@pytest.fixture
def image_writer():
    return save_image
