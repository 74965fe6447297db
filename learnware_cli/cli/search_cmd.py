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
    columns: Optional[str] = typer.Option(None, "--columns", help="What your columns are, comma-separated, in order (default: the CSV header of --data)."),
    semantic: Optional[Path] = typer.Option(None, "--semantic", help="A semantic spec JSON whose Input block describes your columns (Description, Features)."),
    match: str = typer.Option("auto", "--match", help="island: same input width only; features: on the market features you share with each learnware; auto: features when your columns are described."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Search a market: semantic filters, then single and mixture ranking by MMD to your data.

    With described columns (a CSV header, --columns or --semantic) learnwares on other column sets
    are compared on the market features they share with you (`lw features`); each result says its
    coverage (the share of its input you have) and what it misses.

    Example: lw search --market ./market --data my_rows.csv --tag Task=Regression -k 3 --json > found.json
    """
    from learnware_cli.errors import InputError
    from learnware_cli.search.engine import search as run_search
    from learnware_cli.search.semantic import parse_tag_filters

    output = Output(json_output)
    opened = open_market(market)
    if spec is not None and data is not None:
        raise InputError("give either --spec or --data, not both")
    if columns is not None and semantic is not None:
        raise InputError("give either --columns or --semantic, not both")
    user_semantic = user_columns_semantic(columns, semantic)
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
        if user_semantic is None and table_read.header:
            user_semantic = user_columns_semantic(",".join(table_read.header), None, split=False, header=table_read.header)
        if table_read.replaced:
            output.note(f"note: {table_read.replaced} missing or infinite cell(s) of {data} replaced by column means")
        with output.progress("fitting your RKME locally", total=1) as update:
            user_spec = fit_rkme(rows, k=opened.k, gamma=opened.gamma, seed=seed, on_stage=lambda s, d, t: update(d, t, s))
    with output.progress("searching", total=None) as update:
        result = run_search(
            opened, user_spec, query, name, k=k, all_versions=all_versions, mixture=not no_mixture,
            progress=lambda d, t: update(d, t), user_semantic=user_semantic, match=match,
        )
    doc = result.to_dict()
    doc["total"] = total_matches(result)
    doc["more"] = max(doc["total"] - len(result.single), 0)  # matches that -k left out
    output.emit(doc, lambda console: render(console, result, doc["more"]))


def user_columns_semantic(columns: Optional[str], semantic: Optional[Path], split: bool = True, header=None) -> Optional[dict]:
    """The semantic Input block describing the user's columns, from --columns, --semantic or a CSV header."""
    from learnware_cli.errors import InputError

    if semantic is not None:
        from learnware_cli.specs.base import read_json

        doc = read_json(semantic)
        if not isinstance(doc, dict) or not isinstance(doc.get("Input"), dict):
            raise InputError(f"{semantic}: expected a semantic spec with an Input block (Dimension, Description)")
        return {"Input": doc["Input"]}
    names = list(header) if header is not None else ([c.strip() for c in columns.split(",")] if columns is not None else None)
    if names is None:
        return None
    if any(not n for n in names):
        raise InputError("--columns: an empty column description (write them comma-separated, one per column)")
    return {"Input": {"Dimension": len(names), "Description": {str(i): n for i, n in enumerate(names)}}}


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
        if result.match == "features":
            console.print("No learnware shares a market feature with your columns and matches these filters.")
        else:
            console.print(f"No learnware with input dimension {result.user['dim']} matches these filters.")
        return
    if result.match == "features":
        render_features(console, result, hint)
        return
    rows = [[i + 1, r["id"], r["version"], r["name"], r["task"], fmt_float(r["mmd2"]), f"{r['score']:.3f}"] for i, r in enumerate(result.single)]
    console.print(table(f"closest learnwares (of {result.considered} in your island)", ["rank", "id", "version", "name", "task", "MMD²", "score"], rows))
    if hint:
        console.print(hint, highlight=False)
    if result.mixture:
        mix = result.mixture
        rows = [[r["id"], r["version"], r["name"], f"{r['weight']:.3f}"] for r in mix["learnwares"]]
        console.print(table(f"best mixture: MMD² {fmt_float(mix['mmd2'])}, score {mix['score']:.3f}", ["id", "version", "name", "weight"], rows))


def render_features(console, result, hint: str) -> None:
    """The "features" match: coverage and what each learnware misses, next to the marginal MMD²."""
    user = result.user
    unmatched = user.get("unmatched_columns") or []
    rows = [
        [i + 1, r["id"], r["version"], safe(r["name"]), r["task"], f"{r['coverage']:.2f}", len(r["shared"]), fmt_float(r["mmd2"]), f"{r['score']:.3f}", safe(", ".join(r["missing"][:3]) + (f" +{len(r['missing']) - 3}" if len(r["missing"]) > 3 else ""))]
        for i, r in enumerate(result.single)
    ]
    title = f"closest learnwares on shared features (of {result.considered} sharing any)"
    console.print(table(title, ["rank", "id", "version", "name", "task", "coverage", "shared", "MMD²", "score", "missing"], rows))
    if unmatched:
        console.print(f"{len(unmatched)} of your {user['dim']} column(s) match no market feature (`lw features` lists them)", highlight=False)
    if hint:
        console.print(hint, highlight=False)
    if result.mixture:
        mix = result.mixture
        rows = [[r["id"], r["version"], safe(r["name"]), f"{r['weight']:.3f}"] for r in mix["learnwares"]]
        console.print(table(f"best mixture on {len(mix['shared'])} shared feature(s): MMD² {fmt_float(mix['mmd2'])}, score {mix['score']:.3f}", ["id", "version", "name", "weight"], rows))


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
