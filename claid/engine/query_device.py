"""Queries described like the database: on the extraction's device and precision.

Lightning moves the networks back to the CPU after ``trainer.predict``, so a
query described afterwards would run on the CPU in float32 while the database
ran on a GPU under ``bf16-mixed``: other numbers (and 2 of 8 images cut
differently between fp32 and bf16 in the review). ``described_like_extraction``
puts the networks where the extraction ran them, under the same autocast, for
the duration of a ``with`` block, then puts them back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

__all__ = ["autocast_dtype", "described_like_extraction", "extraction_device"]

# Lightning precision -> autocast dtype (None: no autocast, float32 weights)
_MIXED = {"16-mixed": torch.float16, "16": torch.float16, "bf16-mixed": torch.bfloat16,
          "bf16": torch.bfloat16}
_FULL = ("32-true", "32", "64-true", "64")


def autocast_dtype(precision: str | int) -> torch.dtype | None:
    """The autocast dtype of a Lightning ``precision`` (``bf16-mixed`` -> bfloat16),
    None for full precision; ValueError for the ``-true`` half precisions, which
    convert the weights themselves (not supported for queries)."""
    name = str(precision)
    if name in _MIXED:
        return _MIXED[name]
    if name in _FULL:
        return None
    raise ValueError(f"engine.precision={precision!r}: queries can follow 32-true, 16-mixed "
                     "or bf16-mixed extraction, not weights converted to half precision")


def extraction_device(accelerator: str, devices: int | str | Sequence[int] = 1) -> torch.device:
    """The device rank 0 of an extraction with these Trainer settings ran on.

    ``cpu`` -> cpu; ``gpu`` / ``cuda`` -> ``cuda:<first device>`` (a list of
    indices names them; otherwise device 0); ``auto`` -> cuda:0 when CUDA is
    available, else cpu. ValueError when a GPU is asked for and none is visible.
    """
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if accelerator not in ("gpu", "cuda"):
        raise ValueError(f"engine.accelerator must be cpu, gpu, cuda or auto, got {accelerator!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"engine.accelerator={accelerator} but no CUDA device is visible")
    index = 0
    if isinstance(devices, (list, tuple)) and devices:
        index = int(devices[0])
    return torch.device("cuda", index)


@contextmanager
def described_like_extraction(modules: Sequence[nn.Module | None], *, accelerator: str,
                              devices: int | str | Sequence[int] = 1,
                              precision: str | int = "32-true") -> Iterator[torch.device]:
    """Run the ``with`` body with ``modules`` on the extraction's device, under its
    autocast; each module goes back to the device it came from afterwards.

    Args:
        modules: the networks queries go through (descriptor, backbone; None skipped).
        accelerator, devices, precision: the ``engine`` settings of the extraction.
    Yields:
        The device.
    """
    device = extraction_device(accelerator, devices)
    dtype = autocast_dtype(precision)
    modules = [m for m in modules if m is not None]
    homes = []
    for module in modules:
        param = next(module.parameters(), None)
        homes.append(param.device if param is not None else None)
        module.to(device)
    autocast = (torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None
                else nullcontext())
    try:
        with autocast:
            yield device
    finally:
        for module, home in zip(modules, homes):
            if home is not None:
                module.to(home)
