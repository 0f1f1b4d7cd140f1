"""Search spaces: which spec keys a sweep tunes, over which ranges, and which keys it pins.

A search space is a YAML mapping of dotted spec keys to a distribution, plus an optional
``pinned`` mapping of dotted keys to fixed values::

    train.optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    train.optim.optimizer: {type: categorical, choices: [adamw, sgd]}
    train.augment.shift_px: {type: int, low: 0, high: 6}
    pinned:
      train.num_epochs: 3
      train.batch_size: 32

Every key path is checked against :class:`deftpipe.spec.Spec` and every bound or choice is
validated by the spec's own field rules, so a space that could produce an invalid spec is refused
before any trial runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from deftpipe._yaml import load_yaml_file
from deftpipe.errors import SpecError
from deftpipe.spec import Spec, unflatten
from deftpipe.tao import search_key

DEFAULT_SPACE_PATH = Path(__file__).with_name("default_space.yaml")
PARAM_TYPES = ("float", "int", "categorical")
_PARAM_KEYS = {"type", "low", "high", "log", "step", "choices"}
#: Budget keys: pinned per sweep, never tuned, and reported in best_rec.json's observed_budget.
BUDGET_KEYS = ("train.num_epochs", "train.batch_size")
#: Keys that are not hyperparameters (what data, which weights, which seed) and may not be swept.
_NOT_TUNABLE = ("train.num_epochs", "train.batch_size", "train.seed", "train.pretrained_model_path",
                "train.device", "train.num_threads", "train.precision", "train.keep_checkpoints")
_NOT_TUNABLE_SECTIONS = ("dataset.", "adapter.")
GRID_POINTS = 3  # points per numeric range when the grid algorithm discretises the space


@dataclass(frozen=True)
class Param:
    """One tuned key: a float/int range (optionally log-scaled or stepped) or a set of choices."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] | None = None

    def suggest(self, trial: Any) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return self.low <= value <= self.high

    def grid_values(self) -> list[Any]:
        """Values the grid algorithm tries: every choice, or GRID_POINTS points of a range."""
        if self.type == "categorical":
            return list(self.choices)
        lo, hi = self.low, self.high
        if self.log:
            mid = math.sqrt(lo * hi)
        else:
            mid = (lo + hi) / 2
        if self.type == "int":
            step = self.step or 1
            if (hi - lo) // step + 1 <= GRID_POINTS:
                return list(range(lo, hi + 1, step))
            mid = lo + round((mid - lo) / step) * step
            return sorted({lo, int(mid), hi})
        if self.step:
            mid = lo + round((mid - lo) / self.step) * self.step
        return sorted({float(lo), float(mid), float(hi)})

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            d["choices"] = list(self.choices)
        else:
            d.update(low=self.low, high=self.high, log=self.log)
            if self.step is not None:
                d["step"] = self.step
        return d


@dataclass(frozen=True)
class SearchSpace:
    """Tuned parameters plus pinned values (dotted spec keys)."""

    params: tuple[Param, ...]
    pinned: dict[str, Any] = field(default_factory=dict)
    source: str = "built-in default"

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample every parameter on an Optuna trial; returns ``{dotted key: value}``."""
        return {p.name: p.suggest(trial) for p in self.params}

    def grid(self) -> dict[str, list[Any]]:
        return {p.name: p.grid_values() for p in self.params}

    def to_dict(self) -> dict[str, Any]:
        return {**{p.name: p.to_dict() for p in self.params}, "pinned": dict(self.pinned)}

    @property
    def hash(self) -> str:
        """Stable fingerprint of the space (stored with the study to refuse a changed resume)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def values_from(self, nested: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The swept keys' values found in a nested spec mapping (for enqueueing a known spec).

        Returns ``(values, skipped)``: values inside the space, and the keys that were missing or
        outside it (those are left to the sampler).
        """
        values, skipped = {}, []
        for p in self.params:
            node: Any = nested
            for k in p.name.split("."):
                node = node.get(k) if isinstance(node, dict) else None
            if node is not None and p.contains(node):
                values[p.name] = node
            else:
                skipped.append(p.name)
        return values, skipped


def _section_of(ann: Any) -> Any:
    """``X`` for an optional section ``X | None`` (the spec's ``tao`` section); else ``ann``."""
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0]
    return ann


def _field_info(dotted: str) -> tuple[Any, str | None]:
    """The Pydantic field of ``dotted`` inside Spec, or (None, reason) when the path is unknown."""
    model: type[BaseModel] = Spec
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            where = ".".join(parts[:i]) or "the spec"
            return None, f"'{part}' is not a key of {where} (known: {', '.join(sorted(fields))})"
        info = fields[part]
        ann = _section_of(info.annotation)
        is_section = isinstance(ann, type) and issubclass(ann, BaseModel)
        if i == len(parts) - 1:
            if is_section:
                return None, (f"'{dotted}' is a section, not a value; use one of its keys "
                              f"({', '.join(dotted + '.' + k for k in ann.model_fields)})")
            return info, None
        if not is_section:
            return None, f"'{'.'.join(parts[: i + 1])}' is a value, not a section"
        model = ann
    return None, "empty key"


def _check_value(dotted: str, value: Any) -> str | None:
    """None when ``value`` is valid for ``dotted`` according to the spec's own field rules."""
    try:
        Spec.model_validate(unflatten({dotted: value}))
    except ValidationError as err:
        return "; ".join(e["msg"] for e in err.errors())
    return None


def _number(value: Any, what: str, fail: Any) -> float | int:
    # YAML 1.1 reads `1e-4` (no dot) as a string; accept any numeric spelling.
    if isinstance(value, bool):
        fail(f"{what} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        fail(f"{what} must be a number, got {value!r}")
    raise AssertionError


def _parse_param(name: str, raw: Any, where: str) -> Param:
    def fail(msg: str) -> typing.NoReturn:
        raise SpecError(f"search space {where}: '{name}': {msg}")

    info, reason = _field_info(name)
    if info is None:
        fail(f"unknown spec key — {reason}; fix the key (see docs/spec.md)")
    if name in _NOT_TUNABLE or name.startswith(_NOT_TUNABLE_SECTIONS):
        fail("may not be swept (budget, data, seed or device key); put it under 'pinned:' or use the "
             "sweep's --epochs / --batch-size flags")
    if not isinstance(raw, dict):
        fail(f"expected a mapping like {{type: float, low: 0.0, high: 1.0}}, got {raw!r}")
    unknown = set(raw) - _PARAM_KEYS
    if unknown:
        fail(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(_PARAM_KEYS)}")
    ptype = raw.get("type")
    if ptype not in PARAM_TYPES:
        fail(f"type must be one of {', '.join(PARAM_TYPES)}, got {ptype!r}")
    ann = info.annotation
    if ptype == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            fail("categorical needs a non-empty list 'choices'")
        if len({json.dumps(c, default=str) for c in choices}) != len(choices):
            fail(f"duplicate choices in {choices}")
        for c in choices:
            bad = _check_value(name, c)
            if bad:
                fail(f"choice {c!r} is not a valid value: {bad}")
        return Param(name, "categorical", choices=tuple(choices))
    if typing.get_origin(ann) is typing.Literal or ann is bool:
        options = typing.get_args(ann) if ann is not bool else (True, False)
        fail(f"is a choice between {list(options)}: use type: categorical with choices")
    if ptype == "float" and ann is int:
        fail("is an integer key: use type: int")
    if "choices" in raw:
        fail(f"'choices' only applies to type: categorical (this is type: {ptype})")
    for k in ("low", "high"):
        if k not in raw:
            fail(f"type {ptype} needs 'low' and 'high'")
    low = _number(raw["low"], "low", fail)
    high = _number(raw["high"], "high", fail)
    step = raw.get("step")
    if step is not None:
        step = _number(step, "step", fail)
        if step <= 0:
            fail(f"step must be > 0, got {step}")
    if ptype == "int":
        if int(low) != low or int(high) != high or (step is not None and int(step) != step):
            fail(f"type int needs integer low/high/step, got low={low}, high={high}, step={step}")
        low, high = int(low), int(high)
        step = int(step) if step is not None else None
    else:
        low, high = float(low), float(high)
    if not low < high:
        fail(f"low ({low}) must be < high ({high}); fix the range, or pin the key under 'pinned:'")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        fail(f"log must be true or false, got {log!r}")
    if log and low <= 0:
        fail(f"log: true needs low > 0, got low={low}")
    if log and step is not None:
        fail("log: true and step cannot be combined")
    for k, v in (("low", low), ("high", high)):
        bad = _check_value(name, v)
        if bad:
            fail(f"{k}={v} is outside what the spec accepts: {bad}")
    return Param(name, ptype, low=low, high=high, log=log, step=step)


def parse_search_space(data: Any, *, where: str = "(mapping)") -> SearchSpace:
    """Validate a search-space mapping (see the module docstring for the format).

    Raises:
        SpecError: unknown key path, invalid type/range/choice, or a key both swept and pinned.
    """
    if not isinstance(data, dict) or not data:
        raise SpecError(f"search space {where}: expected a non-empty mapping of dotted spec keys, got {data!r}")
    data = dict(data)
    pinned_raw = data.pop("pinned", None) or {}
    if not isinstance(pinned_raw, dict):
        raise SpecError(f"search space {where}: 'pinned' must map dotted keys to values, got {pinned_raw!r}")
    # a TAO-named key (train.optim.optim, train.optim.policy, ...) tunes its deftpipe spec key
    data = {search_key(str(k)): v for k, v in data.items()}
    pinned_raw = {search_key(str(k)): v for k, v in pinned_raw.items()}
    params = tuple(_parse_param(str(k), v, where) for k, v in data.items())
    if not params:
        raise SpecError(f"search space {where}: no parameter to sweep (only 'pinned'); add at least one key")
    pinned: dict[str, Any] = {}
    for k, v in pinned_raw.items():
        info, reason = _field_info(str(k))
        if info is None:
            raise SpecError(f"search space {where}: pinned '{k}': unknown spec key — {reason}")
        bad = _check_value(str(k), v)
        if bad:
            raise SpecError(f"search space {where}: pinned '{k}' = {v!r} is invalid: {bad}")
        if k in data:
            raise SpecError(f"search space {where}: '{k}' is both swept and pinned; keep one")
        pinned[str(k)] = v
    return SearchSpace(params=params, pinned=pinned, source=where)


def load_search_space(source: str | Path | dict[str, Any] | SearchSpace | None = None) -> SearchSpace:
    """A :class:`SearchSpace` from a YAML path, a mapping, or ``None`` (the built-in default)."""
    if isinstance(source, SearchSpace):
        return source
    if isinstance(source, dict):
        return parse_search_space(source)
    path = Path(source) if source is not None else DEFAULT_SPACE_PATH
    if not path.is_file():
        raise SpecError(f"search space file {path} does not exist; pass an existing YAML with --search-space")
    data = load_yaml_file(path, "search space file")
    space = parse_search_space(data, where=str(path))
    return space if source is not None else SearchSpace(space.params, space.pinned, "built-in default")


__all__ = ["BUDGET_KEYS", "Param", "SearchSpace", "load_search_space", "parse_search_space"]
