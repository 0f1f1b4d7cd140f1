"""The one YAML reader of every user file (spec, ``pipeline.yaml``, search space): ``yaml.SafeLoader``
with bounds, so a hostile file fails fast with one line instead of eating the machine.

- Alias bombs ("billion laughs"): the document's size *with every alias expanded* is computed on the
  composed node graph (linear time, nothing is expanded) and refused above :data:`MAX_VALUES`.
- Nesting deeper than Python's recursion allows, files over :data:`MAX_BYTES`, bytes that are not
  UTF-8: refused.
- An empty file is an error, never "all defaults".
- A key written twice in one mapping is an error naming both lines (YAML's "the last one wins" would
  silently drop the first value).
- Error text quoted from the file is clipped (:func:`deftpipe.errors.clip`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from deftpipe.errors import SpecError, clip

MAX_VALUES = 100_000  # scalars + collections after alias expansion (a real spec has ~100)
MAX_BYTES = 10 * 1024 * 1024


def _expanded_size(node: yaml.Node, memo: dict[int, int], limit: int) -> int:
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = limit + 1  # a node inside itself (recursive alias) counts as too big
    if isinstance(node, yaml.SequenceNode):
        n = 1 + sum(_expanded_size(c, memo, limit) for c in node.value)
    elif isinstance(node, yaml.MappingNode):
        n = 1 + sum(_expanded_size(k, memo, limit) + _expanded_size(v, memo, limit) for k, v in node.value)
    else:
        n = 1
    memo[key] = min(n, limit + 1)
    return memo[key]


def _duplicate_key(node: yaml.Node, what: str) -> None:
    """Raise on the first mapping that holds one key twice (``<<`` merges are not keys)."""
    seen_nodes: set[int] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if id(n) in seen_nodes:
            continue
        seen_nodes.add(id(n))
        if isinstance(n, yaml.MappingNode):
            first: dict[str, int] = {}
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    line = k.start_mark.line + 1
                    if k.value in first:
                        raise SpecError(f"{what}: key {clip(k.value, 60)!r} is written twice (lines {first[k.value]} "
                                        f"and {line}); keep one")
                    first[k.value] = line
                stack.extend((k, v))
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)


def parse_yaml(text: str, what: str) -> Any:
    """Parse ``text`` (named ``what`` in errors) with the bounds above; None for an empty document."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}, MAX_VALUES) > MAX_VALUES:
            raise SpecError(f"{what} expands to more than {MAX_VALUES} values (nested aliases '&'/'*'); "
                            "write the values out instead of nesting aliases")
        _duplicate_key(node, what)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise SpecError(f"{what} is not valid YAML: {clip(' '.join(str(err).split()), 300)}") from None
    except RecursionError:
        raise SpecError(f"{what} is nested too deeply to be a configuration; flatten it") from None
    finally:
        loader.dispose()


def load_yaml_file(path: str | Path, what: str) -> Any:
    """Read ``path`` (a ``what``, e.g. "spec file") and :func:`parse_yaml` it.

    Raises:
        SpecError: missing, unreadable, too large, not UTF-8, empty, invalid or too large once expanded.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise SpecError(f"{what} {path} is larger than {MAX_BYTES // 2**20} MiB; it is not a configuration")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise SpecError(f"{what} {path} is a folder; pass a YAML file") from None
    except OSError as err:
        raise SpecError(f"{what} {path} cannot be read: {err.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise SpecError(f"{what} {path} is not UTF-8 (line {line}); save it as UTF-8") from None
    data = parse_yaml(text, f"{what} {path}")
    if data is None:
        raise SpecError(f"{what} {path} is empty; write the settings (see docs/) or delete the file")
    return data


__all__ = ["MAX_BYTES", "MAX_VALUES", "load_yaml_file", "parse_yaml"]
