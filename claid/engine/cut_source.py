"""Regions cut from a backbone's tokens: the usual source of the extraction stage.

:class:`CutRegions` holds the ``backbone``, ``cutter`` and ``descriptor`` nodes, builds
each network on first use (none when everything is cached) and runs the Lightning
extraction (:func:`claid.engine.extract_regions`) over the images not yet stored. With
``cache.tokens`` the backbone's tokens and the descriptor's feature maps are read from
(and added to) the feature caches, so a re-cut whose caches hold every image builds
no network. It meets :class:`claid.interfaces.RegionSource`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from claid.artifacts import config_hash, database_key
from claid.config.build import Components, build

log = logging.getLogger(__name__)


class CutRegions:
    """Regions cut by the ``cutter`` from the ``backbone``'s tokens, described by the
    ``descriptor`` (each a resolved config node with ``_target_``)."""

    makes_regions = False  # the cutter group is a cutter, not a region source itself

    def __init__(self, *, backbone: dict, cutter: dict, descriptor: dict) -> None:
        self.backbone_node, self.cutter_node, self.descriptor_node = backbone, cutter, descriptor
        self.networks = Components({"backbone": backbone, "cutter": cutter, "descriptor": descriptor})

    def key_parts(self) -> dict:
        """The store key's parts that say how regions are made."""
        from claid.engine.extraction_stage import region_descriptor_key

        return {"backbone": self.backbone_node, "cutter": self.cutter_node,
                "descriptor": region_descriptor_key(self.descriptor_node)}

    def weight_groups(self) -> dict[str, dict]:
        """The groups whose weight files the run needs: backbone and descriptor."""
        return {"backbone": self.backbone_node, "descriptor": self.descriptor_node}

    def descriptor(self) -> Any:
        """The region descriptor (built on first use, shared with the query stage)."""
        return self.networks.get("descriptor")

    def report_counts(self, store) -> dict:
        """Counts this source adds to the run report: none."""
        return {}

    def extract(self, settings, bench, cache_dir: Path, key: dict, store_dir: Path):
        """The images of ``bench`` not yet in ``store_dir`` -> the store; networks are
        built only for what the feature caches lack."""
        from claid.store import RegionStore

        done: set[str] = set()
        if (store_dir / "manifest.json").exists():
            done = RegionStore.open(str(store_dir)).done_ids()
        images = [(image_id, bench.path(image_id)) for image_id in bench.database]
        todo_ids = [image_id for image_id in bench.database if image_id not in done]
        token_cache, map_cache = open_feature_caches(settings, self, bench, cache_dir)
        backbone = None
        if token_cache is None or token_cache.missing(todo_ids):
            backbone = self.networks.get("backbone")
        else:
            log.info("backbone tokens of all %d images to do are cached in %s",
                     len(todo_ids), token_cache.directory)
        descriptor = self._extraction_descriptor(map_cache, todo_ids)
        # claid.engine.extract_regions with the engine settings (threads are set at the start of
        # the run by claid.threads, not passed to the extraction)
        extract = build(settings.engine)
        return extract(
            images,
            backbone=backbone,
            cutter=self.networks.get("cutter"),
            descriptor=descriptor,
            store_dir=str(store_dir),
            config=key,
            dtype=settings.store_dtype,
            token_cache=token_cache,
            map_cache=map_cache,
            decode=bench.decode,
        )

    def _extraction_descriptor(self, map_cache, todo_ids: list[str]):
        """The descriptor the extraction pools with: one built without its network when
        the class allows it and nothing to do needs a forward (its maps are cached, or it
        pools the detector's tokens), else the run's own (built once)."""
        from hydra.utils import get_class

        cls = get_class(self.descriptor_node["_target_"])
        if cls.poolable_without_network:
            if not cls.needs_image:
                return build(self.descriptor_node, network=False)
            if map_cache is not None and map_cache.geometry and not map_cache.missing(todo_ids):
                return build(self.descriptor_node, network=False, **map_cache.geometry)
        descriptor = self.descriptor()
        if map_cache is not None:
            map_cache.set_geometry(descriptor.pooling_geometry())
        return descriptor


def feature_cache_keys(settings, source: CutRegions, bench) -> tuple[dict, dict]:
    """What the two feature caches are keyed by: the backbone tokens by (database
    images, backbone, ``cache.token_dtype``); the descriptor maps by (database images,
    region-descriptor settings, ``cache.map_dtype``); both by how images are decoded.
    Neither depends on the cutter, so every cutter variant shares them."""
    from claid.engine.extraction_stage import region_descriptor_key
    from claid.images import decode_key

    dataset, decode = database_key(bench), decode_key(bench.decode)
    return ({"dataset": dataset, "backbone": source.backbone_node,
             "dtype": settings.token_dtype, "decode": decode},
            {"dataset": dataset, "descriptor": region_descriptor_key(source.descriptor_node),
             "dtype": settings.map_dtype, "decode": decode})


def open_feature_caches(settings, source: CutRegions, bench, cache_dir: Path):
    """The run's feature caches (created when absent): ``(tokens, feature_maps)``,
    each a :class:`claid.engine.feature_cache.FeatureCache`; the second is None when
    the descriptor needs no image. Both None when ``cache.tokens`` is off."""
    from hydra.utils import get_class

    from claid.engine.feature_cache import FeatureCache

    if not settings.cache_tokens:
        return None, None
    token_key, map_key = feature_cache_keys(settings, source, bench)
    tokens = FeatureCache(cache_dir / f"tokens-{config_hash(token_key)}", kind="tokens",
                          key=token_key, dtype=settings.token_dtype)
    maps = None
    if get_class(source.descriptor_node["_target_"]).needs_image:
        maps = FeatureCache(cache_dir / f"featuremaps-{config_hash(map_key)}",
                            kind="feature_maps", key=map_key, dtype=settings.map_dtype)
    return tokens, maps
