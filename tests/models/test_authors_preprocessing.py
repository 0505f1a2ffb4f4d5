"""claid's pixels against the authors' preprocessing (issue 20, item 4).

The reference is ``tests/reference/authors_preprocessing.py``: the steps of
wlzhao22/CLAID's ``detector.py`` (plain PIL open, ``Resize(360, max_size=800)`` only
when ``min(w, h) > 355``, top-left crop to the patch grid) and ``descriptor.py`` (the
original image, normalised). claid's side is what an extraction really feeds its
networks: ``ImageListDataset`` with the backbone and descriptor built from the YAMLs.

Equal, to the float: every size and mode the authors' code reads as claid does
(portrait, landscape, below and at the 355 / 356 boundary, past the 800 px cap, gray,
CMYK). Different by design, each pinned here and named in the README: EXIF rotation
and the reduced decoding of large photos (``images.exif_transpose`` / ``images.reduced``
false gives the authors' pixels), the descriptor's 1024 px memory cap
(``descriptor.max_long_side=null`` gives native size), transparency (composited over
white, where PIL's ``convert("RGB")`` drops the alpha) and 16-bit samples (scaled,
where PIL clips them at 255).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from claid.engine.datamodule import ImageListDataset
from claid.images import DEFAULT_DECODE, DecodeOptions

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "authors_preprocessing.py"
CONF = Path(__file__).resolve().parents[2] / "conf"
AUTHORS_DECODE = DecodeOptions(exif_transpose=False, reduced=False)


def _reference():
    spec = importlib.util.spec_from_file_location("authors_preprocessing", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


authors = _reference()


def _photo(name: str, height: int, width: int) -> Image.Image:
    image = Image.fromarray(getattr(skdata, name)())
    return image if image.size == (width, height) else image.resize((width, height), Image.BICUBIC)


def _save(folder: Path, name: str, image: Image.Image, **kwargs) -> str:
    path = folder / name
    image.save(path, **kwargs)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("authors_pre")
    out = {
        "landscape": _save(folder, "landscape.jpg", _photo("coffee", 480, 640), quality=92),
        "portrait": _save(folder, "portrait.jpg", _photo("astronaut", 640, 480), quality=92),
        "small": _save(folder, "small.jpg", _photo("chelsea", 300, 451), quality=92),
        "edge355": _save(folder, "edge355.png", _photo("rocket", 355, 530)),
        "edge356": _save(folder, "edge356.png", _photo("rocket", 530, 356)),
        "wide": _save(folder, "wide.jpg", _photo("coffee", 400, 1000), quality=92),
        "gray": _save(folder, "gray.png", _photo("astronaut", 500, 700).convert("L")),
        "cmyk": _save(folder, "cmyk.jpg", _photo("coffee", 480, 640).convert("CMYK"), quality=92),
    }
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out["exif"] = _save(folder, "exif.jpg", _photo("rocket", 480, 640), quality=92, exif=exif)
    out["large"] = _save(folder, "large.jpg", _photo("astronaut", 2448, 3264), quality=92)
    rgba = _photo("coffee", 400, 600).convert("RGBA")
    alpha = np.full((400, 600), 255, np.uint8)
    alpha[100:200, 100:300] = 60
    rgba.putalpha(Image.fromarray(alpha))
    out["rgba"] = _save(folder, "rgba.png", rgba)
    gray16 = (np.asarray(_photo("astronaut", 400, 600).convert("L"), np.uint16) * 257)
    out["gray16"] = _save(folder, "gray16.png", Image.fromarray(gray16))
    return out


@pytest.fixture(scope="module")
def networks():
    """The default backbone (DINO ViT-B/8, the authors' detector), DINOv2 ViT-B/14, and
    the descriptor (ResNet-50, default and uncapped), built from the YAMLs."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    def build(*overrides):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=["backbone.pretrained=false",
                                               "descriptor.pretrained=false", *overrides])
        return instantiate(cfg.backbone), instantiate(cfg.descriptor)

    dino, resnet = build()
    dinov2, _ = build("backbone=dinov2_vitb14")
    _, uncapped = build("descriptor.max_long_side=null")
    return {"dino": dino, "dinov2": dinov2, "resnet": resnet, "uncapped": uncapped}


def _claid(path: str, backbone, descriptor, decode=DEFAULT_DECODE) -> dict:
    item = ImageListDataset([("x", path)], backbone=backbone, descriptor=descriptor,
                            decode=decode)[0]
    assert item["error"] is None, item["error"]
    return item


def _same(mine: torch.Tensor, theirs: torch.Tensor) -> None:
    assert tuple(mine.shape) == tuple(theirs.shape)
    torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)


EQUAL = ["landscape", "portrait", "small", "edge355", "edge356", "wide", "gray", "cmyk"]


@pytest.mark.parametrize("case", EQUAL)
def test_detector_and_descriptor_pixels_equal_the_authors(files, networks, case):
    item = _claid(files[case], networks["dino"], networks["resnet"])
    theirs, rate = authors.detector_pixels(files[case], patch_size=8)
    _same(item["backbone_pixels"], theirs)
    assert item["backbone_scale"][0] == pytest.approx(rate)  # boxes go back to the same pixels
    _same(item["descriptor_pixels"], authors.descriptor_pixels(files[case]))


@pytest.mark.parametrize("case", ["landscape", "edge356", "wide", "small"])
def test_dinov2_crops_to_its_own_patch_as_the_authors_rule_does(files, networks, case):
    item = _claid(files[case], networks["dinov2"], networks["resnet"])
    _same(item["backbone_pixels"], authors.detector_pixels(files[case], patch_size=14)[0])


def test_the_355_356_boundary(files, networks):
    # 355 px short side: native; 356: resized to 360 (detector.py's `min(w, h) > 355`)
    native = _claid(files["edge355"], networks["dino"], networks["resnet"])["backbone_pixels"]
    resized = _claid(files["edge356"], networks["dino"], networks["resnet"])["backbone_pixels"]
    assert native.shape[1:] == (352, 528)
    assert resized.shape[1:] == (528, 360)  # 530 x 356 -> 535 x 360 -> cropped


def test_exif_rotation_is_claids_deviation_and_the_option_removes_it(files, networks):
    rotated = _claid(files["exif"], networks["dino"], networks["resnet"])
    theirs, _ = authors.detector_pixels(files["exif"], patch_size=8)
    assert rotated["image_size"] == (640, 480)  # displayed: portrait
    assert tuple(theirs.shape[1:]) == (360, 480)  # the authors' code sees the stored landscape
    plain = _claid(files["exif"], networks["dino"], networks["resnet"], decode=AUTHORS_DECODE)
    _same(plain["backbone_pixels"], theirs)
    _same(plain["descriptor_pixels"], authors.descriptor_pixels(files["exif"]))


def test_large_photo_reduced_decode_and_descriptor_cap(files, networks):
    theirs, _ = authors.detector_pixels(files["large"], patch_size=8)
    # default: decoded at the size used (libjpeg DCT scaling), then the one resize
    reduced = _claid(files["large"], networks["dino"], networks["resnet"])
    assert reduced["backbone_pixels"].shape == theirs.shape
    levels = (reduced["backbone_pixels"] - theirs).abs() * torch.tensor(authors.STD).view(3, 1, 1) * 255
    assert 0 < float(levels.mean()) < 2.0  # a small, nonzero difference in 8-bit levels
    assert tuple(reduced["descriptor_pixels"].shape[1:]) == (768, 1024)  # the 1024 px cap
    # the authors' decoding and an uncapped descriptor: their pixels exactly
    full = _claid(files["large"], networks["dino"], networks["uncapped"], decode=AUTHORS_DECODE)
    _same(full["backbone_pixels"], theirs)
    _same(full["descriptor_pixels"], authors.descriptor_pixels(files["large"]))


def test_transparency_and_16_bit_are_named_deviations(files, networks):
    item = _claid(files["rgba"], networks["dino"], networks["resnet"], decode=AUTHORS_DECODE)
    mine, theirs = item["descriptor_pixels"], authors.descriptor_pixels(files["rgba"])
    opaque = torch.ones(400, 600, dtype=torch.bool)
    opaque[100:200, 100:300] = False
    _same(mine[:, opaque], theirs[:, opaque])  # opaque pixels: the same
    assert float((mine[:, ~opaque] - theirs[:, ~opaque]).abs().mean()) > 0.1  # composited
    item = _claid(files["gray16"], networks["dino"], networks["resnet"], decode=AUTHORS_DECODE)
    mine, theirs = item["descriptor_pixels"], authors.descriptor_pixels(files["gray16"])
    expected = np.asarray(_photo("astronaut", 400, 600).convert("L"), np.float32) / 255.0
    std, mean = authors.STD[0], authors.MEAN[0]
    assert np.allclose(mine[0].numpy() * std + mean, expected, atol=1e-5)  # 16 -> 8 bits
    saturated = float(((theirs[0] * std + mean) > 0.999).float().mean())
    assert saturated > 0.8  # PIL clips the 16-bit samples at 255: mostly white


def test_decode_options_enter_the_keys_and_reject_bad_values(compose_cfg):
    from dataclasses import replace

    from claid.config.build import build
    from claid.config.checks import check_settings
    from claid.config.rules import SettingsError
    from claid.config.run_settings import run_settings
    from claid.engine.cut_source import feature_cache_keys
    from claid.engine.extraction_stage import store_key
    from claid.images import DECODE_VERSION

    cfg = compose_cfg()
    settings = run_settings(cfg)
    extraction, source = settings.extraction, settings.regions
    bench = build(cfg.dataset)
    assert store_key(extraction, bench, source)["decode"] == DECODE_VERSION  # defaults: keys as before
    plain = replace(bench, decode=AUTHORS_DECODE)
    assert store_key(extraction, plain, source)["decode"] != DECODE_VERSION
    assert (feature_cache_keys(extraction, source, plain)[0]
            != feature_cache_keys(extraction, source, bench)[0])
    check_settings(compose_cfg("images.exif_transpose=false", "images.reduced=false"))
    with pytest.raises(SettingsError, match="images.reduced must be true or false"):
        check_settings(compose_cfg("images.reduced=3"))
    with pytest.raises(SettingsError, match="unknown key"):
        check_settings(compose_cfg("+images.exif=false"))
