"""The base of the typed records a run stores (``deft_state.json``, ``best_model.json``, the audit,
``pipeline_state.json``): a Pydantic model that keeps what it does not know.

What a record names is typed (statuses are enums, numbers are numbers) and read as attributes; a key
the model does not name (written by another version, or a metric added later) is kept and written
back as it was, and a key a newer version added is defaulted when an older file lacks it. Only the
keys a file had, or that the code set, are written again (``exclude_unset``), so a round trip keeps
a file's keys and values exactly. Each record reads and writes its file in one place, its own
``load``/``save``, through :func:`deftpipe._fs.atomic_write_json`.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePath
from typing import Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from deftpipe._fs import atomic_write_json
from deftpipe.errors import StateError, clip

#: A JSON number as written: an int stays an int and a float a float (``float`` alone would turn 5 into 5.0).
Number = int | float
#: A path as the records store it: text (a ``Path`` handed in is written as its text, as before).
PathText = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, PurePath) else v)]


def read_json_file(path: Path, *, missing: str, invalid: str) -> Any:
    """The parsed JSON of ``path``, the one way a record's file is opened.

    Raises:
        StateError: ``missing`` when there is no file; ``"{path} is not valid JSON (why); {invalid}"``
            when it does not parse.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StateError(missing) from None
    except ValueError as e:
        raise StateError(f"{path} is not valid JSON ({e}); {invalid}") from None


class Record(BaseModel):
    """A JSON object on disk, typed where the model names a key, kept as it is where not."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, arbitrary_types_allowed=True)

    @classmethod
    def from_json(cls, data: Any, *, where: str | Path) -> Self:
        """Check a parsed JSON object against the record.

        Raises:
            StateError: a key the record names has a value of the wrong type, naming the file and key.
        """
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            wrong = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']} (found {clip(repr(e.get('input')), 60)})"
                              for e in err.errors()[:5])
            raise StateError(f"{where} has fields of the wrong type ({clip(wrong)}); it was left untouched — "
                             "restore it from a backup, or start a new run with `--new`") from None

    def to_json(self) -> dict[str, Any]:
        """The record as the JSON object to write: the keys it was read with or set, and its unknown keys."""
        return self.model_dump(by_alias=True, exclude_unset=True)

    def write(self, path: str | Path) -> Path:
        """One atomic write (temp file, fsync, rename) of the record to ``path``."""
        return atomic_write_json(path, self.to_json())


__all__ = ["Number", "PathText", "Record", "read_json_file"]
