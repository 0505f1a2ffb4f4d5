import pytest

from claid.threads import MAX_AUTO_THREADS, apply_threads, resolve_threads, usable_cores


def test_auto_is_half_the_usable_cores_within_bounds():
    expected = max(1, min(MAX_AUTO_THREADS, usable_cores() // 2))
    assert resolve_threads("auto") == expected == resolve_threads(None)
    assert resolve_threads(3) == 3


@pytest.mark.parametrize("bad", [0, -1, "two", 1.5, True])
def test_bad_thread_settings_name_the_key(bad):
    with pytest.raises(ValueError, match="engine.threads"):
        resolve_threads(bad)


def test_apply_threads_sets_torch_blas_and_numba(monkeypatch):
    import numba
    import torch
    from threadpoolctl import threadpool_info

    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1
        assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
        import os

        assert os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=before)
        numba.set_num_threads(min(before, numba.config.NUMBA_NUM_THREADS))


def test_engine_threads_is_a_documented_setting(compose_cfg):
    assert compose_cfg().engine.threads == "auto"
    assert compose_cfg("engine.threads=1").engine.threads == 1
