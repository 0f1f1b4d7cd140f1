"""The ``--algorithm`` registry: one name -> one factory returning an Optuna (sampler, pruner) pair.

No hand-written optimisers: every algorithm is a combination of Optuna's own parts. Adding one is
one entry in :data:`ALGORITHMS` (the shared contract test in ``tests/automl_tests`` picks it up).
Pruners see one intermediate value per epoch, so for ``hyperband``/``asha``/``bohb`` the resource
is the epoch and ``max_resource`` is the sweep's pinned epoch budget.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.pruners import BasePruner, HyperbandPruner, NopPruner, SuccessiveHalvingPruner
from optuna.samplers import BaseSampler, CmaEsSampler, GPSampler, GridSampler, RandomSampler, TPESampler

from deftpipe.automl._space import SearchSpace
from deftpipe.errors import SweepError


@dataclass(frozen=True)
class SweepContext:
    """What a factory may use to build its parts."""

    seed: int  # sampler seed (already offset per process/resume by the runner)
    num_epochs: int  # pinned epoch budget = the pruners' max resource
    n_trials: int  # the study's target number of finished trials
    space: SearchSpace


Factory = Callable[[SweepContext], tuple[BaseSampler, BasePruner]]


@dataclass(frozen=True)
class Algorithm:
    name: str
    summary: str  # when to pick it (shown by --help and docs/automl.md)
    factory: Factory
    prunes: bool = False


def _startup(ctx: SweepContext) -> int:
    # Model-based samplers need a few random points first; Optuna's default (10) would make every
    # short sweep pure random search, so use about a third of the budget (at least 2, at most 10).
    return max(2, min(10, ctx.n_trials // 3))


def _hyperband(ctx: SweepContext) -> BasePruner:
    return HyperbandPruner(min_resource=1, max_resource=max(1, ctx.num_epochs), reduction_factor=3)


def _tpe(ctx: SweepContext) -> TPESampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant_liar: running trials of other workers count as bad guesses, so parallel
        # workers do not all sample the same promising point.
        return TPESampler(seed=ctx.seed, n_startup_trials=_startup(ctx), multivariate=True, constant_liar=True)


def _bayesian(ctx: SweepContext) -> tuple[BaseSampler, BasePruner]:
    return GPSampler(seed=ctx.seed, n_startup_trials=_startup(ctx), warn_independent_sampling=False), NopPruner()


def _cmaes(ctx: SweepContext) -> tuple[BaseSampler, BasePruner]:
    # CMA-ES models the numeric keys; categorical keys are sampled at random (Optuna's fallback).
    sampler = CmaEsSampler(seed=ctx.seed, n_startup_trials=1, warn_independent_sampling=False,
                           independent_sampler=RandomSampler(seed=ctx.seed))
    return sampler, NopPruner()


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm("bayesian", "Gaussian-process Bayesian optimisation; best per trial when trials are "
                  "expensive and few (< ~50), numeric keys", _bayesian),
        Algorithm("tpe", "Tree-structured Parzen estimator; robust default for mixed/categorical spaces "
                  "and parallel workers", lambda c: (_tpe(c), NopPruner())),
        Algorithm("random", "Random search; baseline, embarrassingly parallel, no model to mislead",
                  lambda c: (RandomSampler(seed=c.seed), NopPruner())),
        Algorithm("grid", "Grid over every choice and 3 points per numeric range; exhaustive for tiny "
                  "spaces", lambda c: (GridSampler(c.space.grid(), seed=c.seed), NopPruner())),
        Algorithm("cmaes", "CMA-ES evolution strategy; many trials (> ~100) over numeric keys", _cmaes),
        Algorithm("hyperband", "Random sampling + Hyperband pruning (resource = epochs); many cheap "
                  "trials, stops bad ones after 1 epoch", lambda c: (RandomSampler(seed=c.seed), _hyperband(c)),
                  prunes=True),
        Algorithm("asha", "Random sampling + asynchronous successive halving; like hyperband, one "
                  "aggressive bracket, best with many parallel workers",
                  lambda c: (RandomSampler(seed=c.seed),
                             SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)), prunes=True),
        Algorithm("bohb", "TPE + Hyperband (BOHB); model-based sampling with early stopping, good "
                  "default for long sweeps", lambda c: (_tpe(c), _hyperband(c)), prunes=True),
    )
}


def get_algorithm(name: str) -> Algorithm:
    """The registered algorithm ``name``.

    Raises:
        SweepError: unknown name (the message lists the valid ones).
    """
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise SweepError(
            f"unknown algorithm {name!r}; valid: {', '.join(ALGORITHMS)} (pass one with --algorithm)"
        ) from None


def make_sampler_pruner(name: str, ctx: SweepContext) -> tuple[BaseSampler, BasePruner]:
    return get_algorithm(name).factory(ctx)


def describe_algorithms() -> dict[str, Any]:
    return {a.name: a.summary for a in ALGORITHMS.values()}


__all__ = ["ALGORITHMS", "Algorithm", "SweepContext", "describe_algorithms", "get_algorithm",
           "make_sampler_pruner"]
