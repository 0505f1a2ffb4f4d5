"""Ground-truth pickles are read as plain data: a crafted file never runs its payload."""

import pathlib
import pickle

import numpy as np
import pytest

from claid.datasets import DatasetFormatError
from claid.datasets.safe_pickle import UnsafePickleError, load_plain_pickle


class _WritesAFile:
    """Unpickling this calls ``Path(target).write_text("pwned")``: the payload."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.write_text, (pathlib.Path(self.target), "pwned"))


class _Evaluates:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_and_numpy_arrays_load_at_every_protocol(tmp_path, protocol):
    data = {"imlist": ["a", "b"], "gnd": [{"bbx": np.array([1.0, 2, 3, 4]), "easy": np.arange(3),
                                            "hard": [1], "junk": set(), "score": np.float32(0.5)}]}
    path = tmp_path / "gnd.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_plain_pickle(path)
    np.testing.assert_array_equal(loaded["gnd"][0]["easy"], [0, 1, 2])
    np.testing.assert_array_equal(loaded["gnd"][0]["bbx"], [1, 2, 3, 4])
    assert loaded["imlist"] == ["a", "b"] and loaded["gnd"][0]["score"] == np.float32(0.5)


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_payload_is_refused_before_it_runs(tmp_path, protocol):
    target = tmp_path / "payload-ran"
    path = tmp_path / "gnd.pkl"
    path.write_bytes(pickle.dumps({"gnd": [_WritesAFile(target)]}, protocol=protocol))
    with pytest.raises(UnsafePickleError, match="refused to load"):
        load_plain_pickle(path)
    assert not target.exists()
    path.write_bytes(pickle.dumps([_Evaluates()], protocol=protocol))
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        load_plain_pickle(path)


def test_a_numpy_object_array_cannot_smuggle_a_payload(tmp_path):
    target = tmp_path / "payload-ran"
    path = tmp_path / "gnd.pkl"
    array = np.empty(1, dtype=object)
    array[0] = _WritesAFile(target)
    path.write_bytes(pickle.dumps({"easy": array}))
    with pytest.raises(UnsafePickleError):
        load_plain_pickle(path)
    assert not target.exists()


def test_a_hostile_revisited_ground_truth_stops_the_loader(tmp_path, image_writer):
    from claid.datasets.revisited import load_revisited

    root = tmp_path / "roxford5k"
    image_writer(root / "jpg" / "q.jpg")
    image_writer(root / "jpg" / "d.jpg")
    target = tmp_path / "payload-ran"
    gnd = [{"bbx": [0, 0, 5, 5], "easy": [0], "hard": [], "junk": [], "x": _WritesAFile(target)}]
    with open(root / "gnd_roxford5k.pkl", "wb") as f:
        pickle.dump({"imlist": ["d"], "qimlist": ["q"], "gnd": gnd}, f)
    with pytest.raises(DatasetFormatError, match="gnd_roxford5k.pkl: refused to load pathlib"):
        load_revisited(root, name="roxford5k")
    assert not target.exists()
    (root / "gnd_roxford5k.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetFormatError, match="not a readable pickle"):
        load_revisited(root, name="roxford5k")
