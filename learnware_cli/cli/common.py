"""Options shared by several commands, declared once, so that their names never drift between commands.

Flag values are validated here, while the command line is parsed: a bad one
is a usage error (exit 2) before any file is read or any model runs.
"""

from __future__ import annotations

import math
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
    help="Market folder, or s3://BUCKET/PREFIX for a market on object storage (default: $LW_MARKET, else ./market).",
    show_default=False,
)
# every K (reduced-set size) and top-k takes both spellings: -k and --k
K_NAMES = ("--k", "-k")


def _positive_number(value: Optional[float]) -> Optional[float]:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise typer.BadParameter(f"must be a positive number, got {value:g}")
    return value


def k_option(default: Optional[int], help: str, *extra_names: str):
    """A K or top-k option (at least 1), spelled -k or --k (plus extra_names, e.g. an older -K)."""
    return typer.Option(default, *K_NAMES, *extra_names, min=1, help=help)


def gamma_option(help: str):
    """The Gaussian kernel width: a positive number."""
    return typer.Option(None, "--gamma", callback=_positive_number, help=help)


def timeout_option(help: str):
    """Seconds a model call may take: more than 0."""
    return typer.Option(None, "--timeout", callback=_positive_number, help=help)


def open_market(path: Optional[Path]):
    """The market a command reads: a folder, or for s3://BUCKET/PREFIX its local replica, synced with the remote log.

    The replica is an ordinary market folder (list, show, search and reuse read
    it unchanged); its writes (submit, remove, reindex) commit to the remote
    log (``learnware_cli.market.remote``).
    """
    from learnware_cli.market.objstore import is_remote
    from learnware_cli.market.store import Market, default_market_path

    location = path if path is not None else default_market_path()
    if is_remote(location):
        from learnware_cli.market.remote import open_market as open_remote

        return open_remote(str(location))
    return Market.open(path)
