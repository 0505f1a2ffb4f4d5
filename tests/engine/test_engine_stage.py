"""The extraction stage's key and lock rules (claid/engine/stage.py)."""

import pytest

from claid.engine.stage import launched_rank, store_key
from claid.structures import Benchmark


def _bench(tmp_path):
    return Benchmark(name="b", root=str(tmp_path), database=["a.jpg"], queries=[], protocol={})


def test_precision_is_part_of_the_store_key(compose_cfg, tmp_path):
    from claid.artifacts import config_hash

    def key(*overrides):
        return config_hash(store_key(compose_cfg(*overrides), _bench(tmp_path)))

    assert key("engine.precision=16-mixed") != key("engine.precision=32-true")
    assert key("engine.precision=bf16-mixed") != key("engine.precision=16-mixed")
    assert key("engine.precision=32") == key("engine.precision=32-true")  # one spelling


@pytest.mark.parametrize("env, rank", [({}, 0), ({"LOCAL_RANK": "0"}, 0), ({"LOCAL_RANK": "1"}, 1),
                                       ({"RANK": "3", "LOCAL_RANK": "1"}, 3), ({"NODE_RANK": "2"}, 2)])
def test_only_rank_zero_of_a_job_takes_the_store_lock(monkeypatch, env, rank):
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert launched_rank() == rank


def test_a_bad_store_verify_setting_is_one_clear_error(compose_cfg, tmp_path):
    from claid.engine.stage import extract_stage
    from claid.settings import SettingsError

    with pytest.raises(SettingsError, match=r"store.verify must be one of checksums, sizes \(got 'md5'\)"):
        extract_stage(compose_cfg("store.verify=md5"), _bench(tmp_path), None, tmp_path)
