"""--enqueue-spec reads best.specs of a best_rec.json through one typed record (EnqueueSource)."""

import json

import pytest

from deftpipe.automl._space import parse_search_space
from deftpipe.automl._sweep import _enqueue_values
from deftpipe.errors import SpecError

SPACE = parse_search_space({"train.optim.lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True}})


def test_hand_written_best_specs_is_enough(tmp_path):
    f = tmp_path / "rec.json"
    f.write_text(json.dumps({"best": {"specs": {"train": {"optim": {"lr": 0.01}}}}}))
    values, skipped = _enqueue_values(SPACE, f)
    assert values == {"train.optim.lr": 0.01} and skipped == []


@pytest.mark.parametrize("body", ['{"best": {}}', '{"best": {"specs": [1]}}', "[1, 2]", "{not json"])
def test_wrong_shape_is_one_spec_error(tmp_path, body):
    f = tmp_path / "rec.json"
    f.write_text(body)
    with pytest.raises(SpecError, match="not a best_rec.json with best.specs"):
        _enqueue_values(SPACE, f)
