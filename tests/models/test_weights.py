"""Weights: published (through the cache), local checkpoint, seeded random; one clear error."""

import time

import huggingface_hub.constants
import pytest
import timm
import torch

from claid.backbones.timm_vit import TimmViTBackbone
from claid.models.weights import WeightsUnavailableError, build_timm_model

TINY = dict(
    model_name="vit_tiny_patch16_224.augreg_in21k",
    patch_size=16,
    embed_dim=192,
)


@pytest.fixture
def offline(monkeypatch):
    # huggingface_hub reads HF_HUB_OFFLINE at import: patch the module value too
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_missing_published_weights_raise_one_clear_error_fast(offline, tmp_path):
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        TimmViTBackbone(pretrained=True, cache_dir=str(tmp_path), **TINY)
    assert time.monotonic() - start < 30
    message = str(info.value)
    assert "vit_tiny_patch16_224.augreg_in21k" in message
    assert str(tmp_path) in message  # the cache it looked in
    assert "checkpoint=" in message  # how to provide the file


def test_default_cache_is_named_in_the_message(offline, monkeypatch, tmp_path):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsUnavailableError, match="hub"):
        build_timm_model("resnet50.tv_in1k", pretrained=True, checkpoint=None, seed=0)


def test_missing_checkpoint_file_is_named(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(WeightsUnavailableError, match="nope.safetensors"):
        TimmViTBackbone(pretrained=False, checkpoint=str(missing), **TINY)


def test_checkpoint_file_is_loaded(tmp_path):
    source = TimmViTBackbone(pretrained=False, seed=3, **TINY)
    path = tmp_path / "weights.pth"
    torch.save(source.model.state_dict(), path)
    loaded = TimmViTBackbone(pretrained=True, checkpoint=str(path), seed=0, **TINY)
    other = TimmViTBackbone(pretrained=False, seed=0, **TINY)
    pixels = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels), source(pixels))
        assert not torch.allclose(other(pixels), source(pixels))


def test_a_checkpoint_with_a_classifier_head_loads_into_the_headless_model(tmp_path):
    # published files carry the classifier; the backbone drops it (num_classes=0)
    with_head = timm.create_model(TINY["model_name"], pretrained=False, num_classes=1000)
    path = tmp_path / "with_head.pth"
    torch.save(with_head.state_dict(), path)
    loaded = TimmViTBackbone(pretrained=True, checkpoint=str(path), **TINY)
    torch.testing.assert_close(loaded.model.cls_token, with_head.cls_token)


def test_checkpoint_of_another_model_fails_with_context(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    with pytest.raises(RuntimeError, match="does not fit"):
        TimmViTBackbone(pretrained=True, checkpoint=str(path), **TINY)


def test_unreachable_hub_means_cache_only_and_says_so(monkeypatch, tmp_path):
    import claid.models.weights as weights

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(weights, "hub_reachable", lambda timeout=3.0: False)
    with weights.hub_cache_only_when_offline() as switched:
        assert switched and huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # restored

    with pytest.raises(WeightsUnavailableError, match="hub cannot be reached") as info:
        TimmViTBackbone(pretrained=True, cache_dir=str(tmp_path), **TINY)
    assert "checkpoint=" in str(info.value)
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False


def test_reachable_hub_or_offline_mode_is_left_alone(monkeypatch):
    import claid.models.weights as weights

    monkeypatch.setattr(weights, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with weights.hub_cache_only_when_offline() as switched:
        assert not switched and huggingface_hub.constants.HF_HUB_OFFLINE is False
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with weights.hub_cache_only_when_offline() as switched:
        assert not switched
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True


def test_random_weights_never_probe_the_network(monkeypatch):
    import claid.models.weights as weights

    def no_probe(timeout=3.0):
        raise AssertionError("random weights must not touch the network")

    monkeypatch.setattr(weights, "hub_reachable", no_probe)
    TimmViTBackbone(pretrained=False, **TINY)


def test_behind_a_proxy_the_hub_is_not_probed_directly(monkeypatch):
    import socket

    import claid.models.weights as weights

    def no_direct_connection(*args, **kwargs):
        raise AssertionError("a direct connection was attempted behind a proxy")

    monkeypatch.setattr(socket, "create_connection", no_direct_connection)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert weights.hub_reachable() is True
    monkeypatch.delenv("HTTPS_PROXY")
    for name in weights._PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(OSError("down")))
    assert weights.hub_reachable() is False


def test_a_second_thread_waits_instead_of_seeing_the_flag_flip(monkeypatch):
    import threading

    import claid.models.weights as weights

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(weights, "hub_reachable", lambda timeout=3.0: False)
    inside, release, seen = threading.Event(), threading.Event(), []

    def first():
        with weights.hub_cache_only_when_offline():
            inside.set()
            release.wait(5)

    def second():
        with weights.hub_cache_only_when_offline() as switched:
            seen.append((switched, huggingface_hub.constants.HF_HUB_OFFLINE))

    a = threading.Thread(target=first)
    a.start()
    assert inside.wait(5)
    b = threading.Thread(target=second)
    b.start()
    b.join(0.3)
    assert b.is_alive() and not seen  # waits while the first load runs cache-only
    release.set()
    a.join(5)
    b.join(5)
    assert seen == [(True, True)] and huggingface_hub.constants.HF_HUB_OFFLINE is False


def test_local_text_model_folders_never_probe_the_hub(monkeypatch, tmp_path):
    from contextlib import nullcontext

    from claid.descriptors.siglip_tokens import _fetching

    assert isinstance(_fetching(str(tmp_path)), nullcontext)
    assert not isinstance(_fetching("google/siglip-base-patch16-224"), nullcontext)


def test_every_missing_model_is_reported_in_one_message(offline, tmp_path):
    from claid.models.weights import check_configured_weights

    groups = {
        "backbone": {"model_name": "vit_small_patch16_224.dino", "pretrained": True, "checkpoint": None,
                     "cache_dir": str(tmp_path)},
        "descriptor": {"model_name": "resnet50.tv_in1k", "pretrained": True, "checkpoint": None,
                       "cache_dir": str(tmp_path)},
    }
    with pytest.raises(WeightsUnavailableError) as info:
        check_configured_weights(groups)
    message = str(info.value)
    assert "2 model(s)" in message
    for group, name in (("backbone", "vit_small_patch16_224.dino"), ("descriptor", "resnet50.tv_in1k")):
        assert name in message
        assert f"{group}.checkpoint=" in message and f"{group}.pretrained=false" in message
    # a missing checkpoint file is named; random weights and cached weights pass
    groups["backbone"] = {"model_name": "vit_small_patch16_224.dino", "pretrained": False,
                          "checkpoint": str(tmp_path / "nope.pth")}
    groups["descriptor"]["pretrained"] = False
    with pytest.raises(WeightsUnavailableError, match="nope.pth"):
        check_configured_weights(groups)
    groups["backbone"]["checkpoint"] = None
    check_configured_weights(groups)


def test_weights_in_the_hub_cache_count_as_present(offline, tmp_path):
    from claid.models.weights import cached_weights, check_configured_weights

    snapshot = tmp_path / "models--timm--resnet50.tv_in1k" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    assert not cached_weights("resnet50.tv_in1k", str(tmp_path))
    (snapshot / "model.safetensors").write_bytes(b"x")
    assert cached_weights("resnet50.tv_in1k", str(tmp_path))
    check_configured_weights({"descriptor": {"model_name": "resnet50.tv_in1k", "pretrained": True,
                                             "checkpoint": None, "cache_dir": str(tmp_path)}})
