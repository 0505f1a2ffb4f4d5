"""claid's registered component classes: what a file on disk may name.

How an index dir names its descriptor, so that ``claid.search`` describes new
queries as the collection was described, without running anything a file names.

An index's ``search.json`` records ``{"name": <registered claid name>, "settings":
{...}}``, never a ``_target_``. Reading it back, the name is looked up in
:data:`DESCRIPTORS` (a fixed table of claid's own classes, not filled by imports),
and every setting must be a keyword the class takes, holding plain JSON data
(None, bool, number, string, list of those); a ViT descriptor's ``backbone`` is a
nested record checked the same way against :data:`BACKBONES`. Anything else is
refused with :class:`RecordedDescriptorError` before a class is imported.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

#: registered name -> (module, class) of each descriptor an index dir may name
DESCRIPTORS: dict[str, tuple[str, str]] = {
    "cnn": ("claid.descriptors.cnn", "CNNRegionDescriptor"),
    "vit_tokens": ("claid.descriptors.vit_tokens", "ViTTokenDescriptor"),
    "siglip_tokens": ("claid.descriptors.siglip_tokens", "SigLIPTokenDescriptor"),
}
#: registered name -> (module, class) of each backbone a ViT descriptor may name
BACKBONES: dict[str, tuple[str, str]] = {
    "timm_vit": ("claid.backbones.timm_vit", "TimmViTBackbone"),
}


class RecordedDescriptorError(ValueError):
    """A recorded descriptor that claid will not build: unknown name, a setting the
    class does not take, or a value that is not plain data."""


def _name_of(target: str, table: dict[str, tuple[str, str]]) -> str | None:
    for name, (module, cls) in table.items():
        if target == f"{module}.{cls}":
            return name
    return None


def _plain_settings(config: Mapping) -> dict:
    return {k: v for k, v in config.items() if not str(k).startswith("_")}


def record_descriptor(config: Mapping) -> dict:
    """A descriptor config (``_target_`` + keywords, as in ``conf/descriptor/``) ->
    the record an index dir keeps: ``{"name", "settings"}``; ``name`` is None for a
    class claid does not register (such an index is searched by passing the
    descriptor object to :func:`claid.search`), and then ``target`` names it."""
    target = str(config.get("_target_", ""))
    name = _name_of(target, DESCRIPTORS)
    settings = _plain_settings(config)
    backbone = settings.get("backbone")
    if isinstance(backbone, Mapping):
        backbone_name = _name_of(str(backbone.get("_target_", "")), BACKBONES)
        if backbone_name is None:
            name = None
        settings["backbone"] = {"name": backbone_name, "settings": _plain_settings(backbone)}
    record = {"name": name, "settings": settings}
    if name is None:
        record["target"] = target
    return record


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, list) and all(
        v is None or isinstance(v, (bool, int, float, str)) for v in value)


def _checked(record: Any, table: dict[str, tuple[str, str]], where: str,
             nested: tuple[str, ...] = ()) -> tuple[type, dict]:
    """(class, keyword settings) of a record, every part checked before the import."""
    if not isinstance(record, Mapping) or set(record) - {"name", "settings", "target"}:
        raise RecordedDescriptorError(f"{where}: expected {{\"name\", \"settings\"}}, got {record!r:.200}")
    name, settings = record.get("name"), record.get("settings")
    if name not in table:
        raise RecordedDescriptorError(
            f"{where}: {name!r} is not one of claid's registered names {sorted(table)}"
            + (f" (recorded class {record.get('target')!r}: pass the descriptor object instead)"
               if record.get("target") else ""))
    if not isinstance(settings, Mapping):
        raise RecordedDescriptorError(f"{where}.settings: expected a mapping, got {settings!r:.200}")
    module, cls_name = table[name]
    cls = getattr(importlib.import_module(module), cls_name)
    accepted = {p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}
    for key, value in settings.items():
        if key not in accepted:
            raise RecordedDescriptorError(f"{where}.settings.{key}: not a setting of {name}")
        if key not in nested and not _is_plain(value):
            raise RecordedDescriptorError(
                f"{where}.settings.{key}: only plain values are allowed, got {type(value).__name__}")
    return cls, dict(settings)


def descriptor_class(record: Mapping, where: str = "descriptor") -> type:
    """The registered class a record names (checked, nothing built)."""
    return _checked(record, DESCRIPTORS, where, nested=("backbone",))[0]


def build_recorded_descriptor(record: Mapping, where: str = "descriptor"):
    """Build the descriptor a record names, after checking every part of it.

    Args:
        record: ``{"name", "settings"}`` from :func:`record_descriptor`.
        where: how messages name the record (e.g. ``<index>/search.json: descriptor``).
    Raises:
        RecordedDescriptorError: see the module docstring.
    """
    cls, settings = _checked(record, DESCRIPTORS, where, nested=("backbone",))
    backbone = settings.get("backbone")
    if backbone is not None:
        backbone_cls, backbone_settings = _checked(backbone, BACKBONES, f"{where}.settings.backbone")
        # built here, as the descriptor would build its config: with the descriptor's
        # weights settings (no Hydra: no interpolation of strings read from the file)
        backbone_settings.update(pretrained=settings.get("pretrained", False),
                                 checkpoint=settings.get("checkpoint"))
        settings["backbone"] = backbone_cls(**backbone_settings)
    return cls(**settings)
