"""best_rec.json (docs/contracts.md §6): the JSON schema, and writing it (validated, atomically)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import jsonschema

from deftpipe._fs import atomic_write_json
from deftpipe.errors import SweepError

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


def write_best_rec(obj: dict[str, Any], out_dir: str | Path) -> Path:
    """Validate then write ``<out_dir>/best_rec.json`` atomically."""
    validate_best_rec(obj)
    return atomic_write_json(Path(out_dir) / BEST_REC_NAME, obj)


__all__ = ["BEST_REC_NAME", "BEST_REC_SCHEMA", "RecStatus", "validate_best_rec", "write_best_rec"]
