"""The shared contract every registered algorithm meets (a cheap objective; real sweeps elsewhere)."""

from __future__ import annotations

import math

import optuna
import pytest

from deftpipe.automl import ALGORITHMS, SweepContext, get_algorithm, load_search_space, make_sampler_pruner
from deftpipe.errors import SweepError

SPACE = load_search_space()


def _objective(trial: optuna.Trial) -> float:
    values = SPACE.suggest(trial)
    for p in SPACE.params:  # every sampled value lies inside the declared space
        assert p.contains(values[p.name]), (p.name, values[p.name])
    base = abs(math.log10(values["train.optim.lr"]) + 3)  # best near lr = 1e-3
    for epoch in (1, 2, 3):
        trial.report(base + 1.0 / epoch, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return base


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_samples_the_space_and_finishes_trials(name):
    sampler, pruner = make_sampler_pruner(name, SweepContext(seed=0, num_epochs=3, n_trials=3, space=SPACE))
    study = optuna.create_study(sampler=sampler, pruner=pruner, direction="minimize")
    study.optimize(_objective, n_trials=3)
    states = [t.state for t in study.trials]
    assert len(states) == 3 and all(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
                                    for s in states)
    assert states[0] == optuna.trial.TrialState.COMPLETE  # nothing to compare the first trial with
    assert ALGORITHMS[name].summary


def test_same_seed_same_suggestions():
    ctx = SweepContext(seed=3, num_epochs=3, n_trials=4, space=SPACE)
    runs = []
    for _ in range(2):
        study = optuna.create_study(sampler=make_sampler_pruner("random", ctx)[0])
        study.optimize(lambda t: SPACE.suggest(t)["train.optim.lr"], n_trials=2)
        runs.append([t.params for t in study.trials])
    assert runs[0] == runs[1]


def test_pruning_algorithms_use_epochs_as_resource():
    ctx = SweepContext(seed=0, num_epochs=5, n_trials=9, space=SPACE)
    for name in ("hyperband", "bohb"):
        pruner = make_sampler_pruner(name, ctx)[1]
        assert isinstance(pruner, optuna.pruners.HyperbandPruner) and pruner._max_resource == 5
    assert isinstance(make_sampler_pruner("asha", ctx)[1], optuna.pruners.SuccessiveHalvingPruner)
    assert not ALGORITHMS["tpe"].prunes and ALGORITHMS["hyperband"].prunes


def test_unknown_algorithm_lists_the_valid_ones():
    with pytest.raises(SweepError, match=r"unknown algorithm 'hyperbnd'; valid: bayesian, tpe, random, grid, "
                                         r"cmaes, hyperband, asha, bohb \(pass one with --algorithm\)"):
        get_algorithm("hyperbnd")
