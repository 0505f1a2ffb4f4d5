"""Scores -> MLflow metric dict and JSON."""

import json
import os

import numpy as np
import pytest

from claid.evaluation import read_scores_json, scores_to_metrics, write_scores_json
from claid.structures import Scores


def _scores():
    return [
        Scores("lab", {"mAP-50": 0.5, "mAP-all": np.float32(0.25)}, {"junk": "removed"}),
        Scores(
            "revisited",
            {"medium/mAP": 0.75},
            {"per_query": {"q1": {"medium/mAP": np.float64(0.75)}}, "k": (1, 5, 10)},
        ),
        Scores("loc", {"mIoU-standard": 0.1}, {"n_images": np.int64(3)}),
    ]


def test_flattened_keys_name_protocol_and_variant():
    assert scores_to_metrics(_scores()) == {
        "lab/mAP-50": 0.5,
        "lab/mAP-all": 0.25,
        "revisited/medium/mAP": 0.75,
        "loc/mIoU-standard": pytest.approx(0.1),
    }


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        ([Scores("gldv2", {"mAP@100": 0.1})], "not a valid MLflow"),
        ([Scores("lab", {"mAP-50": 0.1}), Scores("lab", {"mAP-50": 0.2})], "appears twice"),
        ([Scores("lab", {"mAP-50": float("nan")})], "nan"),
    ],
)
def test_flattening_refuses_what_mlflow_or_a_reader_would_trip_on(scores, message):
    with pytest.raises(ValueError, match=message):
        scores_to_metrics(scores)


def test_json_round_trip_is_atomic_and_versioned(tmp_path):
    path = tmp_path / "out" / "scores.json"
    assert write_scores_json(_scores(), path) == str(path)
    assert sorted(os.listdir(path.parent)) == ["scores.json"]  # no temp file left
    document = json.loads(path.read_text())
    assert document["schema_version"] == 1
    assert document["metrics"]["revisited/medium/mAP"] == 0.75
    back = read_scores_json(path)
    assert [s.protocol for s in back] == ["lab", "revisited", "loc"]
    assert back[0].values["mAP-all"] == pytest.approx(0.25)
    assert back[1].settings["k"] == [1, 5, 10]
    assert back[2].settings["n_images"] == 3


def test_omegaconf_containers_in_settings_are_written_as_plain_json(tmp_path):
    from omegaconf import OmegaConf

    protocol = OmegaConf.create({"family": "gldv2", "k": [1000]})
    path = write_scores_json(
        [Scores("gldv2", {"mAP-at-1000": 0.2}, {"protocol": protocol})], tmp_path / "s.json"
    )
    assert read_scores_json(path)[0].settings["protocol"] == {"family": "gldv2", "k": [1000]}


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "scores.json"
    write_scores_json(_scores()[:1], path)
    before = path.read_text()
    with pytest.raises(TypeError):
        write_scores_json([Scores("lab", {"mAP-50": 0.5}, {"bad": object()})], path)
    with pytest.raises(ValueError):
        write_scores_json([Scores("lab", {"mAP-50": float("inf")})], path)
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["scores.json"]


def test_reading_another_schema_version_is_refused(tmp_path):
    path = tmp_path / "scores.json"
    path.write_text(json.dumps({"schema_version": 99, "scores": []}))
    with pytest.raises(ValueError, match="schema version"):
        read_scores_json(path)
