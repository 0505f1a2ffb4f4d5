"""claid serve shows an image that lies inside a tar shard (ILIAS's downloads), read by
its offset, with the same containment rule as a plain file."""

import io
import tarfile

import pytest
from PIL import Image

from claid.serve.database_images import file_under_root, sized_image
from claid.serve.engine import ApiError


def _shard(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "000000.tar", "w") as tar:
        for i, name in enumerate(names):
            buffer = io.BytesIO()
            Image.new("RGB", (40 + i, 30), (200, 10 * i, 40)).save(buffer, format="JPEG")
            info = tarfile.TarInfo(name)
            info.size = buffer.tell()
            buffer.seek(0)
            tar.addfile(info, buffer)
    return folder / "000000.tar"


def test_a_shard_member_is_served_whole_and_as_a_thumbnail(tmp_path):
    _shard(tmp_path / "yfcc100m", ["8800.jpg", "8801.jpg"])
    path = file_under_root(tmp_path, "yfcc100m/000000.tar/8801")
    whole = sized_image(path, None)
    assert Image.open(io.BytesIO(whole.body)).size == (41, 30)
    thumb = sized_image(path, 20)
    assert thumb.headers["X-Image-Size"] == "41x30" and Image.open(io.BytesIO(thumb.body)).size[0] <= 20


def test_a_missing_member_or_a_path_outside_the_root_is_refused(tmp_path):
    _shard(tmp_path / "yfcc100m", ["8800.jpg"])
    path = file_under_root(tmp_path, "yfcc100m/000000.tar/9999")  # the shard exists: checked on read
    with pytest.raises(ApiError) as err:
        sized_image(path, None)
    assert err.value.status == 404
    with pytest.raises(ApiError) as err:
        file_under_root(tmp_path / "yfcc100m", "../outside.tar/8800")
    assert err.value.status == 403
