"""The front doors: :func:`run_sweep` (create or resume a study, run it to N, write best_rec.json)
and :func:`run_worker` (join an existing study from its storage alone)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
from filelock import FileLock
from optuna.storages import RDBStorage, fail_stale_trials

from deftpipe._fs import new_folder_removed_on_error
from deftpipe._record_io import read_json_file
from deftpipe.automl._algorithms import SweepContext, get_algorithm, make_sampler_pruner
from deftpipe.automl._best_rec import BestRec, EnqueueSource
from deftpipe.automl._console import NullProgress, make_progress, print_summary
from deftpipe.automl._local_workers import AUTO as AUTO_WORKERS
from deftpipe.automl._local_workers import LOG_DIR, failures, running
from deftpipe.automl._local_workers import resolve as resolve_local_workers
from deftpipe.automl._out_dir import claim_out_dir, refuse_other_owner
from deftpipe.automl._select import select_and_build
from deftpipe.automl._settings import (
    METRICS,
    SweepOptions,
    SweepSettings,
    check_resumable,
    read_settings,
    write_settings,
)
from deftpipe.automl._space import SearchSpace, load_search_space, parse_search_space
from deftpipe.automl._storage import (
    DEFAULT_HEARTBEAT_S,
    open_storage,
    redact,
    storage_errors,
    storage_url,
    study_names,
)
from deftpipe.automl._study_reader import progress_counts, prune_checkpoints, rec_id
from deftpipe.automl._trial import TrialFailed, TrialObjective
from deftpipe.errors import CheckpointError, DataError, SpecError, StateError, SweepError
from deftpipe.spec import Spec, load_spec, spec_from_dict, spec_to_dict

DEFAULT_STUDY = "deftpipe-automl"
POLL_S = 1.0  # how often a worker waiting for other workers' trials looks again
SETTINGS_WAIT_S = 30.0  # a worker joining a study that is being created waits this long for its settings


def _as_spec(spec: Spec | dict[str, Any] | str | Path) -> Spec:
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, dict):
        return spec_from_dict(spec, where="(spec mapping)")
    return load_spec(spec)


def _existing_file(path: str | Path, flag: str, err: type[Exception]) -> str:
    p = Path(path)
    if not p.is_file():
        raise err(f"{flag} {p} does not exist; pass an existing file")
    return str(p.resolve())


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SweepError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _enqueue_values(space: SearchSpace, source: str | Path) -> tuple[dict[str, Any], list[str]]:
    """The swept keys' values in a spec YAML or a best_rec.json (validated before any trial)."""
    path = Path(_existing_file(source, "--enqueue-spec", SpecError))
    if path.suffix == ".json":
        try:
            nested = EnqueueSource.from_json(read_json_file(path, missing=f"{path} not found", invalid="pass a "
                                                            "best_rec.json"), where=path).best.specs
        except StateError as err:
            raise SpecError(f"--enqueue-spec {path}: not a best_rec.json with best.specs ({err})") from None
    else:
        nested = spec_to_dict(load_spec(path))
    values, skipped = space.values_from(nested)
    if not values:
        raise SpecError(f"--enqueue-spec {path}: none of the swept keys ({', '.join(space.names)}) has a value "
                        "inside the search space; pass the spec or best_rec.json of an earlier sweep")
    return values, skipped


def _make_study(storage: RDBStorage, name: str, settings: SweepSettings, space: SearchSpace,
                seed_salt: int) -> optuna.Study:
    n_existing = len(optuna.load_study(study_name=name, storage=storage).trials) if name in study_names(storage) else 0
    # Optuna does not persist the sampler: a resumed or extra process gets a seed that differs
    # from the first run's (else a seeded random sampler would replay the same points).
    ctx = SweepContext(seed=settings.seed + 7919 * n_existing + seed_salt, num_epochs=settings.num_epochs,
                       n_trials=settings.max_recommendations, space=space)
    sampler, pruner = make_sampler_pruner(settings.algorithm, ctx)
    return optuna.create_study(storage=storage, study_name=name, direction=settings.direction, sampler=sampler,
                               pruner=pruner, load_if_exists=True)


class _OthersReport:
    """Reports the trials other workers finish, once each (a sweep's own are reported as they end)."""

    def __init__(self, study: optuna.Study, metric: str, progress: NullProgress):
        self.study, self.metric, self.progress = study, metric, progress
        self.seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def report(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        for t in trials:
            if t.state.is_finished() and t.number not in self.seen:
                self.seen.add(t.number)
                figure = f"{self.metric}={t.value:.4g}" if t.value is not None else ""
                seconds = t.duration.total_seconds() if t.duration is not None else 0.0
                self.progress.trial_end(rec_id(t.number), f"{t.state.name.lower()} (another worker)", figure,
                                        seconds, progress_counts(trials)[0])


def _drive(study: optuna.Study, settings: SweepSettings, space: SearchSpace, progress: NullProgress,
           *, heartbeat: bool, deadline: float | None = None) -> int:
    """Run trials until the study holds ``max_recommendations`` done trials, or until ``deadline``
    (``time.time()``) has passed and at least one trial is done. Returns trials run here.

    Workers sharing the sweep's folder check the count and claim a trial one at a time (a file lock
    held until the claimed trial is RUNNING in the study), so two workers that finish together do not
    both start the last trial. The trials other workers finish are reported here too.
    """
    target = settings.max_recommendations
    state = {"done": 0}
    Path(settings.out_dir).mkdir(parents=True, exist_ok=True)
    start_lock = FileLock(str(Path(settings.out_dir) / ".trial_start.lock"))
    others = _OthersReport(study, settings.metric, progress)

    def on_epoch(number: int, epoch: int, value: float | None) -> None:
        shown = "nan" if value is None else f"{value:.4g}"
        progress.update(state["done"], f"{rec_id(number)} epoch {epoch}/{settings.num_epochs} "
                                       f"{settings.metric}={shown}")
        progress.epoch(rec_id(number), epoch, settings.num_epochs, f"{settings.metric}={shown}")
        others.report()

    def after_trial(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        others.seen.add(t.number)
        trials = study.get_trials(deepcopy=False)
        done_now, _, _ = progress_counts(trials)
        figure = f"{settings.metric}={t.value:.4g}" if t.value is not None else ""
        seconds = (t.duration.total_seconds() if t.duration is not None
                   else float(t.user_attrs.get("duration_s") or 0.0))
        progress.trial_end(rec_id(t.number), t.state.name.lower(), figure, seconds, done_now)
        prune_checkpoints(trials, settings, keep=max(settings.keep_checkpoints, 2))
        if "fail_reason" in t.user_attrs:
            progress.note(f"{rec_id(t.number)} {t.state.name.lower()}: {t.user_attrs['fail_reason']}")

    objective = TrialObjective(settings, space, on_epoch=on_epoch)

    def claimed(trial: optuna.Trial) -> float:
        start_lock.release()  # the trial is RUNNING in the study now: other workers count it
        return objective(trial)

    ran = 0
    while True:
        others.report()
        with start_lock:
            if heartbeat:
                fail_stale_trials(study)  # a dead worker's trial -> FAIL + re-enqueued (retry callback)
            done, running, _ = progress_counts(study.get_trials(deepcopy=False))
            state["done"] = done
            progress.update(done)
            if done >= target:
                return ran
            if deadline is not None and done and time.time() >= deadline:
                progress.note(f"time budget reached after {done} of {target} trials: no new trial started")
                return ran
            # Without heartbeats a killed worker's trial stays RUNNING forever: do not wait for it.
            wait = heartbeat and done + running >= target
            if not wait:
                progress.trial_start(rec_id(len(study.get_trials(deepcopy=False))), done)
                start_lock.acquire()  # held past this block until ``claimed`` runs
        if wait:
            progress.update(done, f"waiting for {running} running trial(s) of other workers")
            time.sleep(POLL_S)
            continue
        try:
            study.optimize(claimed, n_trials=1, catch=(TrialFailed,), callbacks=[after_trial],
                           gc_after_trial=False, show_progress_bar=False)
        finally:
            while start_lock.is_locked:  # the trial failed before its objective ran
                start_lock.release()
        ran += 1


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Our progress, notes and summary replace Optuna's per-trial INFO logs and experimental warnings."""
    logger = logging.getLogger("optuna")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        logger.setLevel(level)


def _checked_settings(o: SweepOptions) -> tuple[SweepSettings, SearchSpace]:
    """The options checked (before any study is touched) and resolved into the settings every trial
    and worker reads."""
    if o.metric not in METRICS:
        raise SweepError(f"unknown metric {o.metric!r}; valid: {', '.join(METRICS)} (pass one with --metric)")
    get_algorithm(o.algorithm)
    _positive_int(o.max_recommendations, "max_recommendations (--max-recommendations)")
    _positive_int(o.keep_checkpoints, "keep_checkpoints (--keep-checkpoints)")
    if o.rerun_margin < 0:
        raise SweepError(f"rerun_margin must be >= 0, got {o.rerun_margin}")
    base = _as_spec(o.spec)
    space = load_search_space(o.search_space)
    epochs = _positive_int(o.num_epochs or space.pinned.get("train.num_epochs") or base.train.num_epochs,
                           "num_epochs (--epochs)")
    batch = _positive_int(o.batch_size or space.pinned.get("train.batch_size") or base.train.batch_size,
                          "batch_size (--batch-size)")
    pretrained = None if o.pretrained is None else _existing_file(o.pretrained, "--pretrained checkpoint",
                                                                   CheckpointError)
    settings = SweepSettings(
        spec=spec_to_dict(base), train_csv=_existing_file(o.train_csv, "--train", DataError),
        val_csv=_existing_file(o.val_csv, "--val", DataError), out_dir=str(Path(o.out_dir).resolve()),
        metric=o.metric, algorithm=o.algorithm, seed=int(o.seed), num_epochs=epochs, batch_size=batch,
        space=space.to_dict(), space_hash=space.hash, pretrained=pretrained,
        max_recommendations=o.max_recommendations, keep_checkpoints=o.keep_checkpoints,
        rerun_margin=float(o.rerun_margin))
    return settings, space


def _workers(options: SweepOptions, settings: SweepSettings, left: int) -> int:
    """Trials to run side by side (``local_workers``, ``auto`` resolved), at most the ``left`` ones."""
    if left < 1 or options.local_workers != AUTO_WORKERS:
        return resolve_local_workers(options.local_workers, trials=max(left, 1), cpu_torch=False)
    from deftpipe.model import trains_on_cpu  # late: imports torch (the trials will anyway)

    base = spec_from_dict(settings.spec, where="(sweep settings)")
    with open(settings.train_csv, "rb") as f:
        rows = max(sum(1 for _ in f) - 1, 0)
    return resolve_local_workers(options.local_workers, trials=left, cpu_torch=trains_on_cpu(base),
                                 pinned_threads=base.train.num_threads, row_epochs=rows * settings.num_epochs)


@_quiet_optuna()
def run_sweep(options: SweepOptions | None = None, /, *, show_progress: bool = True, deadline: float | None = None,
              **fields: Any) -> BestRec:
    """Run (or resume) an AutoML sweep and write ``<out_dir>/best_rec.json``.

    Each trial trains the options' spec with sampled overrides through the model adapter and is
    scored on ``val_csv`` only. Calling again with the same options continues the same study up to
    ``max_recommendations`` done trials (a trial left RUNNING by a killed process is retried).

    Args:
        options: what to sweep (:class:`deftpipe.automl.SweepOptions`, whose fields say each
            setting and its default). ``run_sweep(spec=..., train_csv=..., ...)`` with the same
            fields as keywords is the short form.
        show_progress: the progress bar and the summary table.
        deadline: wall-clock time (``time.time()``) after which no new trial starts once one is done
            (a time budget; the running trial finishes).
    Returns:
        The best_rec.json content as its record (docs/contracts.md §6; ``.to_json()`` is the mapping).
    Raises:
        SpecError, DataError, CheckpointError, SweepError.
        TypeError: both ``options`` and keyword fields, or a keyword that is not a field.
    """
    if options is None:
        options = SweepOptions(**fields)
    elif fields:
        raise TypeError(f"run_sweep takes SweepOptions or its fields as keywords, not both (got {', '.join(fields)})")
    settings, space = _checked_settings(options)
    enqueue = [(Path(e), *_enqueue_values(space, e)) for e in options.enqueue_sources()]
    out = Path(settings.out_dir)
    name = options.study_name or DEFAULT_STUDY
    heartbeat_interval = options.heartbeat_interval
    with new_folder_removed_on_error(out):
        url = storage_url(options.storage, out)
        refuse_other_owner(out, name, redact(url))
        st = open_storage(url, heartbeat_interval=heartbeat_interval)
        existed = name in study_names(st)
        claim_out_dir(out, name, redact(url), resuming=existed)
        if existed:
            stored = read_settings(optuna.load_study(study_name=name, storage=st))
            if stored is None:
                raise SweepError(f"study '{name}' in {redact(url)} was not created by deftpipe; pick another --study")
            check_resumable(stored, settings, name)
        study = _make_study(st, name, settings, space, seed_salt=0)
        write_settings(study, settings)  # also updates the target N, K and margin of a resumed study
        left = settings.max_recommendations - progress_counts(study.get_trials(deepcopy=False))[0]
    # a worker waits for the others' running trials only with heartbeats (else it cannot tell a dead one)
    extra = _workers(options, settings, left) - 1 if heartbeat_interval else 0
    with make_progress(show_progress, settings.max_recommendations,
                       f"automl {name} ({settings.algorithm}, {settings.metric})", out, parallel=extra + 1) as progress:
        if not existed:
            progress.note(f"study '{name}' created in {redact(url)}")
            for path, values, skipped in enqueue:
                study.enqueue_trial(values, user_attrs={"enqueued_from": str(path)})
                if skipped:
                    progress.note(f"enqueued {path.name}: {', '.join(skipped)} missing or outside the space "
                                  "(sampled instead)")
        else:
            progress.note(f"resuming study '{name}' in {redact(url)} ({len(study.trials)} trials so far)")
        with storage_errors(url):
            with running(extra, url=url, study=name, out_dir=out, heartbeat=heartbeat_interval,
                                       deadline=deadline) as procs:
                if procs:
                    progress.note(f"{extra + 1} trials at a time: {extra} local worker(s) beside this process "
                                  f"(logs: {out / LOG_DIR})")
                _drive(study, settings, space, progress, heartbeat=bool(heartbeat_interval), deadline=deadline)
            for line in failures(procs, out):
                progress.note(line)
    with FileLock(str(out / ".best_rec.lock")), storage_errors(url):
        best_rec, notes = select_and_build(study, settings, name)
        best_rec.save(out)
        keep = {int(best_rec.best.rec_id.split("_")[-1])}
        prune_checkpoints(study.get_trials(deepcopy=False), settings, keep=settings.keep_checkpoints, protect=keep)
    if show_progress:
        print_summary(best_rec, notes + [f"best_rec.json: {out / 'best_rec.json'}"])
    return best_rec


@_quiet_optuna()
def run_worker(storage: str, study_name: str, *, out_dir: str | Path | None = None, show_progress: bool = True,
               heartbeat_interval: int = DEFAULT_HEARTBEAT_S, deadline: float | None = None) -> dict[str, Any]:
    """Join an existing study (created by :func:`run_sweep`) and run trials until it holds N done.

    Everything needed (spec, CSVs, space, algorithm, metric, budget) is read from the study's
    attributes. ``out_dir`` overrides where this worker writes its trial folders (default: the
    sweep's own, which must then be a shared folder). best_rec.json is written by ``run_sweep``:
    rerun the original ``deftpipe automl run`` command once the workers are done. ``deadline``
    (``time.time()``): no trial starts after it once one is done (a sweep's time budget).

    Raises:
        SweepError: the study does not exist or was not created by deftpipe.
    """
    url = storage_url(storage, None)
    if url.startswith("sqlite:///") and not Path(url.split("sqlite:///", 1)[1]).is_file():  # never create one
        raise SweepError(f"no study '{study_name}' in {redact(url)}: the database file does not exist; create the "
                         "study with `deftpipe automl run ... --storage URL --study NAME` first")
    st = open_storage(url, heartbeat_interval=heartbeat_interval)
    names = study_names(st)
    if study_name not in names:
        raise SweepError(f"no study '{study_name}' in {redact(url)} (found: {', '.join(names) or 'none'}); create it "
                         "with `deftpipe automl run ... --storage URL --study NAME` first")
    settings_by = time.monotonic() + SETTINGS_WAIT_S
    while (settings := read_settings(optuna.load_study(study_name=study_name, storage=st))) is None:
        if time.monotonic() > settings_by:
            raise SweepError(f"study '{study_name}' in {redact(url)} has no deftpipe settings; it was not created by "
                             "`deftpipe automl run`")
        time.sleep(POLL_S)
    if out_dir is not None:
        settings = replace(settings, out_dir=str(Path(out_dir).resolve()))
    space = parse_search_space(settings.space, where=f"(study '{study_name}')")
    study = _make_study(st, study_name, settings, space, seed_salt=os.getpid())
    with make_progress(show_progress, settings.max_recommendations,
                       f"worker {study_name} ({settings.algorithm}, {settings.metric})") as progress:
        with storage_errors(url):
            ran = _drive(study, settings, space, progress, heartbeat=bool(heartbeat_interval), deadline=deadline)
    done, running, waiting = progress_counts(study.get_trials(deepcopy=False))
    return {"study": study_name, "storage": redact(url), "trials_run_here": ran, "done": done,
            "target": settings.max_recommendations}


__all__ = ["DEFAULT_STUDY", "run_sweep", "run_worker"]
