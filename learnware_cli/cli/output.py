"""The one place that turns results into output: rich tables for people, JSON for machines.

Results go to stdout; progress and human diagnostics go to stderr, so
``lw ... --json | jq`` always sees a single JSON document.

Text that comes from a market (names, descriptions, notes, check reports,
ids) or from a model (error messages) is untrusted: in human output it goes
through ``safe`` so it cannot drive the user's terminal or rich's markup.
``table`` and ``key_values`` apply it to every cell; anything printed directly
must apply it itself. JSON output stays exact (json escapes control characters).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
from typing import Any, Callable, Iterator, Optional

import numpy as np
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

# emoji=False: a name holding ":warning:" is shown as typed, not as an emoji
stdout = Console(soft_wrap=True, emoji=False)
stderr = Console(stderr=True, soft_wrap=True, emoji=False)
# stdout that is not a terminal (a CI log, a pipe, a file) is never wrapped: lines are as wide as their content
LOG_WIDTH = 1_000_000


def stdout_is_terminal() -> bool:
    return stdout.is_terminal


def stdout_console() -> Console:
    """Where human output goes: rich at the terminal's width, or unwrapped when stdout is a log or pipe."""
    if stdout_is_terminal():
        return stdout
    return Console(soft_wrap=True, emoji=False, width=LOG_WIDTH)

# C0 controls (ESC starts every terminal escape), DEL, C1 controls (0x9b is a one-byte CSI),
# and the bidi controls that make text read other than it is stored (U+061C, U+200E/F,
# embeddings and overrides U+202A-202E, isolates U+2066-2069), plus line/paragraph separators
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SPACE_CHARS = "\t\n\r\x0b\x0c"


def _shown(match: re.Match) -> str:
    """An unsafe character as a space (layout ones) or as its visible escape (\\x1b, \\u202e)."""
    char = match.group()
    if char in _SPACE_CHARS:
        return " "
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def safe(value: Any) -> str:
    """Untrusted text made inert for a terminal: control and bidi characters shown as escapes, markup escaped.

    The one sanitiser for market- and model-supplied strings in human output:
    without it a learnware's name could retitle the terminal, clear it, spoof
    a file name with a right-to-left override, or inject rich markup (links).
    """
    text = "" if value is None else str(value)
    return escape(_UNSAFE_CHARS.sub(_shown, text))


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
            human(stdout_console())
        else:
            stdout_console().print(data)

    def note(self, message: str) -> None:
        """A side remark for people (stderr); silent in JSON or quiet mode."""
        if not (self.json_mode or self.quiet):
            stderr.print(message, highlight=False)

    def warn(self, message: str) -> None:
        """Something the user should act on (stderr, also in quiet mode); in JSON mode it belongs in the document.

        ``message`` is plain text (it is made inert here).
        """
        if not self.json_mode:
            stderr.print(f"[yellow]warning:[/] {safe(message)}", highlight=False)

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


def table(title: Optional[str], columns: list[str], rows: list[list[Any]]) -> RenderableType:
    """A table whose title and cells are plain text (each goes through ``safe``).

    At a terminal, a rich table fitted to its width. Otherwise (a CI log, a
    pipe) the title on its own line and plain aligned rows, never wrapped
    inside a cell, so that logs stay readable and greppable.
    """
    if not stdout_is_terminal():
        out = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
        for name in columns:
            out.add_column(safe(name), no_wrap=True, overflow="ignore")
        for row in rows:
            out.add_row(*[safe(v) for v in row])
        return out if title is None else Group(Text(_UNSAFE_CHARS.sub(_shown, str(title))), out)
    out = Table(title=None if title is None else safe(title), show_lines=False, header_style="bold")
    for name in columns:
        out.add_column(safe(name), overflow="fold")
    for row in rows:
        out.add_row(*[safe(v) for v in row])
    return out


def key_values(pairs: list[tuple[str, Any]]) -> Table:
    """Two columns, key and value, both plain text (each goes through ``safe``)."""
    out = Table(show_header=False, box=None, pad_edge=False)
    out.add_column(style="bold")
    out.add_column(overflow="fold")
    for key, value in pairs:
        out.add_row(safe(key), safe(value))
    return out


def fmt_float(value: Optional[float], digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"
