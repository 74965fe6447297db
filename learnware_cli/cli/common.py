"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from learnware_cli.market.store import DEFAULT_MARKET_ENV

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document on stdout (for scripts and CI); no progress display.")
MARKET_OPTION = typer.Option(
    None,
    "--market",
    "-m",
    envvar=DEFAULT_MARKET_ENV,
    help="Market folder (default: $LW_MARKET, else ./market).",
    show_default=False,
)


def open_market(path: Optional[Path]):
    from learnware_cli.market.store import Market

    return Market.open(path)
