"""The one place that turns results into output: rich tables for people, JSON for machines.

Results go to stdout; progress and human diagnostics go to stderr, so
``lw ... --json | jq`` always sees a single JSON document.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from typing import Any, Callable, Iterator, Optional

import numpy as np
from rich.console import Console
from rich.table import Table

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(_jsonable(data), indent=2) + "\n")
    sys.stdout.flush()


class Output:
    """Per-command renderer: ``emit`` prints JSON in --json mode, else calls the human renderer."""

    def __init__(self, json_mode: bool = False, quiet: bool = False):
        self.json_mode = json_mode
        self.quiet = quiet

    def emit(self, data: Any, human: Optional[Callable[[Console], None]] = None) -> None:
        if self.json_mode:
            print_json(data)
        elif human is not None:
            human(stdout)
        else:
            stdout.print(data)

    def note(self, message: str) -> None:
        """A side remark for people (stderr); silent in JSON or quiet mode."""
        if not (self.json_mode or self.quiet):
            stderr.print(message, highlight=False)

    @property
    def interactive(self) -> bool:
        return not self.json_mode and not self.quiet and stderr.is_terminal

    @contextlib.contextmanager
    def progress(self, description: str, total: Optional[float] = None) -> Iterator[Callable[..., None]]:
        """Yields update(done, total=None, description=None). A rich bar on a terminal, else nothing."""
        if not self.interactive:
            yield lambda *args, **kwargs: None
            return
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn()]
        with Progress(*columns, console=stderr, transient=True) as bar:
            task = bar.add_task(description, total=total)

            def update(done: float, total: Optional[float] = None, description: Optional[str] = None) -> None:
                fields = {"completed": done}
                if total is not None:
                    fields["total"] = total
                if description is not None:
                    fields["description"] = description
                bar.update(task, **fields)

            yield update


def table(title: Optional[str], columns: list[str], rows: list[list[Any]]) -> Table:
    out = Table(title=title, show_lines=False, header_style="bold")
    for name in columns:
        out.add_column(name, overflow="fold")
    for row in rows:
        out.add_row(*["" if v is None else str(v) for v in row])
    return out


def key_values(pairs: list[tuple[str, Any]]) -> Table:
    out = Table(show_header=False, box=None, pad_edge=False)
    out.add_column(style="bold")
    out.add_column(overflow="fold")
    for key, value in pairs:
        out.add_row(key, "" if value is None else str(value))
    return out


def fmt_float(value: Optional[float], digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"
