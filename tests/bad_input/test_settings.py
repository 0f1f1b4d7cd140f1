"""Malformed model specs, pipeline.yaml and search spaces: refused in one line (exit 1) before anything
is written; hostile YAML (alias bombs, deep nesting, huge values) fails fast with a short message."""

from __future__ import annotations

import re

import pytest
import torch
import yaml

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8))  # 10**9 strings once expanded


def _set(text: str, dotted: str, value: str) -> str:
    """``text`` (YAML) with the line of key ``dotted``'s last part replaced by ``value``."""
    key = dotted.split(".")[-1]
    new, n = re.subn(rf"^(\s*){re.escape(key)}:.*$", rf"\g<1>{key}: {value}", text, count=1, flags=re.M)
    assert n == 1, dotted
    return new


def _spec(b, text: str):
    b.spec.write_text(text, encoding="utf-8")


SPECS = {
    "empty_file": (lambda b: _spec(b, ""), r"spec file .* is empty"),
    "only_comments": (lambda b: _spec(b, "# nothing here\n"), r"is empty"),
    "top_level_list": (lambda b: _spec(b, "- a\n- b\n"), r"must hold a mapping at top level, got list"),
    "yaml_syntax": (lambda b: _spec(b, "model: {width: 8\n"), r"is not valid YAML"),
    "unknown_key": (lambda b: _spec(b, b.spec.read_text() + "extra_section: 1\n"), r"unknown key 'extra_section'"),
    "key_twice": (lambda b: _spec(b, b.spec.read_text() + "model:\n  width: 8\n"), r"key 'model' is written twice"),
    "nested_key_twice": (lambda b: _spec(b, b.spec.read_text().replace("  num_epochs:", "  num_epochs: 9\n  num_epochs:",
                                                                         1)), r"key 'num_epochs' is written twice"),
    "bool_epochs": (lambda b: _spec(b, _set(b.spec.read_text(), "train.num_epochs", "true")),
                    r"'train.num_epochs': .*not true/false"),
    "nan_lr": (lambda b: _spec(b, _set(b.spec.read_text(), "train.optim.lr", ".nan")), r"'train.optim.lr': .*finite"),
    "inf_lr": (lambda b: _spec(b, _set(b.spec.read_text(), "train.optim.lr", ".inf")), r"'train.optim.lr': .*finite"),
    "negative_epochs": (lambda b: _spec(b, _set(b.spec.read_text(), "train.num_epochs", "-3")),
                        r"'train.num_epochs': .*greater than or equal to 1"),
    "text_batch_size": (lambda b: _spec(b, _set(b.spec.read_text(), "train.batch_size", "lots")),
                        r"'train.batch_size': .*valid integer"),
    "negative_seed": (lambda b: _spec(b, _set(b.spec.read_text(), "train.seed", "-1")), r"'train.seed': .*greater"),
    "huge_seed": (lambda b: _spec(b, _set(b.spec.read_text(), "train.seed", str(2**70))), r"'train.seed': .*less"),
    "alias_bomb": (lambda b: _spec(b, BOMB), r"expands to more than 100000 values"),
    "alias_bomb_under_key": (lambda b: _spec(b, b.spec.read_text() + "adapter:\n  train: " + "[" * 1 + "]\n"
                                                 + BOMB.replace("\n", "\n  ").join(["x_bomb:\n  ", ""])),
                             r"expands to more than|not valid YAML"),
    "deep_nesting": (lambda b: _spec(b, "model: " + "[" * 5000 + "]" * 5000 + "\n"), r"nested too deeply|not valid"),
    "megabyte_value": (lambda b: _spec(b, _set(b.spec.read_text(), "model.backbone", "x" * 1_000_000)),
                       r"'model.backbone'.*more characters"),
    "latin1_bytes": (lambda b: b.spec.write_bytes(b.spec.read_bytes() + "# caf\xe9\n".encode("latin-1")),
                     r"is not UTF-8 \(line \d+\); save it as UTF-8"),
    "missing_file": (lambda b: b.spec.unlink(), r"does not exist"),
}


@pytest.mark.parametrize("case", SPECS)
def test_bad_spec_is_refused_by_train(bad, case):
    make, match = SPECS[case]
    make(bad)
    bad.refused("model", "train", "--spec", bad.spec, "--train", bad.train, "--val", bad.val,
                "--out", bad.root / "out", match=match)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CPU-only torch")
def test_cuda_on_cpu_torch_is_refused_before_anything_is_written(bad):
    bad.spec.write_text(_set(bad.spec.read_text(), "train.device", "cuda"))
    bad.refused("model", "train", "--spec", bad.spec, "--train", bad.train, "--val", bad.val,
                "--out", bad.root / "out", match=r"train.device is cuda but the installed torch .* cannot use a GPU")


def _cfg(b, text: str) -> None:
    (b.ws / "pipeline.yaml").write_text(text, encoding="utf-8")


def _cfg_set(b, dotted: str, value: str) -> None:
    _cfg(b, _set((b.ws / "pipeline.yaml").read_text(), dotted, value))


CONFIGS = {
    "empty_file": (lambda b: _cfg(b, ""), r"pipeline.yaml is empty"),
    "not_a_mapping": (lambda b: _cfg(b, "just text\n"), r"must hold a mapping"),
    "alias_bomb": (lambda b: _cfg(b, BOMB), r"expands to more than"),
    "unknown_key": (lambda b: _cfg(b, (b.ws / "pipeline.yaml").read_text() + "extras: 1\n"), r"unknown key 'extras'"),
    "bool_recommendations": (lambda b: _cfg_set(b, "max_recommendations", "yes"), r"max_recommendations.*true/false"),
    "nan_target": (lambda b: _cfg_set(b, "kpi.target", ".nan"), r"'kpi.target': .*finite"),
    "negative_seed": (lambda b: _cfg_set(b, "seed", "-5"), r"seed': .*greater than or equal to 0"),
    "bad_operator": (lambda b: _cfg_set(b, "kpi.operator", "'=='"), r"'kpi.operator'"),
    "missing": (lambda b: (b.ws / "pipeline.yaml").unlink(), r"not a deftpipe workspace"),
    "key_twice": (lambda b: _cfg(b, (b.ws / "pipeline.yaml").read_text() + "kpi:\n  target: 3.0\n"),
                  r"key 'kpi' is written twice \(lines \d+ and \d+\)"),
    "nested_key_twice": (lambda b: _cfg(b, (b.ws / "pipeline.yaml").read_text().replace(
        "  target:", "  target: 9.0\n  target:", 1)), r"key 'target' is written twice"),
}


@pytest.mark.parametrize("case", CONFIGS)
def test_bad_pipeline_yaml_is_refused_by_preflight(bad, case):
    make, match = CONFIGS[case]
    make(bad)
    bad.refused("preflight", bad.ws, "--no-dry-run", match=match)


BLOCKERS = {
    "unknown_algorithm": (lambda b: _cfg_set(b, "algorithm", "annealing"), r"unknown algorithm 'annealing'"),
    "evaluator_placeholder": (lambda b: _cfg_set(b, "kpi.evaluator_command", "[echo, '{scores_csv}']"),
                              r"kpi.evaluator_command uses unknown placeholder\(s\) \{scores_csv\}"),
    "sqlite_folder_missing": (lambda b: _cfg_set(b, "storage", "sqlite:///no/such/folder/study.db"),
                              r"folder .*no/such/folder does not exist"),
    "search_space_low_above_high": (
        lambda b: (b.ws / "specs" / "search_space.yaml").write_text(
            "train.optim.lr: {type: float, low: 0.1, high: 0.01}\n"), r"automl.phase1: .*search space"),
}


@pytest.mark.parametrize("case", BLOCKERS)
def test_setting_the_run_would_trip_on_is_a_preflight_blocker(bad, case):
    make, match = BLOCKERS[case]
    make(bad)
    r = bad.refused("preflight", bad.ws, "--no-dry-run", "--json", match=match, one_line=False)
    assert any(re.search(match, b) for b in __import__("json").loads(r.out)["blockers"])


SPACES = {
    "empty_file": ("", r"search space file .* is empty"),
    "alias_bomb": (BOMB, r"expands to more than"),
    "not_a_mapping": ("[1, 2]\n", r"search space"),
    "unknown_parameter": ("train.optim.nonsense: {type: float, low: 0.1, high: 1.0}\n", r"nonsense"),
    "low_above_high": ("train.optim.lr: {type: float, low: 0.1, high: 0.01}\n", r"low|high"),
    "unknown_type": ("train.optim.lr: {type: gaussian, low: 0.1, high: 1.0}\n", r"gaussian|type"),
    "key_twice": ("train.optim.lr: {type: float, low: 0.001, high: 0.1}\n"
                  "train.optim.lr: {type: float, low: 0.01, high: 0.1}\n", r"'train.optim.lr' is written twice"),
    "inner_key_twice": ("train.optim.lr: {type: float, low: 0.001, low: 0.01, high: 0.1}\n", r"'low' is written twice"),
}


@pytest.mark.parametrize("case", SPACES)
def test_bad_search_space_is_refused_by_automl_run(bad, case):
    text, match = SPACES[case]
    space = bad.root / "space.yaml"
    space.write_text(text, encoding="utf-8")
    bad.refused("automl", "run", "--spec", bad.spec, "--train", bad.train, "--val", bad.val, "--out",
                bad.root / "sweep", "--search-space", space, "--max-recommendations", 1, "--epochs", 1, "--quiet",
                match=match)


def test_yaml_bomb_is_refused_fast_in_any_loader():
    """The bounded loader is the one place every YAML read goes through; a bomb costs milliseconds."""
    import time

    from deftpipe._yaml import parse_yaml
    from deftpipe.errors import SpecError

    t0 = time.perf_counter()
    with pytest.raises(SpecError, match="expands to more than"):
        parse_yaml(BOMB, "x")
    assert time.perf_counter() - t0 < 1.0
    assert yaml.safe_load("a: [1]") == parse_yaml("a: [1]", "x")
