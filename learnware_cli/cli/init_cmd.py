"""`lw init`: create a market folder from market_template/."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from learnware_cli.cli.common import JSON_OPTION, MARKET_OPTION, gamma_option, k_option
from learnware_cli.cli.output import Output, key_values


def init(
    ctx: typer.Context,
    path: Optional[Path] = typer.Argument(None, metavar="[PATH]", help="Folder to create the market in (must not hold one); or --market.", show_default=False),
    market: Optional[Path] = MARKET_OPTION,
    name: Optional[str] = typer.Option(None, "--name", help="Market name (default: the folder's name)."),
    gamma: Optional[float] = gamma_option("Gaussian kernel width every spec in the market shares (default 0.1)."),
    k: Optional[int] = k_option(None, "Reduced-set size of the market's RKME specs (default 100).", "-K"),
    json_output: bool = JSON_OPTION,
) -> None:
    """Create a new, empty learnware market (in PATH, else --market, else $LW_MARKET, else ./market).

    Example: lw init ./market --name demo --gamma 0.1 --k 100
    """
    from learnware_cli.errors import UsageError
    from learnware_cli.market.objstore import is_remote
    from learnware_cli.market.store import Market, default_market_path

    if path is not None and market is not None and Path(path) != Path(market) and not _from_environment(ctx, "market"):
        raise UsageError(f"lw init: two folders given ({path} and --market {market}): give one")
    root = path or market or default_market_path()
    if is_remote(root):  # s3://BUCKET/PREFIX: market.json created there, conditionally
        from learnware_cli.market.remote import Remote

        remote = Remote(str(root))
        config = remote.create(name=name, gamma=gamma, k=k)
        created = Market(Path(remote.url), config)  # for its name and kernel only
        where = remote.url
    else:
        created = Market.create(root, name=name, gamma=gamma, k=k)
        where = str(created.root)
    data = {"ok": True, "market": where, "name": created.name, "gamma": created.gamma, "K": created.k}

    def human(console):
        console.print(f"Created market [bold]{created.name}[/] in {where}")
        console.print(key_values([("gamma", created.gamma), ("K", created.k)]))

    Output(json_output).emit(data, human)


def _from_environment(ctx: typer.Context, name: str) -> bool:
    """Whether an option's value came from its environment variable (a default that an argument overrides)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "ENVIRONMENT"


def register(app: typer.Typer) -> None:
    app.command("init")(init)
