"""Errors a user can act on. The CLI maps them to exit code 2 (bad recipe or input)."""

from __future__ import annotations


class FactoryError(Exception):
    """Base for errors caused by the user's recipe or data, not by a bug."""

    exit_code = 2


class RecipeError(FactoryError):
    """One or more problems in a recipe, each already rendered as ``file:line: path: message``."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class InputError(FactoryError):
    """A source cannot be read at all (missing file, unparseable JSON document, hub offline)."""
