import numpy as np
import pytest
from PIL import Image

from claid.figures import hierarchy_figure, recall_figure, results_grid_figure
from claid.structures import Query, Ranking


def _image(color, size=(64, 48)):
    return Image.new("RGB", size, color)


def _is_png(path):
    with Image.open(path) as im:
        return im.format == "PNG" and im.width > 100


def test_hierarchy_figure_has_one_panel_per_depth(tmp_path):
    masks = np.zeros((3, 6, 8), bool)
    masks[0, :3] = True
    masks[1, 3:] = True
    masks[2, 4:, 4:] = True
    path = hierarchy_figure(_image("white"), masks, np.array([1, 1, 2]), tmp_path / "h.png")
    assert _is_png(path)
    with Image.open(path) as one, Image.open(
        hierarchy_figure(_image("white"), masks[:2], np.array([1, 1]), tmp_path / "h1.png")
    ) as fewer:
        assert one.width > fewer.width  # two depth levels -> one more panel


def test_results_grid_colours_hits_and_misses(tmp_path):
    images = {"q.jpg": _image("gray"), "a.jpg": _image("white"), "b.jpg": _image("white")}
    query = Query(image="q.jpg", box=(5, 5, 30, 30), positives=["a.jpg"], qid="q0")
    ranking = Ranking("q0", ["a.jpg", "b.jpg"], np.array([0.9, 0.5], np.float32), np.zeros((2, 4), np.float32))
    path = results_grid_figure([query], [ranking], images.__getitem__, tmp_path / "g.png", ranks=(1, 2))
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    green = ((pixels[:, 1] > 100) & (pixels[:, 0] < 60) & (pixels[:, 2] < 60)).sum()
    red = ((pixels[:, 0] > 200) & (pixels[:, 1] < 60) & (pixels[:, 2] < 60)).sum()
    assert green > 50 and red > 50


def test_results_grid_without_rankings_is_an_error(tmp_path):
    with pytest.raises(ValueError):
        results_grid_figure([Query(image="q", qid="x")], [], lambda i: _image("white"), tmp_path / "g.png")


def test_recall_figure(tmp_path):
    assert _is_png(recall_figure({"a": ([0.1, 0.5], [0.9, 0.4])}, tmp_path / "r.png"))


def test_titles_are_cut_to_one_readable_line():
    from claid.figures import TITLE_CHARS, short_title

    huge = "q" * 30_000_000 + "END"  # a 30 MB qid
    title = short_title(f"query {huge}")
    assert len(title) == TITLE_CHARS and title.startswith("query qqq") and title.endswith("qEND")
    assert "..." in title
    assert short_title("line\none\ttwo") == "line one two"
    assert short_title("db/caf\udce9.jpg") == "db/caf?.jpg"  # a non-UTF-8 file name
    assert short_title("short") == "short"


def test_results_grid_with_a_huge_qid_draws(tmp_path):
    query = Query(image="q.jpg", positives=["a.jpg"], qid="x" * 5_000_000)
    ranking = Ranking(query.qid, ["a.jpg"], np.array([0.9], np.float32), np.zeros((1, 4), np.float32))
    path = results_grid_figure([query], [ranking], lambda i: _image("white"), tmp_path / "g.png", ranks=(1,))
    assert _is_png(path)


def test_an_image_decoded_smaller_is_drawn_in_file_pixels():
    import matplotlib.pyplot as plt

    from claid.figures import _show

    small = _image("white", size=(160, 120))
    small.info["original_size"] = (480, 640)  # what load_image records for a reduced decode
    fig, ax = plt.subplots()
    _show(ax, small, (320, 240, 640, 480), edge="green")
    assert ax.get_xlim() == (0, 640) and ax.get_ylim() == (480, 0)
    (box,) = ax.patches
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (320, 240, 320, 240)
    plt.close(fig)
