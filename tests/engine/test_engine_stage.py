"""claid.engine.extraction_stage: the store key; rank 0 lists the store afresh after extraction and
refuses an incomplete one; what a rank other than 0 does; store.verify."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

import claid.engine.extraction_stage as stage
from claid.engine import extract_regions
from claid.engine.extraction_stage import IncompleteStoreError, extract_stage

TINY_SYNTHETIC = ["dataset.n_scenes=6", "dataset.n_queries=2", "dataset.image_size=[64,80]",
                  "tracking=none"]


class _Source:
    """A region source whose extraction is ``extract`` (claid.interfaces.RegionSource)."""

    def __init__(self, extract):
        self.extract = extract

    def key_parts(self):
        return {"backbone": None, "cutter": {"test": True}, "descriptor": {}}


def _settings(compose_cfg, *overrides):
    from claid.config.run_settings import run_settings

    return run_settings(compose_cfg(*TINY_SYNTHETIC, *overrides)).extraction


def _extract_all_but(n_lost: int, components, calls: list):
    """A source whose ranks commit every image but the last ``n_lost`` (a rank
    that lost its slice, a stale listing)."""

    def extract(settings, bench, cache_dir, key, store_dir):
        calls.append(store_dir)
        backbone, cutter, descriptor = components
        kept = bench.database[:len(bench.database) - n_lost]
        return extract_regions([(i, bench.path(i)) for i in kept], backbone=backbone,
                               cutter=cutter, descriptor=descriptor, store_dir=str(store_dir),
                               config=key, dtype="float32", progress=False)

    return _Source(extract)


def test_rank_zero_refuses_a_store_missing_images_and_names_them(compose_cfg, components,
                                                                 monkeypatch, tmp_path):
    monkeypatch.setattr(stage, "LISTING_SETTLE_SECONDS", 0.0)
    cfg = compose_cfg(*TINY_SYNTHETIC)
    bench = instantiate(cfg.dataset)
    calls = []
    source = _extract_all_but(2, components, calls)
    with pytest.raises(IncompleteStoreError) as info:
        extract_stage(_settings(compose_cfg), bench, source, tmp_path / "cache")
    message = str(info.value)
    assert f"lacks 2 of {len(bench.database)}" in message
    assert all(image_id in message for image_id in bench.database[-2:])
    assert bench.database[0] not in message

    # once every image is there, the same stage returns the store
    source = _extract_all_but(0, components, calls)
    store = extract_stage(_settings(compose_cfg), bench, source, tmp_path / "cache")
    assert store.done_ids() == set(bench.database) and len(calls) == 2


def test_another_rank_returns_its_view_without_checking(compose_cfg, components, monkeypatch,
                                                         tmp_path):
    """Only rank 0 judges the store: another rank may finish before the others commit."""
    monkeypatch.setenv("LOCAL_RANK", "1")
    cfg = compose_cfg(*TINY_SYNTHETIC)
    bench = instantiate(cfg.dataset)
    source = _extract_all_but(3, components, [])
    store = extract_stage(_settings(compose_cfg), bench, source, tmp_path / "cache")
    assert len(store.done_ids()) == len(bench.database) - 3


def test_rank_zero_lists_again_while_a_lagging_listing_misses_shards(compose_cfg, components,
                                                                     monkeypatch, tmp_path):
    """A listing that lags (NFS directory cache) is not taken for a missing image."""
    from claid.store import RegionStore

    cfg = compose_cfg(*TINY_SYNTHETIC)
    bench = instantiate(cfg.dataset)
    source = _extract_all_but(0, components, [])
    opened = []

    class LaggingStore:  # the first listing after the barrier misses the last image
        @staticmethod
        def open(path):
            store = RegionStore.open(path)
            opened.append(path)
            if len(opened) == 1:
                done = store.done_ids() - {bench.database[-1]}
                return type("Listed", (), {"done_ids": lambda self: done})()
            return store

    monkeypatch.setattr("claid.store.RegionStore", LaggingStore)
    monkeypatch.setattr(stage.time, "sleep", lambda seconds: None)
    store = extract_stage(_settings(compose_cfg), bench, source, tmp_path / "cache")
    assert len(opened) == 2 and store.done_ids() == set(bench.database)


def _bench(tmp_path):
    from claid.structures import Benchmark

    return Benchmark(name="b", root=str(tmp_path), database=["a.jpg"], queries=[], protocol={})


def test_precision_is_part_of_the_store_key(compose_cfg, tmp_path):
    from claid.artifacts import config_hash
    from claid.config.run_settings import run_settings
    from claid.engine.extraction_stage import store_key

    def key(*overrides):
        settings = run_settings(compose_cfg(*overrides))
        return config_hash(store_key(settings.extraction, _bench(tmp_path), settings.regions))

    assert key("engine.precision=16-mixed") != key("engine.precision=32-true")
    assert key("engine.precision=bf16-mixed") != key("engine.precision=16-mixed")
    assert key("engine.precision=32") == key("engine.precision=32-true")  # one spelling


def test_a_bad_store_verify_setting_is_one_clear_error(compose_cfg, tmp_path):
    from claid.config.rules import SettingsError
    from claid.engine.extraction_stage import ExtractionSettings

    with pytest.raises(SettingsError, match=r"store.verify must be one of checksums, sizes \(got 'md5'\)"):
        _settings(compose_cfg, "store.verify=md5")
    with pytest.raises(SettingsError, match=r"^store.verify must be one of checksums, sizes \(got 'md5'\)"):
        ExtractionSettings(verify="md5")  # a direct caller too
