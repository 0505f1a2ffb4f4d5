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
    path = hierarchy_figure(_image("white"), masks, np.array([1, 1, 2]), tmp_path / "h.png", cell=(8.0, 8.0))
    assert _is_png(path)
    with Image.open(path) as one, Image.open(
        hierarchy_figure(_image("white"), masks[:2], np.array([1, 1]), tmp_path / "h1.png", cell=(8.0, 8.0))
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


def test_importing_figures_leaves_the_matplotlib_backend_alone():
    import subprocess
    import sys

    code = "import matplotlib; matplotlib.use('svg'); import claid.figures; print(matplotlib.get_backend())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "svg", done.stderr


def test_hierarchy_draws_the_tree_with_skipped_nodes_and_its_caption():
    from claid.figures import draw_hierarchy

    masks = np.zeros((3, 6, 8), bool)
    masks[0, :3], masks[1, :2, :4], masks[2, 4:, 4:] = True, True, True
    # region 1 is a child of region 0; region 2 hangs under the root two levels down
    # (its ancestors at depths 1 and 2 were dummy nodes): two hollow markers
    fig = draw_hierarchy(_image("white"), masks, np.array([1, 2, 3]), parent=np.array([-1, 0, -1]),
                         title="scene_0001.jpg", caption="tau2=0.2 · dino_vits16 · synthetic", cell=(8.0, 8.0))
    tree = fig.axes[-1]
    assert tree.get_title() == "tree" and len(fig.axes) == 1 + 3 + 1
    hollow = [c for c in tree.collections if tuple(c.get_facecolor()[0][:3]) == (1.0, 1.0, 1.0)]
    assert len(hollow) == 2
    assert "tau2=0.2 · dino_vits16 · synthetic" in fig._suptitle.get_text()
    assert [t.get_text() for t in tree.get_legend().get_texts()] == ["output region", "dummy / filtered node"]


def test_long_captions_wrap_instead_of_being_cut():
    from claid.figures import draw_recall

    caption = "tau2=0.2 · " + " · ".join(f"key{i}=value{i}" for i in range(12)) + " · synthetic"
    fig = draw_recall({"a": ([0.1, 0.5], [0.9, 0.4])}, title=caption)
    text = fig.axes[0].get_title()
    assert "\n" in text and text.replace("\n", " ") == caption


def test_results_grid_has_a_legend_rank_headers_and_its_caption():
    from claid.figures import draw_results_grid

    images = {"q.jpg": _image("gray"), "a.jpg": _image("white"), "b.jpg": _image("white")}
    query = Query(image="q.jpg", box=(5, 5, 30, 30), positives=["a.jpg"], qid="q0")
    ranking = Ranking("q0", ["a.jpg", "b.jpg"], np.array([0.9, 0.5], np.float32), np.zeros((2, 4), np.float32))
    fig = draw_results_grid([query], [ranking], images.__getitem__, ranks=(1, 2), caption="tau2=0.1 · synthetic")
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["query box", "relevant", "not relevant", "localising box"]
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("query") and titles[1].startswith("rank\n#1") and "#2" in titles[2]
    assert "tau2=0.1 · synthetic" in fig._suptitle.get_text()


def test_sweep_figures_plot_metrics_baselines_and_heat_maps():
    from claid.figures import draw_sweep_heatmap, draw_sweep_metrics

    fig = draw_sweep_metrics(["0.1", "0.2", "0.3"], {"lab/mAP-all": [0.3, 0.32, 0.31], "regions": [4, 3, 2]},
                             baselines={"chance": [0.2, 0.2, 0.2], "global": [0.25, 0.25, 0.25]},
                             xlabel="cutter.tau2", title="sweep tau2 · synthetic")
    first, second = fig.axes
    assert [line.get_label() for line in first.get_lines()] == ["lab/mAP-all", "chance", "global"]
    assert list(first.get_lines()[0].get_xdata()) == [0.1, 0.2, 0.3] and len(second.get_lines()) == 1
    categorical = draw_sweep_metrics(["ksums", "ncut"], {"m": [0.1, 0.2]}, {}, xlabel="cutter", title="t")
    assert [t.get_text() for t in categorical.axes[0].get_xticklabels()] == ["ksums", "ncut"]
    heat = draw_sweep_heatmap([("seed", "true", 0.3), ("random", "true", 0.2), ("seed", "false", None)],
                              ["cutter.init", "cutter.filter_dummies"], "lab/mAP-all", "table7")
    cells = sorted(t.get_text() for t in heat.axes[0].texts)
    assert cells == ["0.200", "0.300"]


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
    from matplotlib.figure import Figure

    from claid.figures import _show

    small = _image("white", size=(160, 120))
    small.info["original_size"] = (480, 640)  # what load_image records for a reduced decode
    ax = Figure().subplots()
    _show(ax, small, (320, 240, 640, 480), edge="green", box_color="yellow")
    assert ax.get_xlim() == (0, 640) and ax.get_ylim() == (480, 0)
    (box,) = ax.patches
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (320, 240, 320, 240)


def test_hierarchy_masks_land_right_on_an_image_decoded_smaller():
    from claid.figures import draw_hierarchy

    small = _image("black", size=(80, 60))  # a 320 x 240 file decoded at a quarter
    small.info["original_size"] = (240, 320)
    masks = np.zeros((1, 6, 8), bool)
    masks[0, 0, 0] = True  # patch (0, 0): original pixels [0, 40) x [0, 40)
    fig = draw_hierarchy(small, masks, np.array([1]), cell=(40.0, 40.0))
    overlay = np.asarray(fig.axes[1].get_images()[0].get_array())
    painted = overlay.sum(axis=2) > 0
    assert painted[:10, :10].all() and painted.sum() == 100  # the top-left 10 x 10 pixels only
