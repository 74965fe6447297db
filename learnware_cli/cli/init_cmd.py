"""`lw init`: create a market folder from market_template/."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from learnware_cli.cli.common import JSON_OPTION
from learnware_cli.cli.output import Output, key_values


def init(
    path: Path = typer.Argument(Path("market"), help="Folder to create the market in (must not hold one)."),
    name: Optional[str] = typer.Option(None, "--name", help="Market name (default: the folder's name)."),
    gamma: Optional[float] = typer.Option(None, "--gamma", help="Gaussian kernel width every spec in the market shares (default 0.1)."),
    k: Optional[int] = typer.Option(None, "--k", "-K", help="Reduced-set size of the market's RKME specs (default 100)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Create a new, empty learnware market.

    Example: lw init ./market --name demo --gamma 0.1 --k 100
    """
    from learnware_cli.market.store import Market

    market = Market.create(path, name=name, gamma=gamma, k=k)
    data = {"ok": True, "market": str(market.root), "name": market.name, "gamma": market.gamma, "K": market.k}

    def human(console):
        console.print(f"Created market [bold]{market.name}[/] in {market.root}")
        console.print(key_values([("gamma", market.gamma), ("K", market.k)]))

    Output(json_output).emit(data, human)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
