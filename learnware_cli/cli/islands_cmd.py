"""`lw islands`: the market's specification islands (learnwares comparable through shared features) and their connectors."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from learnware_cli.cli.common import JSON_OPTION, MARKET_OPTION, open_market
from learnware_cli.cli.output import Output, safe, table

SHOWN_FEATURES = 3  # feature names in the table's cell before "…+N"
SHOWN_LEARNWARES = 2  # learnware ids named for a group in a connector line before "+N"


def _first(names: list, shown: int) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f", …+{more}" if more > 0 else "")


def _group_text(island_map, group, shown_features: int = SHOWN_FEATURES) -> str:
    """'learnware 00000007 (columns a, b, c)' / 'learnwares 00000002, 00000005 +3 (columns …)'."""
    ids = group.learnwares
    who = ("learnware " if len(ids) == 1 else "learnwares ") + ", ".join(ids[:SHOWN_LEARNWARES])
    if len(ids) > SHOWN_LEARNWARES:
        who += f" +{len(ids) - SHOWN_LEARNWARES}"
    columns = _first([island_map.feature_name(f) for f in group.features], shown_features)
    return f"{who} (columns {columns})"


def _piece_text(island_map, island, piece) -> str:
    named = [_group_text(island_map, island.groups[i]) for i in piece.examples[:1]]
    more = piece.groups - len(named)
    return "{" + "; ".join(named) + (f" +{more} more group(s)" if more > 0 else "") + "}"


def connector_lines(island_map) -> list:
    """One plain-text line per connector: 'island-1: learnware 00000007 (columns a, b, c) joins {…} and {…}'."""
    lines = []
    for island in island_map.islands:
        for connector in island.connectors:
            pieces = [_piece_text(island_map, island, p) for p in connector.joins]
            joined = ", ".join(pieces[:-1]) + " and " + pieces[-1]
            lines.append(f"{island.id}: {_group_text(island_map, island.groups[connector.group])} joins {joined}")
    return lines


def islands(
    market: Optional[Path] = MARKET_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """List the market's specification islands: learnwares that can be compared through shared market features.

    Learnwares with the same data type, task and market features form a group.
    Groups of the same data type and task that share a feature are joined; an island is a connected set of groups.
    Learnwares whose columns are all undescribed form legacy islands, one per input dim.
    A connector is a group whose removal would split its island.

    Example: lw islands --market ./market
    """
    from learnware_cli.market.islands import compute_islands

    opened = open_market(market)
    island_map = compute_islands(opened.entries())
    found = island_map.to_dict()
    data = {"ok": True, "market": str(opened.root), "count": found["count"], "islands": found["islands"], "feature_names": found["feature_names"]}

    def human(console):
        columns = ["island", "data", "task", "learnwares", "features", "connectors"]
        rows = []
        for island in island_map.islands:
            if island.legacy:
                features = f"(undescribed, input dim {island.input_dim if island.input_dim is not None else '?'})"
            else:
                features = _first([island_map.feature_name(f) for f in island.features], SHOWN_FEATURES)
            rows.append([island.id, island.data_type or "-", island.task or "-", len(island.learnwares), features, len(island.connectors)])
        learnwares = sum(len(i.learnwares) for i in island_map.islands)
        console.print(table(f"{opened.name}: {len(rows)} island(s), {learnwares} learnware(s)", columns, rows))
        for line in connector_lines(island_map):
            console.print(safe(line), highlight=False)
        partial = sum(len(i.undescribed) for i in island_map.islands)
        if partial:
            console.print(f"{partial} learnware(s) also have undescribed columns (placed by their described ones; see --json)", highlight=False)

    Output(json_output).emit(data, human)


def register(app: typer.Typer) -> None:
    app.command("islands")(islands)
