"""Tasks of the study, by name. To add one: subclass Task in a new module and register it here."""

from __future__ import annotations

from ..errors import UsageError
from .base import PreferencePair, SFTExample, Task
from .paraphrase import ParaphraseTask
from .sonnet import SonnetTask

TASKS: dict[str, type[Task]] = {"paraphrase": ParaphraseTask, "sonnet": SonnetTask}


def get_task(name: str) -> type[Task]:
    """The Task class registered under name, or a usage error listing the known ones."""
    if name not in TASKS:
        raise UsageError(f"unknown task '{name}'; choose one of {', '.join(TASKS)}")
    return TASKS[name]


__all__ = ["TASKS", "PreferencePair", "SFTExample", "Task", "get_task"]
