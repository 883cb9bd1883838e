"""The one reader of JSON that volcam did not write itself: model cards, bundle configs and metadata,
metrics files, a case's ``case.json`` in a folder it resumes.

Nesting is bounded (:data:`MAX_DEPTH` levels): a file of a few thousand ``[`` would otherwise make
Python's parser (and every walk over the value after it) raise ``RecursionError``, which is no message
for a person. Anything that is not JSON, or nests deeper, is one line naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from volcam.errors import FileFormatError, VolcamError, first_line

__all__ = ["MAX_DEPTH", "json_depth", "parse_json", "read_json_file"]

#: Levels of arrays and objects a JSON document may nest: cards and bundle configs use about ten.
MAX_DEPTH = 100


def json_depth(value: Any) -> int:
    """How deep ``value`` nests (a scalar 0, ``[]`` 1, ``[[1]]`` 2), walked without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            items: Any = item.values()
        elif isinstance(item, list):
            items = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:  # deep enough to refuse: no need to walk the rest
            return depth
        stack.extend((child, depth) for child in items)
    return deepest


def parse_json(
    text: str | bytes, where: str | os.PathLike, what: str = "JSON file", error: type[VolcamError] = FileFormatError
) -> Any:
    """The JSON value of ``text``; one ``error`` line naming ``where`` when it is not JSON or nests
    more than :data:`MAX_DEPTH` levels."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise error(f"{where}: not a {what}: nested more than {MAX_DEPTH} levels deep") from None
    except (UnicodeDecodeError, ValueError) as problem:  # json.JSONDecodeError is a ValueError
        raise error(f"{where}: not a JSON {what} ({first_line(problem)})") from None
    if json_depth(value) > MAX_DEPTH:
        raise error(f"{where}: not a {what}: nested more than {MAX_DEPTH} levels deep")
    return value


def read_json_file(path: str | os.PathLike, what: str = "JSON file", error: type[VolcamError] = FileFormatError) -> Any:
    """:func:`parse_json` of the file at ``path``; one ``error`` line when it is missing, not a regular
    file (a FIFO would block the read), unreadable or not JSON."""
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: no such {what}")
    if not path.is_file():
        raise error(f"{path}: not a regular file")
    try:
        text = path.read_bytes()
    except OSError as problem:
        raise error(f"{path}: cannot read the {what} ({problem.strerror or first_line(problem)})") from None
    return parse_json(text, path, what, error)
