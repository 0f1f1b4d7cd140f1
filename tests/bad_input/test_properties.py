"""Property tests (hypothesis): the CSV reader, the YAML loaders and the metric never crash with
anything but their own one-line error, and keep their promises on every input they accept."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deftpipe._yaml import MAX_VALUES, parse_yaml
from deftpipe.config import PipelineConfig
from deftpipe.data import read_dataset
from deftpipe.errors import DataError, SpecError
from deftpipe.metrics import compute_metrics
from deftpipe.spec import spec_from_dict

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
HEADER = b"input_path,golden_path,label,object_name,boardname\n"


@FAST
@given(body=st.binary(max_size=400))
def test_csv_reader_reads_or_refuses_any_bytes(tmp_path: Path, body: bytes):
    csv = tmp_path / "x.csv"
    csv.write_bytes(HEADER + body)
    try:
        df = read_dataset(csv, require_rows=False)
    except DataError as e:
        assert "\n" not in str(e) and len(str(e)) < 1000
        return
    assert list(df.columns[:4]) == ["input_path", "golden_path", "label", "object_name"]
    assert all(isinstance(v, str) for v in df.to_numpy().ravel())  # every cell is text, never NaN


cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\n\"',"),
               max_size=12)


@FAST
@given(rows=st.lists(st.tuples(cell, cell, cell, cell), min_size=1, max_size=8))
def test_csv_reader_round_trips_text_cells(tmp_path: Path, rows):
    csv = tmp_path / "y.csv"
    csv.write_text("input_path,golden_path,label,object_name\n" + "".join(",".join(r) + "\n" for r in rows),
                   encoding="utf-8")
    try:
        df = read_dataset(csv)
    except DataError as e:  # a row of only empty cells is a blank line: fewer rows, or none
        assert "no rows" in str(e) or "cannot be parsed" in str(e)
        return
    assert len(df) <= len(rows)
    for got, want in zip(df["object_name"], [r[3] for r in rows if any(c.strip() for c in r)], strict=False):
        assert got == want.strip()


yaml_text = st.text(alphabet=st.sampled_from(list("ab: -[]{}&*!#|>'\"\n\t,.01x")), max_size=120)


@FAST
@given(text=yaml_text)
def test_yaml_loader_parses_or_refuses_in_one_line(text: str):
    try:
        parse_yaml(text, "t.yaml")
    except SpecError as e:
        assert "\n" not in str(e) and len(str(e)) < 700


@FAST
@given(depth=st.integers(1, 12), width=st.integers(2, 12))
def test_yaml_loader_bounds_alias_expansion(depth: int, width: int):
    lines = ["l0: &l0 [x]"] + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth + 1)]
    expanded = sum(width ** i for i in range(depth + 1))
    try:
        data = parse_yaml("\n".join(lines), "t.yaml")
    except SpecError as e:
        assert "expands to more than" in str(e) and expanded > MAX_VALUES // 4
        return
    assert expanded <= MAX_VALUES and isinstance(data, dict)


settings_value = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                           st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))


@FAST
@given(key=st.sampled_from(["num_epochs", "batch_size", "seed", "num_threads"]), value=settings_value)
def test_spec_numbers_are_checked_for_type_range_finiteness(key: str, value):
    try:
        spec = spec_from_dict({"train": {key: value}}, base_dir=".")
    except SpecError as e:
        assert "\n" not in str(e)
        return
    got = getattr(spec.train, key)
    assert isinstance(got, int) and not isinstance(value, bool) and got >= 0


@FAST
@given(value=settings_value)
def test_kpi_target_is_a_finite_number(value):
    try:
        cfg = PipelineConfig.model_validate({"kpi": {"target": value}})
    except Exception as e:  # noqa: BLE001 - pydantic's error; load_config turns it into one line
        assert type(e).__name__ == "ValidationError"
        return
    assert math.isfinite(cfg.kpi.target) and not isinstance(value, bool)


scores = st.lists(st.floats(0.0, 1.0), min_size=2, max_size=40)


@FAST
@given(s=scores, flags=st.lists(st.booleans(), min_size=2, max_size=40))
def test_far_at_full_recall_flags_every_defect(s, flags):
    n = min(len(s), len(flags))
    s, y = np.array(s[:n]), np.array(flags[:n])
    m = compute_metrics(y, s, n_boot=20)
    assert 0.0 <= m["far_pct"] <= 100.0
    if y.any():
        assert (s[y] >= m["threshold"]).all()  # 100 % recall at the reported threshold
        if (~y).any():
            assert m["far_pct"] == pytest.approx(100.0 * (s[~y] >= m["threshold"]).mean())
            assert m["far_ci_low"] <= m["far_pct"] + 1e-9 or m["far_ci_low"] <= m["far_ci_high"]


@FAST
@given(s=scores, bad=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_metric_refuses_non_finite_scores(s, bad):
    s = [*s, bad]
    with pytest.raises(DataError, match="NaN or infinite"):
        compute_metrics([True] + [False] * (len(s) - 1), s)
