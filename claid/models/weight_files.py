"""Which weight file a model config loads, and its hash for the run's params."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import timm

from claid.models.weights import hub_snapshot_files, release_file


def weight_file_used(node: Any) -> Path | None:
    """The file a model config (``model_name``, ``pretrained``, ``checkpoint``,
    ``cache_dir``) loads its weights from, the way :func:`build_timm_model` picks it:
    the checkpoint, else (pretrained) the authors' release file in torch hub's cache,
    else the weight file of timm's Hugging Face cache snapshot; None for random
    weights or a source not on disk yet (timm downloads it)."""
    name = node.get("model_name") if node is not None else None
    if not name:
        return None
    checkpoint = node.get("checkpoint")
    if checkpoint is not None:
        return Path(os.path.expanduser(str(checkpoint)))
    if not node.get("pretrained") or not timm.is_model(name):
        return None
    release = release_file(name)
    if release is not None:
        return release
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None and cfg.hf_hub_id:
        files = hub_snapshot_files(cfg.hf_hub_id, node.get("cache_dir"))
        return files[0] if files else None
    return None


def weight_params(groups: dict[str, Any]) -> dict[str, str]:
    """Run parameters naming each group's weight file and its SHA-256, so two runs
    with one config but other files (a torch hub release file vs the Hugging Face
    one) are told apart: ``weights.<group>.file`` / ``weights.<group>.sha256``;
    ``random`` for seeded weights."""
    import hashlib

    params: dict[str, str] = {}
    for group, node in groups.items():
        if node is None or not node.get("model_name"):
            continue
        path = weight_file_used(node)
        if path is None:
            params[f"weights.{group}.file"] = "random" if not node.get("pretrained") else "download"
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        params[f"weights.{group}.file"] = path.name
        params[f"weights.{group}.sha256"] = digest.hexdigest()
    return params
