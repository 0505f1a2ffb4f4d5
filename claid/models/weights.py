"""Building a timm model with the weights a config asks for.

Every backbone and descriptor YAML has the same two switches:

- ``checkpoint: /path/to/file`` loads that local file (a timm / Hugging Face
  ``.safetensors`` or ``.bin``, or the original release ``.pth``: timm's own
  key-remapping runs on it), strictly. A checkpoint wins over ``pretrained``.
- ``pretrained: true`` loads the published weights through timm, which reads
  the Hugging Face hub cache (``HF_HOME``/``HF_HUB_CACHE``) or, for URL-hosted
  weights, the torch hub cache (``TORCH_HOME``); ``cache_dir`` overrides both.
- ``pretrained: false`` builds random weights from ``seed`` (same seed, same
  weights), with the full architecture, so compute and memory are the real ones.

When weights cannot be had (offline, empty cache, missing file) the build stops
with ``WeightsUnavailableError`` naming the model, the cache and the fix.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import urllib.error
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn


class WeightsUnavailableError(RuntimeError):
    """Published or local weights for a model could not be loaded."""


def _offline_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'could not fetch the file', not 'the file is wrong'."""
    errors: list[type[BaseException]] = [urllib.error.URLError, ConnectionError, TimeoutError]
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError

        errors.append(LocalEntryNotFoundError)
    except ImportError:  # older huggingface_hub keeps it in utils
        from huggingface_hub.utils import LocalEntryNotFoundError

        errors.append(LocalEntryNotFoundError)
    try:
        import requests

        errors.append(requests.exceptions.ConnectionError)
    except ImportError:  # huggingface_hub >= 1.0 no longer needs requests
        pass
    return tuple(errors)


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hugging Face endpoint opens within ``timeout`` s.
    Behind a proxy (``HTTPS_PROXY`` etc.) a direct connection says nothing, so the
    hub is assumed reachable and the libraries' own requests decide."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return True
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def hub_cache_only_when_offline() -> Iterator[bool]:
    """Inside, huggingface_hub (and so timm and transformers) reads only its cache
    when the hub cannot be reached: an offline machine gets the 'weights are
    unavailable' message at once instead of after ~50 s of retried requests.
    Nothing changes when the hub is reachable or offline mode is already on.
    Yields whether it switched to cache-only."""
    from huggingface_hub import constants

    # one load at a time: the flag is process-wide, and another thread must not
    # find it switched off half-way through its own load
    with _HUB_FLAG_LOCK:
        previous = constants.HF_HUB_OFFLINE
        if previous or hub_reachable():
            yield False
            return
        constants.HF_HUB_OFFLINE = True
        try:
            yield True
        finally:
            constants.HF_HUB_OFFLINE = previous


_HUB_FLAG_LOCK = threading.RLock()


UNREACHABLE = "the Hugging Face hub cannot be reached from this machine and they are not in the cache"


def check_timm_name(model_name: str) -> None:
    """Raise ValueError unless timm knows the architecture and pretrained tag."""
    if not timm.is_model(model_name):
        raise ValueError(f"timm has no model {model_name!r} (see timm.list_models())")
    try:
        timm.models.get_pretrained_cfg(model_name)
    except RuntimeError as error:  # timm raises RuntimeError for an unknown tag
        raise ValueError(f"{model_name!r}: {error} (see timm.list_pretrained())") from error


def describe_weight_source(model_name: str, cache_dir: str | None = None) -> str:
    """Where ``model_name``'s published weights are looked for, as readable text: the
    authors' release file in torch hub's cache first (DINO, DINOv2), then timm's source."""
    release = release_file_place(model_name)
    timm_source = _timm_weight_source(model_name, cache_dir)
    if release is None:
        return timm_source
    return f"the official release file {release} (where torch.hub.load puts it; set TORCH_HOME), else {timm_source}"


def _timm_weight_source(model_name: str, cache_dir: str | None) -> str:
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None:
        return f"timm has no published weights for {model_name!r}"
    if cfg.hf_hub_id:
        from huggingface_hub import constants

        hub_cache = cache_dir or constants.HF_HUB_CACHE
        repo = cfg.hf_hub_id.split("@")[0]
        folder = Path(hub_cache) / ("models--" + repo.replace("/", "--"))
        return (
            f"Hugging Face hub repo {repo!r} (https://huggingface.co/{repo}); "
            f"expected in the hub cache at {folder} (set HF_HOME or HF_HUB_CACHE, or "
            f"cache_dir, to point elsewhere)"
        )
    url = cfg.url or "unknown URL"
    torch_cache = cache_dir or os.path.join(torch.hub.get_dir(), "checkpoints")
    return f"URL {url}; expected in the torch hub cache at {torch_cache} (set TORCH_HOME)"


def unavailable_message(model_name: str, cache_dir: str | None, reason: str) -> str:
    """The one message a user sees when weights are missing."""
    return (
        f"Weights for {model_name!r} are unavailable: {reason}.\n"
        f"  Source: {describe_weight_source(model_name, cache_dir)}.\n"
        f"  Fix: download the weights on a machine with network access and either copy "
        f"the hub cache folder to the path above, or pass the file with "
        f"backbone.checkpoint=/path/to/weights or descriptor.checkpoint=... (whichever group "
        f"names {model_name!r}; .safetensors, .bin or the original .pth); "
        f"backbone.pretrained=false / descriptor.pretrained=false builds random weights for testing."
    )


def cached_weights(model_name: str, cache_dir: str | None = None) -> bool:
    """Whether timm's published weights for ``model_name`` lie in the local cache
    (a weight file in the hub cache snapshot, or the URL's file in the torch hub
    cache), without building the model or touching the network."""
    if release_file(model_name) is not None:
        return True
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None:
        return False
    if cfg.hf_hub_id:
        return bool(hub_snapshot_files(cfg.hf_hub_id, cache_dir))
    if cfg.url:
        torch_cache = Path(cache_dir or os.path.join(torch.hub.get_dir(), "checkpoints"))
        return (torch_cache / os.path.basename(cfg.url)).is_file()
    return False


def hub_snapshot_files(hf_hub_id: str, cache_dir: str | None = None) -> list[Path]:
    """Weight files (.safetensors, .bin, .pth, .pt) of ``hf_hub_id``'s snapshots in the
    Hugging Face hub cache (``cache_dir`` or ``HF_HUB_CACHE``), sorted; [] when none."""
    from huggingface_hub import constants

    repo = hf_hub_id.split("@")[0]
    folder = Path(cache_dir or constants.HF_HUB_CACHE) / ("models--" + repo.replace("/", "--")) / "snapshots"
    return sorted(p for p in folder.glob("*/*") if p.suffix in (".safetensors", ".bin", ".pth", ".pt"))


#: The official release files that ``torch.hub.load`` of facebookresearch/dino and
#: facebookresearch/dinov2 leaves in ``torch.hub.get_dir()/checkpoints`` -> the timm model
#: they are. CutLER's ``dino_deitsmall8_300ep_pretrain.pth`` holds other weights than
#: DINO's ViT-S/8 release and is not found here: pass it with ``checkpoint=``.
RELEASE_FILES = {
    "vit_small_patch16_224.dino": "dino_deitsmall16_pretrain.pth",
    "vit_small_patch8_224.dino": "dino_deitsmall8_pretrain.pth",
    "vit_base_patch16_224.dino": "dino_vitbase16_pretrain.pth",
    "vit_base_patch8_224.dino": "dino_vitbase8_pretrain.pth",
    "vit_small_patch14_dinov2.lvd142m": "dinov2_vits14_pretrain.pth",
    "vit_base_patch14_dinov2.lvd142m": "dinov2_vitb14_pretrain.pth",
    "vit_large_patch14_dinov2.lvd142m": "dinov2_vitl14_pretrain.pth",
    "vit_giant_patch14_dinov2.lvd142m": "dinov2_vitg14_pretrain.pth",
    "vit_small_patch14_reg4_dinov2.lvd142m": "dinov2_vits14_reg4_pretrain.pth",
    "vit_base_patch14_reg4_dinov2.lvd142m": "dinov2_vitb14_reg4_pretrain.pth",
    "vit_large_patch14_reg4_dinov2.lvd142m": "dinov2_vitl14_reg4_pretrain.pth",
    "vit_giant_patch14_reg4_dinov2.lvd142m": "dinov2_vitg14_reg4_pretrain.pth",
}


def release_file(model_name: str) -> Path | None:
    """The official release file of ``model_name`` in torch hub's cache
    (``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``), where
    the authors' code put it, or None when the model has none or it is absent."""
    place = release_file_place(model_name)
    return Path(place) if place is not None and Path(place).is_file() else None


def release_file_place(model_name: str) -> str | None:
    """Where :func:`release_file` looks for ``model_name``, as text (None: no release file)."""
    name = RELEASE_FILES.get(model_name)
    return None if name is None else str(Path(torch.hub.get_dir()) / "checkpoints" / name)


def check_configured_weights(groups: dict[str, Any]) -> None:
    """Check the weights of every configured timm model before any is built, and
    report every missing one in one WeightsUnavailableError.

    Args:
        groups: config group name -> its settings, e.g. ``{"backbone": cfg.backbone,
            "descriptor": cfg.descriptor}``; a group without ``model_name`` is skipped.
            A model is missing when its ``checkpoint`` file does not exist, or when
            ``pretrained`` is on, no checkpoint is set, its weights are not in the
            cache and the hub cannot be reached (reachable: timm downloads them).
    """
    from huggingface_hub import constants

    missing: list[tuple[str, str, str]] = []  # group, model, reason
    for group, node in groups.items():
        name = node.get("model_name") if node is not None else None
        if not name or not timm.is_model(name):
            continue
        checkpoint = node.get("checkpoint")
        if checkpoint is not None:
            if not Path(os.path.expanduser(str(checkpoint))).is_file():
                missing.append((group, name, f"checkpoint file {checkpoint} does not exist"))
        elif node.get("pretrained") and not cached_weights(name, node.get("cache_dir")):
            missing.append((group, name, "not in the cache"))
    if not missing:
        return
    needs_hub = [m for m in missing if m[2] == "not in the cache"]
    if needs_hub and not constants.HF_HUB_OFFLINE and hub_reachable():
        missing = [m for m in missing if m not in needs_hub]  # timm will download them
        if not missing:
            return
    lines = [f"Weights are unavailable for {len(missing)} model(s); fix them all, then rerun:"]
    for group, name, reason in missing:
        offline = "offline mode (HF_HUB_OFFLINE) is on and they are not in the cache"
        why = (offline if constants.HF_HUB_OFFLINE else UNREACHABLE) if reason == "not in the cache" else reason
        source = describe_weight_source(name, groups[group].get("cache_dir"))
        lines += [
            f"  {group}: {name!r}: {why}.",
            f"    Source: {source}.",
            f"    Fix: copy the weights there, or {group}.checkpoint=/path/to/weights "
            f"(.safetensors, .bin or the original .pth), or {group}.pretrained=false (random weights, for testing).",
        ]
    raise WeightsUnavailableError("\n".join(lines))


def build_timm_model(
    model_name: str,
    *,
    pretrained: bool,
    checkpoint: str | None,
    seed: int,
    cache_dir: str | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """Create ``model_name`` with timm and the requested weights, in eval mode.

    Args:
        model_name: timm name with its pretrained tag, e.g. ``vit_base_patch8_224.dino``.
        pretrained: load the published weights (ignored when ``checkpoint`` is set).
        checkpoint: path of a local weight file, or None.
        seed: seed of the random initialisation (two builds with one seed are
            identical; the caller's random state is left untouched).
        cache_dir: overrides timm's download cache, or None for the default.
        model_kwargs: forwarded to ``timm.create_model`` (e.g. ``num_classes=0``).
    Raises:
        ValueError: timm does not know ``model_name`` (or its pretrained tag).
        WeightsUnavailableError: the weights cannot be found or downloaded.
        RuntimeError: the checkpoint cannot be read or lacks weights the model has.
    """
    check_timm_name(model_name)
    path = None
    if checkpoint is not None:
        path = Path(os.path.expanduser(str(checkpoint)))
        if not path.is_file():
            raise WeightsUnavailableError(
                unavailable_message(model_name, cache_dir, f"checkpoint file {path} does not exist")
            )
    if path is None and pretrained:
        path = release_file(model_name)  # the authors' torch hub file wins over the HF cache
    create_kwargs: dict[str, Any] = {"pretrained": bool(pretrained) and path is None}
    if cache_dir is not None:
        create_kwargs["cache_dir"] = str(cache_dir)
    # fork_rng: seeding must not disturb the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unreachable = False
        try:
            fetching = hub_cache_only_when_offline() if create_kwargs["pretrained"] else nullcontext()
            with fetching as unreachable:
                model = timm.create_model(model_name, **create_kwargs, **model_kwargs)
        except _offline_errors() as error:
            reason = UNREACHABLE if unreachable else f"{type(error).__name__} while fetching them"
            raise WeightsUnavailableError(unavailable_message(model_name, cache_dir, reason)) from error
    if path is not None:
        load_checkpoint_strictly(model, path)
    model.eval()
    model.requires_grad_(False)
    return model


def training_checkpoint_weights(state_dict: dict) -> dict:
    """A DINO full training checkpoint (``teacher`` / ``student`` entries, as
    ``main_dino.py`` saves them) -> the teacher's backbone weights, with the
    ``module.`` (DDP) and ``backbone.`` (MultiCropWrapper) prefixes stripped and the
    projection ``head.*`` dropped, as DINO's ``load_pretrained_weights`` does. Any
    other state dict is returned unchanged."""
    if not isinstance(state_dict.get("teacher"), dict):
        return state_dict
    weights = {}
    for key, value in state_dict["teacher"].items():
        for prefix in ("module.", "backbone."):
            key = key[len(prefix):] if key.startswith(prefix) else key
        if not key.startswith("head."):
            weights[key] = value
    return weights


def load_checkpoint_strictly(model: nn.Module, path: Path) -> None:
    """Load a local weight file into a timm model; every model weight must come
    from the file (extra file entries, e.g. other heads, only warn).

    timm's own loader turns strictness off whenever the classifier is dropped, so a
    wrong file would silently leave random weights: this checks instead. The
    model module's checkpoint filter runs first, so original release files
    (DINO / DINOv2 ``.pth``, torchvision ``.pth``) load as well as timm ones.
    """
    name = getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
    try:
        # weights_only: a checkpoint file is data, never code (no pickled objects run);
        # DINO's training checkpoints also hold their argparse Namespace of arguments
        import argparse

        with torch.serialization.safe_globals([argparse.Namespace]):
            state_dict = timm.models.load_state_dict(str(path), weights_only=True)
    except (OSError, RuntimeError, ValueError) as error:
        raise RuntimeError(f"checkpoint {path} could not be read: {error}") from error
    state_dict = training_checkpoint_weights(state_dict)
    module = sys.modules[type(model).__module__]
    filter_fn = getattr(module, "checkpoint_filter_fn", None) or getattr(module, "_filter_fn", None)
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    classifiers = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    model_keys = set(model.state_dict())
    leftover = [
        k
        for k in state_dict
        if k not in model_keys and not any(k.startswith(c + ".") for c in classifiers)
    ]
    state_dict = {k: v for k, v in state_dict.items() if k in model_keys}
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise RuntimeError(
            f"checkpoint {path} does not fit timm model {name!r}: {error}"
        ) from error
    if result.missing_keys:
        raise RuntimeError(
            f"checkpoint {path} does not fit timm model {name!r}: "
            f"{len(result.missing_keys)} model weights are missing from the file "
            f"(e.g. {result.missing_keys[:3]}), they would stay random"
        )
    if leftover:
        # extra heads (e.g. SwAV's projection head and prototypes) are harmless
        warnings.warn(
            f"checkpoint {path}: {len(leftover)} entries unused by {name!r} (e.g. {leftover[:3]})",
            stacklevel=2,
        )

