"""YAML files read into typed models (the plant model, the alarm database), with mistakes named by line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class FileProblems(ValueError):
    """A file that does not load; the message names each wrong field and its line, one problem a line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_model(path: Path, model: type[M]) -> M:
    text = path.read_text(encoding="utf-8")
    try:
        return model.model_validate(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        raise FileProblems([f"{path}: not YAML: {exc}".replace("\n", " ")]) from None
    except ValidationError as exc:
        lines = _line_numbers(text)
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            problems.append(f"{path}:{_nearest_line(lines, tuple(error['loc']))}: {where}: {error['msg']}")
        raise FileProblems(problems) from None


def _line_numbers(text: str) -> dict[tuple[Any, ...], int]:
    """Path of every mapping key and list item in the YAML text -> its 1-based line."""
    found: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        found[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                found[(*path, key.value)] = key.start_mark.line + 1
                walk(value, (*path, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return found


def _nearest_line(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int:
    """The line of the error's field, or of its closest enclosing entry when the field is missing."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1
