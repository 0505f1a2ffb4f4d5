"""The weight files of the local-feature detector and of AMES: the published release
files (github pavelsuma/ames, ``networks/``), a local file, or seeded random weights.

Each model reads, in this order: ``checkpoint`` (a local file) when set; else, with
``pretrained``, the release file by its published name in torch hub's checkpoint folder
(``$TORCH_HOME/hub/checkpoints``, or ``cache_dir``); else (``pretrained: false``) random
weights from ``seed``. A file is a stranger's file: it is read with
``torch.load(weights_only=True)`` (no code runs), must hold a ``state`` dict of tensors
(the release format) and loads strictly (every name and shape must match). A missing or
wrong file stops with :class:`~claid.models.weights.WeightsUnavailableError`, one message
naming the file, where it was looked for and how to provide it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from claid.models.weights import WeightsUnavailableError

RELEASE_URL = "http://ptak.felk.cvut.cz/personal/sumapave/public/ames/networks/"
#: model -> published file name (the detector's is the name this code expects for the
#: release's DINOv2 detector; pass another with ``detector_checkpoint``)
RELEASE_FILES = {"ames": "dinov2_ames.pt", "ames_binarised": "dinov2_ames_dist.pt",
                 "detector": "dinov2_detector.pt"}


def release_place(name: str, cache_dir: str | None = None) -> Path:
    """Where the release file ``name`` is looked for."""
    folder = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
    return folder / RELEASE_FILES[name]


def weight_source(name: str, *, checkpoint: str | None, pretrained: bool,
                  cache_dir: str | None = None) -> Path | None:
    """The file model ``name`` loads (None: seeded random weights)."""
    if checkpoint:
        return Path(os.path.expanduser(str(checkpoint)))
    return release_place(name, cache_dir) if pretrained else None


def missing_message(name: str, path: Path, option: str) -> str:
    return (f"weights for {name} ({RELEASE_FILES[name]}) are unavailable: no file at {path}. "
            f"Source: {RELEASE_URL}{RELEASE_FILES[name]}. Fix: download it on a machine with network "
            f"access and put it at {path} (set TORCH_HOME, or rerank.ames.cache_dir, for another folder), "
            f"or pass it with rerank.ames.{option}=/path/to/file; rerank.ames.pretrained=false builds "
            "random weights for testing")


def read_state(path: Path, name: str) -> dict:
    """The ``state`` dict of a release-format file, read without running code from it."""
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt or non-tensor pickle: one line, naming the file
        raise WeightsUnavailableError(f"{path} is not a weight file that loads safely as {name} "
                                      f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    state = content.get("state") if isinstance(content, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"{path} has no 'state' dict of tensors (the release format of {name})")
    return state


def load_weights(model: nn.Module, name: str, *, checkpoint: str | None, pretrained: bool, seed: int,
                 cache_dir: str | None = None, option: str = "checkpoint", init=None) -> str:
    """Give ``model`` its weights; returns where they came from (the path and the start of
    its SHA-256, or ``random(seed)``).

    Args:
        name: ``ames``, ``ames_binarised`` or ``detector`` (:data:`RELEASE_FILES`).
        init: ``init(model)`` draws random weights (called under ``torch.manual_seed(seed)``).
    Raises:
        WeightsUnavailableError: the file is missing, unsafe, or does not fit the model.
    """
    path = weight_source(name, checkpoint=checkpoint, pretrained=pretrained, cache_dir=cache_dir)
    if path is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if init is not None:
                init(model)
        return f"random({seed})"
    if not path.is_file():
        raise WeightsUnavailableError(missing_message(name, path, option))
    state = read_state(path, name)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = " ".join(str(err).split())[:300]
        raise WeightsUnavailableError(f"{path} does not fit the {name} model: {first}") from None
    import hashlib

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"{path} (sha256 {digest[:16]})"
