"""Search spaces: the default loads, every bad space is refused before any trial with a clear message."""

from __future__ import annotations

import pytest

from deftpipe.automl import load_search_space, parse_search_space, run_sweep
from deftpipe.errors import SpecError


def test_default_space_covers_the_built_in_model_and_pins_the_budget():
    space = load_search_space()
    assert {"train.optim.lr", "train.optim.optimizer", "train.optim.weight_decay", "train.optim.momentum",
            "train.optim.scheduler", "train.optim.warmup_epochs", "train.augment.shift_px",
            "train.class_balance"} <= set(space.names)
    assert not {"train.num_epochs", "train.batch_size"} & set(space.names)
    assert space.hash == load_search_space().hash


def test_round_trip_keeps_the_hash_and_grid_discretises():
    space = parse_search_space({
        "train.optim.lr": {"type": "float", "low": "1e-4", "high": 1e-2, "log": True},  # YAML 1.1 string form
        "train.augment.shift_px": {"type": "int", "low": 0, "high": 2},
        "train.optim.optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
        "pinned": {"train.optim.scheduler": "none"},
    })
    again = parse_search_space(space.to_dict())
    assert again.hash == space.hash
    grid = space.grid()
    assert grid["train.optim.lr"] == pytest.approx([1e-4, 1e-3, 1e-2])
    assert grid["train.augment.shift_px"] == [0, 1, 2]
    assert grid["train.optim.optimizer"] == ["adamw", "sgd"]


@pytest.mark.parametrize(("space", "match"), [
    ({"train.optim.lrr": {"type": "float", "low": 0.1, "high": 1}}, r"'lrr' is not a key of train.optim"),
    ({"train.optim.lr": {"type": "float", "low": 0.1, "high": 0.01}}, r"low \(0.1\) must be < high \(0.01\)"),
    ({"train.optim.lr": {"type": "float", "low": 0.0, "high": 0.01, "log": True}}, r"log: true needs low > 0"),
    ({"train.optim.lr": {"type": "float", "low": 0.0, "high": 0.01}}, r"low=0.0 is outside what the spec accepts"),
    ({"train.optim.lr": {"type": "float", "low": 1e-4}}, r"needs 'low' and 'high'"),
    ({"train.optim.lr": {"type": "floot", "low": 1e-4, "high": 1}}, r"type must be one of float, int, categorical"),
    ({"train.optim.lr": {"type": "float", "low": 1e-4, "high": 1, "lgo": True}}, r"unknown field\(s\) \['lgo'\]"),
    ({"train.augment.shift_px": {"type": "float", "low": 0, "high": 4}}, r"is an integer key: use type: int"),
    ({"train.optim.optimizer": {"type": "float", "low": 0, "high": 1}}, r"use type: categorical"),
    ({"train.optim.optimizer": {"type": "categorical", "choices": ["adamw", "lion"]}},
     r"choice 'lion' is not a valid value"),
    ({"train.optim.optimizer": {"type": "categorical", "choices": []}}, r"non-empty list 'choices'"),
    ({"train.num_epochs": {"type": "int", "low": 1, "high": 9}}, r"may not be swept .* --epochs"),
    ({"dataset.classify.images_dir": {"type": "categorical", "choices": ["a"]}}, r"may not be swept"),
    ({"train.optim": {"type": "float", "low": 0, "high": 1}}, r"'train.optim' is a section, not a value; use one of its keys"),
    ({"pinned": {"train.num_epochs": 2}}, r"no parameter to sweep"),
    ({"train.optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2}, "pinned": {"train.optim.lr": 1e-3}},
     r"both swept and pinned"),
    ({"train.optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2}, "pinned": {"train.bogus": 1}},
     r"pinned 'train.bogus': unknown spec key"),
    ([1, 2], r"expected a non-empty mapping"),
])
def test_bad_space_is_refused_with_a_message(space, match):
    with pytest.raises(SpecError, match=match):
        parse_search_space(space)


def test_bad_space_file_is_refused_before_any_trial(tmp_path, ws_args):
    bad = tmp_path / "space.yaml"
    bad.write_text("train.optim.lr: {type: float, low: 0.1, high: 0.01}\n")
    with pytest.raises(SpecError, match=rf"search space {bad}: 'train.optim.lr': low"):
        run_sweep(**ws_args, out_dir=tmp_path / "out", search_space=bad)
    assert not (tmp_path / "out").exists()  # refused before the study (or anything) was created
    with pytest.raises(SpecError, match="search space file .* does not exist"):
        run_sweep(**ws_args, out_dir=tmp_path / "out", search_space=tmp_path / "missing.yaml")
