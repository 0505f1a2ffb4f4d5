"""The authors' preprocessing, step by step (tests and benchmarks only).

Re-implemented from wlzhao22/CLAID (commit 8a2fd4c, ``CALID/detector.py`` and
``CALID/descriptor.py``), not copied; every line names the step it reproduces.
Nothing here is imported by the ``claid`` package.

detector.py, ``get_input_var`` then the crop in ``k_sum_main`` / ``k_sum_one``::

    img = Image.open(f); img = img.convert('RGB')           # plain PIL: no EXIF rotation
    w, h = img.size
    if min(w, h) > 355: Resize(360, max_size=800), ToTensor(), Normalize(ImageNet)
    else:               ToTensor(), Normalize(ImageNet)    # native size
    rate = h / img.shape[-2]
    w, h = img.shape[1] - img.shape[1] % patch, img.shape[2] - img.shape[2] % patch
    img = img[:, :w, :h]                                    # top-left crop to the patch grid

descriptor.py (``extract_query`` / ``extract_ref``)::

    raw_img = PIL.Image.open(path).convert('RGB')           # the original image, no resize
    T.Compose([T.ToTensor(), T.Normalize(ImageNet)])(raw_img)
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision import transforms as T

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def detector_pixels(path: str, patch_size: int = 8) -> tuple[torch.Tensor, float]:
    """The detector's input for one file and its ``rate`` (original rows per input row)."""
    with open(path, "rb") as f:
        img = Image.open(f)
        img = img.convert("RGB")
    w, h = img.size
    if min(w, h) > 355:
        transform = T.Compose([T.Resize(360, max_size=800), T.ToTensor(), T.Normalize(MEAN, STD)])
    else:
        transform = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    img = transform(img)
    rate = h / img.shape[-2]
    rows, cols = img.shape[1] - img.shape[1] % patch_size, img.shape[2] - img.shape[2] % patch_size
    return img[:, :rows, :cols], rate


def descriptor_pixels(path: str) -> torch.Tensor:
    """The descriptor's input for one file: the original image, normalised."""
    raw_img = Image.open(path).convert("RGB")
    return T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])(raw_img)
