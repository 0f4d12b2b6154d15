"""Synthetic tasks with known answers, and byte-level text. `TASKS` maps each task's name to its class."""

from emergence_lab.tasks.addition import Addition
from emergence_lab.tasks.base import Task, TaskBatch
from emergence_lab.tasks.composition import Composition
from emergence_lab.tasks.modular import Modular
from emergence_lab.tasks.parity import Parity
from emergence_lab.tasks.recall import Recall
from emergence_lab.tasks.text import Text

TASKS: dict[str, type[Task]] = {
    "addition": Addition,
    "modular": Modular,
    "recall": Recall,
    "parity": Parity,
    "composition": Composition,
    "text": Text,
}

__all__ = ["TASKS", "Addition", "Composition", "Modular", "Parity", "Recall", "Task", "TaskBatch", "Text"]
