"""One rule orders the loop's iterations (baseline, iter1, iter2, ..., iter10), and the loop's readers
take the typed state or its mapping view alike (issue 27 item 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deftpipe.deft import DeftState
from deftpipe.deft._choice import loop_chain
from deftpipe.deft._records import is_loop_label, iter_no, loop_labels, report_order
from deftpipe.deft._steps import best_so_far, evaluated, prev_label

OLD = Path(__file__).parent / "data" / "deft_state_v1_killed_after_iter1_sdg.json"


def test_the_loop_orders_its_labels_by_one_rule():
    labels = ["iter10", "final_automl", "iter2", "baseline", "iter1", "iterx"]
    assert loop_labels(labels) == ["baseline", "iter1", "iter2", "iter10"]
    assert loop_labels(labels, before="iter2") == ["baseline", "iter1"]
    assert sorted(labels, key=report_order) == ["baseline", "iter1", "iter2", "iter10", "iterx", "final_automl"]
    assert [iter_no(lb) for lb in ("baseline", "iter3", "iter12")] == [0, 3, 12]
    assert not is_loop_label("final_automl") and not is_loop_label("iterx")
    with pytest.raises(ValueError, match=r"'final_automl' is not a loop iteration label \(baseline or iter<N>\)"):
        iter_no("final_automl")
    assert prev_label("iter1") == "baseline" and prev_label("iter3") == "iter2"


def test_readers_take_the_typed_state_or_its_mapping_view():
    old = json.loads(OLD.read_text(encoding="utf-8"))
    # a later iteration with a figure and a checkpoint, listed out of order, and Phase 3's record
    old["iterations"] = {"iter2": {**old["iterations"]["baseline"], "far_pct": 10.0},
                         "final_automl": {**old["iterations"]["baseline"], "far_pct": 1.0},
                         **old["iterations"]}
    typed = DeftState.from_json(old, where="fixture")
    for state in (old, typed):
        assert evaluated(state) == ["baseline", "iter2"]
        assert evaluated(state, "iter2") == ["baseline"]
        chain = loop_chain(state)
        assert [c.label for c in chain] == ["baseline", "iter2"]  # iter1 has no checkpoint; never final_automl
        assert chain[0].record == old["iterations"]["baseline"]
        assert best_so_far(state, "iter1") == "baseline"
