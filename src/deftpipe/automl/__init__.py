"""AutoML on Optuna (docs/contracts.md §5, §6): sweeps scored on the validation set, best_rec.json, workers.

Front doors: :func:`run_sweep` (create/resume a study, write ``best_rec.json``; it takes one
:class:`SweepOptions`, the sweep's settings, which ``pipeline.yaml`` and ``automl run`` both build) and
:func:`run_worker` (join a study from its storage). See docs/automl.md.
"""

from deftpipe.automl._algorithms import (
    ALGORITHMS,
    Algorithm,
    SweepContext,
    describe_algorithms,
    get_algorithm,
    make_sampler_pruner,
)
from deftpipe.automl._best_rec import (
    BEST_REC_NAME,
    BEST_REC_SCHEMA,
    BestRec,
    BestTrial,
    RecStatus,
    TrialRecord,
    validate_best_rec,
    write_best_rec,
)
from deftpipe.automl._local_workers import AUTO as AUTO_WORKERS
from deftpipe.automl._local_workers import resolve as resolve_local_workers
from deftpipe.automl._settings import METRICS, SweepOptions
from deftpipe.automl._space import Param, SearchSpace, load_search_space, parse_search_space
from deftpipe.automl._storage import redact, storage_url
from deftpipe.automl._sweep import DEFAULT_STUDY, run_sweep, run_worker

__all__ = [
    "ALGORITHMS",
    "AUTO_WORKERS",
    "Algorithm",
    "BEST_REC_NAME",
    "BestRec",
    "BestTrial",
    "TrialRecord",
    "BEST_REC_SCHEMA",
    "DEFAULT_STUDY",
    "METRICS",
    "Param",
    "RecStatus",
    "SearchSpace",
    "SweepContext",
    "SweepOptions",
    "describe_algorithms",
    "get_algorithm",
    "load_search_space",
    "make_sampler_pruner",
    "parse_search_space",
    "redact",
    "resolve_local_workers",
    "run_sweep",
    "run_worker",
    "storage_url",
    "validate_best_rec",
    "write_best_rec",
]
