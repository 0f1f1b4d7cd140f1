"""best_rec.json (docs/contracts.md §6), typed: :class:`BestRec` with its rows :class:`TrialRecord`
(``all_recs``) and :class:`BestTrial` (``best``), the status enum :class:`RecStatus`, the JSON schema
the file is checked against, and reading and writing it (validated, atomically) in one place.

The records keep what they do not name and write back only the keys they were read with or set
(:class:`deftpipe._record_io.Record`), so a file written before the records were typed loads and
round-trips unchanged.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import jsonschema
from pydantic import BeforeValidator, Field

from deftpipe._fs import atomic_write_json
from deftpipe._record_io import Number, Record, read_json_file
from deftpipe._stored_paths import check_stored_paths
from deftpipe.errors import StateError, SweepError

BEST_REC_NAME = "best_rec.json"
BEST_REC_SCHEMA_VERSION = 1



class RecStatus(StrEnum):
    """The status of a trial's record (an ``all_recs`` row): Optuna's ``TrialState`` in lower case,
    with a failed trial told apart as ``rejected`` (collapse guard), ``retried`` (its worker died and
    the trial was re-enqueued) or ``failed``."""

    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"
    REJECTED = "rejected"
    RETRIED = "retried"
    RUNNING = "running"
    WAITING = "waiting"

    @classmethod
    def of(cls, raw: Any) -> RecStatus | None:
        """The status of a stored row (an upper-case spelling such as ``COMPLETE`` reads the same);
        None when it is none of them."""
        try:
            return cls(str(raw).lower())
        except ValueError:
            return None


_NUM_OR_NULL = {"type": ["number", "null"]}
BEST_REC_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "deftpipe best_rec.json",
    "type": "object",
    "additionalProperties": False,
    "required": ["schema_version", "experiment_id", "metric_name", "direction", "best", "all_recs"],
    "properties": {
        "schema_version": {"const": BEST_REC_SCHEMA_VERSION},
        "experiment_id": {"type": "string", "minLength": 1},
        "metric_name": {"type": "string", "minLength": 1},
        "direction": {"enum": ["minimize", "maximize"]},
        "best": {
            "type": "object",
            "additionalProperties": False,
            "required": ["rec_id", "score", "specs", "observed_budget", "checkpoint_uri", "checkpoint_epoch",
                         "checkpoint_step"],
            "properties": {
                "rec_id": {"type": "string", "minLength": 1},
                "score": {"type": "number"},
                # the tuned values, nested; the epoch budget never appears here (see observed_budget)
                "specs": {"type": "object", "not": {"required": ["train"], "properties": {"train": {"anyOf": [
                    {"required": ["num_epochs"]}, {"required": ["batch_size"]}]}}}},
                "observed_budget": {
                    "type": "object",
                    "required": ["num_epochs"],
                    "properties": {"num_epochs": {"type": "integer", "minimum": 1}},
                },
                "checkpoint_uri": {"type": "string", "minLength": 1},
                "checkpoint_epoch": {"type": "integer", "minimum": 0},
                "checkpoint_step": {"type": "integer", "minimum": 0},
            },
        },
        "all_recs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["rec_id", "score", "status", "specs", "pred_counts"],
                "properties": {
                    "rec_id": {"type": "string"},
                    "score": _NUM_OR_NULL,
                    "status": {"enum": [s.value for s in RecStatus]},
                    "specs": {"type": "object"},
                    "pred_counts": {"type": ["object", "null"]},
                    "duration": _NUM_OR_NULL,
                    "reason": {"type": ["string", "null"]},
                },
            },
        },
    },
}


def validate_best_rec(obj: dict[str, Any]) -> None:
    """Check ``obj`` against :data:`BEST_REC_SCHEMA`.

    Raises:
        SweepError: naming the failing field and the rule it breaks.
    """
    try:
        jsonschema.validate(obj, BEST_REC_SCHEMA)
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise SweepError(f"best_rec.json does not match its schema at '{where}': {err.message}") from None


#: A stored status as the enum (an upper-case ``COMPLETE`` reads as ``complete``; anything else is kept
#: as written, and the schema refuses it on the next write).
_Status = Annotated[RecStatus | str, BeforeValidator(lambda v: RecStatus.of(v) or v)]


class TrialRecord(Record):
    """One ``all_recs`` row: a trial as the sweep read it back (docs/contracts.md §6, plus what a
    reviewer needs to trust it). Built by :func:`deftpipe.automl._study_reader.to_rec`."""

    rec_id: str
    score: Number | None = None  # the metric on the validation set (the last epoch's when pruned)
    status: _Status
    specs: dict[str, Any] = Field(default_factory=dict)  # tuned values, nested as in the spec
    pred_counts: dict[str, Any] | None = None  # per-class prediction counts on the validation set
    metrics: dict[str, Any] | None = None
    duration: Number | None = None  # seconds, the whole trial
    train_seconds: Number | None = None
    epochs_run: Number | None = None
    checkpoint_uri: str | None = None  # None when retention deleted it or it moved
    reason: str | None = None  # why it failed, was pruned, or was not selected
    retry_of: str | None = None  # the rec_id of the heartbeat-failed trial this one retries
    enqueued_from: str | None = None  # the spec or best_rec.json whose values it was given
    host: str | None = None
    # the winner's verification re-run with a fresh seed (only when it won by more than rerun_margin)
    rerun_score: Number | None = None
    rerun_seed: int | None = None
    rerun_reason: str | None = None


class BestTrial(Record):
    """``best``: the declared winner, with the checkpoint the next phase starts from."""

    rec_id: str
    score: Number
    specs: dict[str, Any]  # tuned values, nested; never the epoch budget (see observed_budget)
    observed_budget: dict[str, Any]  # num_epochs, batch_size, epochs_run
    checkpoint_uri: str
    checkpoint_epoch: int
    checkpoint_step: int


class _Specs(Record):
    specs: dict[str, Any]


class EnqueueSource(Record):
    """What ``--enqueue-spec`` reads of a best_rec.json: ``best.specs`` (a hand-written file may hold
    only that; the rest of a best_rec.json is kept, unread)."""

    best: _Specs


class BestRec(Record):
    """``best_rec.json``: what a sweep hands on (docs/contracts.md §6)."""

    schema_version: int = BEST_REC_SCHEMA_VERSION
    experiment_id: str
    metric_name: str
    direction: str  # minimize | maximize
    best: BestTrial
    all_recs: list[TrialRecord] = Field(default_factory=list)

    @staticmethod
    def path(out_dir: str | Path) -> Path:
        return Path(out_dir) / BEST_REC_NAME

    def rec(self, rec_id: str) -> TrialRecord | None:
        """The ``all_recs`` row of ``rec_id``, or None."""
        return next((r for r in self.all_recs if r.rec_id == rec_id), None)

    @classmethod
    def load(cls, out_dir: str | Path) -> BestRec:
        """Read ``<out_dir>/best_rec.json``.

        Raises:
            StateError: missing, not JSON, not an object, with fields of the wrong type, or naming a
                path outside the run (:func:`deftpipe._stored_paths.check_stored_paths`).
        """
        path = cls.path(out_dir)
        data = read_json_file(path, missing=f"{path} not found: the sweep in {path.parent} has not finished; rerun it",
                              invalid="rerun the sweep to rewrite it")
        if not isinstance(data, dict):
            raise StateError(f"{path} is not a best_rec.json (a JSON object); rerun the sweep to rewrite it")
        return cls.from_json(check_stored_paths(data, path), where=path)

    def save(self, out_dir: str | Path) -> Path:
        """Validate against :data:`BEST_REC_SCHEMA`, then one atomic write of ``<out_dir>/best_rec.json``.

        Raises:
            SweepError: the record breaks the schema (naming the field and the rule).
        """
        obj = self.to_json()
        validate_best_rec(obj)
        return atomic_write_json(self.path(out_dir), obj)


def write_best_rec(obj: BestRec | dict[str, Any], out_dir: str | Path) -> Path:
    """Validate then write ``<out_dir>/best_rec.json`` atomically (a mapping is checked, then read as a
    :class:`BestRec`).

    Raises:
        SweepError: the content breaks the schema.
    """
    if not isinstance(obj, BestRec):
        validate_best_rec(obj)
        obj = BestRec.from_json(obj, where=BEST_REC_NAME)
    return obj.save(out_dir)


__all__ = ["BEST_REC_NAME", "BEST_REC_SCHEMA", "BestRec", "BestTrial", "RecStatus", "TrialRecord",
           "validate_best_rec", "write_best_rec"]
