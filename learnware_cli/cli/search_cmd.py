"""`lw search`: find learnwares by tags, name and the statistics of the user's data."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from learnware_cli.cli.common import JSON_OPTION, MARKET_OPTION, k_option, open_market
from learnware_cli.cli.output import Output, fmt_float, safe, table


def search(
    market: Optional[Path] = MARKET_OPTION,
    spec: Optional[Path] = typer.Option(None, "--spec", help="Your RKME (from `lw spec ... --market M`)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Your rows: the RKME is fitted here, locally; the data is not stored."),
    tag: List[str] = typer.Option([], "--tag", "-t", help="Semantic filter Key=Value (repeatable), e.g. Task=Regression."),
    name: Optional[str] = typer.Option(None, "--name", help="Name/description text (substring first, else fuzzy)."),
    k: int = k_option(5, "How many learnwares to return (and the mixture's maximum size)."),
    all_versions: bool = typer.Option(False, "--all-versions", help="Rank every version, not only each learnware's latest."),
    no_mixture: bool = typer.Option(False, "--no-mixture", help="Skip the mixture search."),
    seed: int = typer.Option(0, "--seed", help="Seed of the local RKME fit for --data."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Search a market: semantic filters, then single and mixture ranking by MMD to your data.

    Example: lw search --market ./market --data my_rows.csv --tag Task=Regression -k 3 --json > found.json
    """
    from learnware_cli.errors import InputError
    from learnware_cli.search.engine import search as run_search
    from learnware_cli.search.semantic import parse_tag_filters

    output = Output(json_output)
    opened = open_market(market)
    if spec is not None and data is not None:
        raise InputError("give either --spec or --data, not both")
    query = parse_tag_filters(tag, opened.vocabulary)
    user_spec = None
    if spec is not None:
        from learnware_cli.specs import load_spec

        user_spec = load_spec(spec)
    elif data is not None:
        from learnware_cli.data_io import read_matrix
        from learnware_cli.rkme import fit_rkme

        table_read = read_matrix(data, fill=True)
        rows = table_read.values
        if table_read.replaced:
            output.note(f"note: {table_read.replaced} missing or infinite cell(s) of {data} replaced by column means")
        with output.progress("fitting your RKME locally", total=1) as update:
            user_spec = fit_rkme(rows, k=opened.k, gamma=opened.gamma, seed=seed, on_stage=lambda s, d, t: update(d, t, s))
    with output.progress("searching", total=None) as update:
        result = run_search(opened, user_spec, query, name, k=k, all_versions=all_versions, mixture=not no_mixture, progress=lambda d, t: update(d, t))
    doc = result.to_dict()
    doc["total"] = total_matches(result)
    doc["more"] = max(doc["total"] - len(result.single), 0)  # matches that -k left out
    output.emit(doc, lambda console: render(console, result, doc["more"]))


def total_matches(result) -> int:
    """How many learnwares matched (the engine's total if it reports one, else the candidates it ranked)."""
    total = getattr(result, "total", None)
    return int(total) if isinstance(total, int) else max(int(result.considered), len(result.single))


def render(console, result, more: int = 0) -> None:
    shown = len(result.single)
    hint = f"showing {shown} of {shown + more} matches: -k {shown + more} shows them all" if more else ""
    if result.mode == "semantic":
        rows = [[r["id"], r["version"], r["name"], r["task"], r["score"]] for r in result.single]
        console.print(table(f"semantic matches ({result.considered})", ["id", "version", "name", "task", "score"], rows))
        if hint:
            console.print(hint, highlight=False)
        return
    if not result.single:
        console.print(f"No learnware with input dimension {result.user['dim']} matches these filters.")
        return
    rows = [[i + 1, r["id"], r["version"], r["name"], r["task"], fmt_float(r["mmd2"]), f"{r['score']:.3f}"] for i, r in enumerate(result.single)]
    console.print(table(f"closest learnwares (of {result.considered} in your island)", ["rank", "id", "version", "name", "task", "MMD²", "score"], rows))
    if hint:
        console.print(hint, highlight=False)
    if result.mixture:
        mix = result.mixture
        rows = [[r["id"], r["version"], r["name"], f"{r['weight']:.3f}"] for r in mix["learnwares"]]
        console.print(table(f"best mixture: MMD² {fmt_float(mix['mmd2'])}, score {mix['score']:.3f}", ["id", "version", "name", "weight"], rows))


def reindex(
    market: Optional[Path] = MARKET_OPTION,
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild index.json from the learnwares/ID/vN folders even if it reads fine."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Repair a market: rebuild a missing or damaged index from its folders, delete killed writers' leftovers, rebuild the search cache.

    Example: lw reindex --market ./market --rebuild
    """
    from learnware_cli.search.cache import rebuild_all

    output = Output(json_output)
    opened = open_market(market)
    rebuilt = opened.repair_index(force=rebuild)
    swept = opened.sweep()
    with output.progress("reading specifications", total=None) as update:
        counts = rebuild_all(opened, progress=lambda done, total: update(done, total))
    lines = []
    if rebuilt is not None:
        lines.append(f"Rebuilt index.json from the version folders ({rebuilt.reason}): {rebuilt.learnwares} learnware(s), {rebuilt.versions} version(s)")
        lines += [f"  reconstructed {note}" for note in rebuilt.reconstructed] + [f"  skipped {note}" for note in rebuilt.skipped]
        lines += [f"  the old index is kept as {rebuilt.backup}"] if rebuilt.backup else []
    lines.append(f"Rebuilt search cache: {sum(counts.values())} spec(s) in {len(counts)} dimension group(s); removed {len(swept.removed)} leftover(s)")
    lines += [f"  kept {note}" for note in swept.kept]
    output.emit(
        {
            "ok": True,
            "rebuilt": rebuilt.to_dict() if rebuilt is not None else None,
            "stacks": {str(d): c for d, c in counts.items()},
            "removed": swept.removed,
            "kept": swept.kept,
        },
        lambda c: c.print("\n".join(safe(line) for line in lines), highlight=False),  # folder names are untrusted
    )


def register(app: typer.Typer) -> None:
    app.command("search")(search)
    app.command("reindex")(reindex)
