"""load_image: odd-but-valid files decode to the right RGB pixels, bad files raise ImageError."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from claid.images import ImageError, displayed_size, image_size_from_header, load_image


def _photo() -> np.ndarray:
    """A real photo (skimage's astronaut), 128 x 96 so tests stay fast."""
    return np.asarray(Image.fromarray(skdata.astronaut()).resize((128, 96)))


def write_png16_rgb(path, rgb16: np.ndarray) -> None:
    """Write a 16-bit-per-channel RGB PNG by hand (PIL cannot write one)."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header))
        f.write(chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_exif_rotated_jpeg(path, rgb: np.ndarray, orientation: int = 6) -> None:
    """Store ``rgb`` as a JPEG whose EXIF says "rotate for display"."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, quality=95, exif=exif.tobytes())


def test_rgb_jpeg_roundtrip(tmp_path):
    rgb = _photo()
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    image = load_image(tmp_path / "a.jpg")
    assert image.mode == "RGB" and image.size == (128, 96)
    assert np.abs(np.asarray(image).astype(int) - rgb).mean() < 6


def test_exif_orientation_is_applied(tmp_path):
    rgb = _photo()
    write_exif_rotated_jpeg(tmp_path / "r.jpg", rgb, orientation=6)
    image = load_image(tmp_path / "r.jpg")
    # Orientation 6 = the stored pixels must be rotated 90 degrees clockwise for display.
    assert image.size == (96, 128)
    expected = np.rot90(rgb, k=-1)
    assert np.abs(np.asarray(image).astype(int) - expected).mean() < 6
    # the header helper reports the displayed shape too, so batches group what the model sees
    assert image_size_from_header(tmp_path / "r.jpg") == (128, 96)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = _photo().mean(axis=2).astype(np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = np.asarray(load_image(tmp_path / "g.png"))
    assert out.shape == (96, 128, 3)
    assert np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)


def test_cmyk_jpeg_is_converted(tmp_path):
    rgb = _photo()
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    out = load_image(tmp_path / "c.jpg")
    assert out.mode == "RGB"
    assert np.abs(np.asarray(out).astype(int) - rgb).mean() < 10


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200  # red everywhere...
    rgba[:4, :, 3] = 255  # ...opaque in the top half, fully transparent below
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    out = np.asarray(load_image(tmp_path / "t.png"))
    assert (out[:4] == [200, 0, 0]).all()
    assert (out[4:] == 255).all()


def test_16bit_gray_png_is_scaled_not_clipped(tmp_path):
    values = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    out = np.asarray(load_image(tmp_path / "g16.png"))
    assert out.dtype == np.uint8 and out.shape == (48, 64, 3)
    expected = np.rint(values / 257.0)
    assert np.abs(out[..., 1].astype(int) - expected).max() <= 1
    assert out.max() == 255 and out.min() == 0 and len(np.unique(out)) > 200


def test_16bit_rgb_png(tmp_path):
    rgb = _photo()
    write_png16_rgb(tmp_path / "c16.png", rgb.astype(np.uint16) * 257)
    out = np.asarray(load_image(tmp_path / "c16.png"))
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).max() <= 1


@pytest.mark.parametrize(
    "kind, reason",
    [("empty", "empty file"), ("text", "not an image"), ("truncated", "truncated"),
     ("missing", "cannot read")],
)
def test_bad_files_raise_with_reason(tmp_path, kind, reason):
    path = tmp_path / f"{kind}.jpg"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a picture\n" * 20)
    elif kind == "truncated":
        Image.fromarray(_photo()).save(path, quality=95)
        blob = path.read_bytes()
        path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert reason in info.value.reason
    assert str(path) in str(info.value)


def test_displayed_size_matches_the_decoded_image(tmp_path):
    rgb = _photo()
    Image.fromarray(rgb).save(tmp_path / "plain.png")
    for orientation in (1, 3, 6, 8):
        write_exif_rotated_jpeg(tmp_path / f"o{orientation}.jpg", rgb, orientation=orientation)
        exif = Image.Exif()
        exif[0x0112] = orientation
        for fmt in ("TIFF", "PNG", "WEBP"):  # Pillow rotates TIFF sizes itself
            Image.fromarray(rgb).save(tmp_path / f"o{orientation}.{fmt.lower()}", format=fmt,
                                      exif=exif.tobytes())
    for path in sorted(tmp_path.iterdir()):
        image = load_image(path)
        assert displayed_size(path) == (image.height, image.width), path.name
    assert displayed_size(tmp_path / "o6.jpg") == (rgb.shape[1], rgb.shape[0])  # swapped


@pytest.mark.parametrize("kind, reason", [("empty", "empty file"), ("text", "not an image"),
                                          ("missing", "cannot read"), ("header", "truncated")])
def test_displayed_size_names_unreadable_files(tmp_path, kind, reason):
    path = tmp_path / f"{kind}.jpg"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("no pixels here\n")
    elif kind == "header":
        path.write_bytes(b"\xff\xd8\xff\xe0 cut inside the header")
    with pytest.raises(ImageError) as info:
        displayed_size(path)
    assert reason in info.value.reason
    assert image_size_from_header(path) is None


# ----------------------------------------------------------------------------- decoding at the size used
def _big(width=1600, height=1200) -> np.ndarray:
    return np.asarray(Image.fromarray(skdata.astronaut()).resize((width, height), Image.BICUBIC))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_photo_is_decoded_at_the_size_used(tmp_path, fmt):
    from claid.images import original_size

    path = tmp_path / f"big.{fmt.lower()}"
    Image.fromarray(_big()).save(path, format=fmt)
    asked = []

    def needed(height, width):
        asked.append((height, width))
        return 360

    image = load_image(path, long_side_needed=needed)
    assert asked == [(1200, 1600)]  # asked with the displayed size, before decoding
    assert 360 <= image.width < 1600 / 2  # 1/4 in both cases: JPEG DCT scaling, PNG reduce(4)
    assert image.size == (400, 300)
    assert original_size(image) == (1200, 1600)
    full = load_image(path)
    assert original_size(full) == (1200, 1600) and "original_size" not in full.info
    # the same picture: the reduced decode against the full one shrunk to its size
    shrunk = np.asarray(full.resize(image.size, Image.BOX)).astype(int)
    assert np.abs(np.asarray(image).astype(int) - shrunk).mean() < 4


def test_no_reduction_below_a_factor_two_or_without_a_need(tmp_path):
    from claid.images import original_size

    Image.fromarray(_big(800, 600)).save(tmp_path / "a.jpg")
    for needed in (None, 500, 800, 5000):
        image = load_image(tmp_path / "a.jpg", long_side_needed=lambda h, w, n=needed: n)
        assert image.size == (800, 600) and original_size(image) == (600, 800)


def test_reduced_decode_keeps_exif_orientation(tmp_path):
    from claid.images import original_size

    write_exif_rotated_jpeg(tmp_path / "r.jpg", _big(), orientation=6)
    image = load_image(tmp_path / "r.jpg", long_side_needed=lambda h, w: 400)
    assert image.size == (300, 400)  # displayed: portrait
    assert original_size(image) == (1600, 1200)
    assert displayed_size(tmp_path / "r.jpg") == (1600, 1200)


def test_networks_get_the_same_input_from_a_reduced_decode(tmp_path):
    from claid.models.preprocessing import prepare_for_grid, prepare_full_image

    Image.fromarray(_big()).save(tmp_path / "big.jpg", quality=95)
    full = load_image(tmp_path / "big.jpg")
    grid = dict(patch_size=16, short_side=360, max_long_side=800, native_below=356,
                mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    reduced = load_image(tmp_path / "big.jpg", long_side_needed=lambda h, w: 480)
    (a, scale_a), (b, scale_b) = prepare_for_grid(full, **grid), prepare_for_grid(reduced, **grid)
    assert a.shape == b.shape == (3, 352, 480) and scale_a == scale_b == (1200 / 360, 1600 / 480)
    assert (a - b).abs().mean() < 0.05  # 1-2 grey levels of 255 (x4 by std 0.25)
    described = load_image(tmp_path / "big.jpg", long_side_needed=lambda h, w: 1000)
    (c, scale_c), (d, scale_d) = (prepare_full_image(im, max_long_side=1000, min_side=32,
                                                     mean=(0, 0, 0), std=(1, 1, 1))
                                  for im in (full, described))
    assert c.shape == d.shape == (3, 750, 1000) and scale_c == scale_d == (1.6, 1.6)
    assert (c - d).abs().mean() < 0.01
