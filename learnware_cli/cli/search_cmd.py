"""`lw search`: find learnwares by tags, name and the statistics of the user's data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from learnware_cli.cli.common import JSON_OPTION, MARKET_OPTION, k_option, open_market
from learnware_cli.cli.output import Output, fmt_float, safe, table

DEFAULT_CHECK = 10  # --labeled: how many of the top candidates run on the labeled rows


def search(
    market: Optional[Path] = MARKET_OPTION,
    spec: Optional[Path] = typer.Option(None, "--spec", help="Your RKME (from `lw spec ... --market M`)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Your rows: the RKME is fitted here, locally; the data is not stored."),
    tag: List[str] = typer.Option([], "--tag", "-t", help="Semantic filter Key=Value (repeatable), e.g. Task=Regression."),
    name: Optional[str] = typer.Option(None, "--name", help="Name/description text (substring first, else fuzzy)."),
    k: int = k_option(5, "How many learnwares to return (and the mixture's maximum size)."),
    all_versions: bool = typer.Option(False, "--all-versions", help="Rank every version, not only each learnware's latest."),
    no_mixture: bool = typer.Option(False, "--no-mixture", help="Skip the mixture search."),
    exact: bool = typer.Option(False, "--exact", help="Rank a large island by every learnware's MMD (default above 3 000 learnwares: sketch stage, then exact MMD of the best few hundred)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the local RKME fit for --data."),
    columns: Optional[str] = typer.Option(None, "--columns", help="What your columns are, comma-separated, in order (default: the CSV header of --data)."),
    semantic: Optional[Path] = typer.Option(None, "--semantic", help="A semantic spec JSON whose Input block describes your columns (Description, Features)."),
    match: str = typer.Option("auto", "--match", help="island: same input width only; features: on the market features you share with each learnware; auto: features when your columns are described."),
    labeled: Optional[Tuple[Path, Path]] = typer.Option(
        None, "--labeled", metavar="X Y",
        help="X.csv y.csv: labeled rows of your task (tables). The top --check candidates run on them, in sandboxed workers, and are re-ranked by their measured loss.",
    ),
    anchor_scores: Optional[Path] = typer.Option(None, "--anchor-scores", help="Your anchors' scores (from `lw anchors --evaluate`): rank by them instead of an RKME."),
    check: Optional[int] = typer.Option(None, "--check", min=1, help=f"With --labeled: how many of the top candidates to run (default {DEFAULT_CHECK}; at most the -k listed).", show_default=False),
    json_output: bool = JSON_OPTION,
) -> None:
    """Search a market: semantic filters, then single and mixture ranking by MMD to your data.

    With described columns (a CSV header, --columns or --semantic) learnwares on other column sets
    are compared on the market features they share with you (`lw features`); each result says its
    coverage (the share of its input you have) and what it misses.

    With --labeled X.csv y.csv the first --check N candidates run on your labeled rows (as `lw reuse`
    runs them) and are re-ranked by their measured loss (MSE, or error rate = 1 - accuracy), each
    with a 90 % bootstrap interval; the best one says in what share of resamples it stays best.

    With --anchor-scores scores.json (from `lw anchors --evaluate`) no RKME is needed: learnwares
    are ranked by how well their functional distances to the anchors explain the anchors' scores,
    and an indicator says whether the market has anything much better than your labels' mean.

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
    labeled_rows = read_labeled(labeled, check)  # before any search or model: its files and flags
    user_spec = None
    if anchor_scores is not None and (spec is not None or data is not None):
        raise InputError("--anchor-scores ranks without an RKME: leave out --spec and --data")
    if anchor_scores is not None:
        from learnware_cli.market.anchors import read_scores

        scores_doc = read_scores(anchor_scores)
    if spec is not None:
        from learnware_cli.specs import load_spec

        user_spec = load_spec(spec)
        if labeled_rows is not None:
            check_labeled_width(labeled_rows, user_spec, str(spec))
    elif data is not None:
        from learnware_cli.data_io import read_matrix
        from learnware_cli.rkme import fit_rkme

        table_read = read_matrix(data, fill=True)
        rows = table_read.values
        if labeled_rows is not None and labeled_rows.x.shape[1] != rows.shape[1]:
            raise InputError(f"--labeled: {labeled_rows.x_path} has {labeled_rows.x.shape[1]} columns but {data} has {rows.shape[1]}")
        if user_semantic is None and table_read.header:
            user_semantic = user_columns_semantic(None, None, header=table_read.header)
        if table_read.replaced:
            output.note(f"note: {table_read.replaced} missing or infinite cell(s) of {data} replaced by column means")
        with output.progress("fitting your RKME locally", total=1) as update:
            user_spec = fit_rkme(rows, k=opened.k, gamma=opened.gamma, seed=seed, on_stage=lambda s, d, t: update(d, t, s))
    with output.progress("searching", total=None) as update:
        if anchor_scores is not None:
            from learnware_cli.search.engine import search_by_anchor_scores

            result = search_by_anchor_scores(opened, scores_doc, query, name, k=k)
        else:
            result = run_search(
                opened, user_spec, query, name, k=k, all_versions=all_versions, mixture=not no_mixture,
                progress=lambda d, t: update(d, t), user_semantic=user_semantic, match=match, exact=exact,
            )
    checked = None
    if labeled_rows is not None:
        checked = run_check(output, opened, result, labeled_rows, columns, semantic)
    doc = result.to_dict()
    doc["total"] = total_matches(result)
    doc["more"] = max(doc["total"] - len(result.single), 0)  # matches that -k left out
    if labeled_rows is not None:
        doc["checked"] = checked
    output.emit(doc, lambda console: render(console, result, doc["more"], checked))


@dataclass
class LabeledRows:
    """--labeled X Y as read: X's rows (missing cells filled with column means), its header, the targets."""

    x: object
    y: object
    x_path: Path
    y_path: Path
    replaced: int
    header: Optional[list]
    check: int


def read_labeled(labeled, check: Optional[int]) -> Optional[LabeledRows]:
    """Read and check --labeled X Y and --check N (one-line InputError), or None without --labeled."""
    from learnware_cli.errors import InputError

    if labeled is None:
        if check is not None:
            raise InputError("--check N says how many candidates to run on your labeled rows: add --labeled X.csv y.csv")
        return None
    from learnware_cli.data_io import read_matrix, read_vector
    from learnware_cli.specs.data import infer_kind

    x_path, y_path = Path(labeled[0]), Path(labeled[1])
    kind = infer_kind(x_path)
    if kind != "table":
        raise InputError(f"--labeled: {x_path} holds {kind} data; checking candidates on labeled rows works on tables only for now")
    x_read = read_matrix(x_path, fill=True)
    y = read_vector(y_path)
    if len(y) != len(x_read.values):
        raise InputError(f"--labeled: {x_path} has {len(x_read.values)} rows but {y_path} has {len(y)}")
    return LabeledRows(x_read.values, y, x_path, y_path, x_read.replaced, x_read.header, check or DEFAULT_CHECK)


def check_labeled_width(labeled: LabeledRows, user_spec, source: str) -> None:
    """The labeled rows must be of the kind and width of the specification searched with."""
    from learnware_cli.errors import InputError
    from learnware_cli.rkme.spec import TABLE_KIND

    island = user_spec.island_key()
    if island.kind != TABLE_KIND:
        raise InputError(f"--labeled: {source} is a {user_spec.type_name}; checking candidates on labeled rows works on tables only for now")
    if labeled.x.shape[1] != user_spec.dim:
        raise InputError(f"--labeled: {labeled.x_path} has {labeled.x.shape[1]} columns but {source} describes {user_spec.dim}")


def run_check(output: Output, market, result, labeled: LabeledRows, columns: Optional[str], semantic: Optional[Path]) -> Optional[dict]:
    """Run the first labeled.check candidates on the labeled rows; re-rank result.single in place.

    The new order: the measured candidates by loss, then those not checked (in
    their search order), then those that failed. Every entry keeps its search
    fields and gains "spec_rank" (its place in the search ranking) and
    "measured_loss" (None where not measured). Returns the summary for the
    JSON's "checked" (None when the search found nothing to check).
    """
    from learnware_cli.search.check import check_candidates

    if labeled.replaced:
        output.note(f"note: {labeled.replaced} missing or infinite cell(s) of {safe(labeled.x_path)} replaced by column means")
    if not result.single:
        output.note("note: no candidate to check on your labeled rows")
        return None
    candidates = result.single[: labeled.check]
    user_columns = labeled_user_columns(market, labeled, columns, semantic)
    with output.progress(f"checking {len(candidates)} candidate(s) on your {len(labeled.x)} labeled rows", total=len(candidates)) as update:
        checked = check_candidates(market, candidates, labeled.x, labeled.y, user_columns=user_columns, progress=lambda d, t: update(d, t))
    summary = checked.summary
    measured = {(c["id"], c["version"]) for c in checked}
    failed = {(f["id"], f["version"]) for f in summary["failures"]}
    ranked = [dict(c) for c in checked]
    rest, broken = [], []
    for rank, entry in enumerate(result.single, start=1):
        key = (entry["id"], entry["version"])
        if key in measured:
            continue
        target = broken if key in failed and rank <= len(candidates) else rest
        target.append({**entry, "spec_rank": rank, "measured_loss": None})
    result.single = ranked + rest + broken
    return {
        "rows": summary["rows"],
        "replaced_cells": labeled.replaced,
        "task": summary["task"],
        "loss": summary["loss"],
        "n_boot": summary["n_boot"],
        "level": summary["level"],
        "seed": summary["seed"],
        "candidates": summary["asked"],
        "measured": len(checked),
        "best": summary["best"],
        "best_share": summary["best_share"],
        "failures": summary["failures"],
    }


def labeled_user_columns(market, labeled: LabeledRows, columns: Optional[str], semantic: Optional[Path]):
    """The labeled rows' columns as market features (--columns, --semantic, else X's CSV header), as `lw reuse` reads them."""
    from learnware_cli.errors import InputError
    from learnware_cli.reuse.market_models import UserColumns

    described = user_columns_semantic(columns, semantic, header=labeled.header if columns is None and semantic is None and labeled.header else None)
    if described is None:
        return None
    width = labeled.x.shape[1]
    if described["Input"].get("Dimension") != width:
        raise InputError(f"--labeled: your columns are described as {described['Input'].get('Dimension')} but {labeled.x_path} has {width}")
    # no RKME of the labeled rows: it would only serve the job selector, which the check does not use
    return UserColumns.described(market, described)


def user_columns_semantic(columns: Optional[str], semantic: Optional[Path], header=None) -> Optional[dict]:
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


def render(console, result, more: int = 0, checked: Optional[dict] = None) -> None:
    shown = len(result.single)
    hint = f"showing {shown} of {shown + more} matches: -k {shown + more} shows them all" if more else ""
    if checked:
        render_checked(console, result, checked, hint)
        return
    if result.mode == "anchors":
        render_anchors(console, result, hint)
        return
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


LOSS_LABELS = {"mse": "MSE", "error_rate": "error rate"}


def render_anchors(console, result, hint: str) -> None:
    """--anchor-scores: the predicted loss of each learnware, which were anchors, and the indicator."""
    user = result.user
    rows = [
        [i + 1, r["id"], r["version"], safe(r["name"]), r["task"], fmt_float(r["predicted_loss"]), "" if r["anchor_score"] is None else fmt_float(r["anchor_score"])]
        for i, r in enumerate(result.single)
    ]
    title = f"ranked by {user['anchors_scored']} anchor scores ({user['metric']}) among {result.considered} learnwares"
    console.print(table(title, ["rank", "id", "version", "name", "task", "predicted loss", "anchor score"], rows))
    if hint:
        console.print(hint, highlight=False)
    if user.get("indicator") is not None:
        verdict = "a learnware explains your labels" if user["indicator"] < 0.5 else "little here beats predicting your labels' mean"
        console.print(f"indicator {user['indicator']:.2f} (best predicted loss / your baseline {fmt_float(user['baseline'])}): {verdict}", highlight=False)


def render_checked(console, result, checked: dict, hint: str) -> None:
    """--labeled: the candidates re-ranked by their measured loss, its interval, and how sure the winner is."""
    loss = LOSS_LABELS.get(checked["loss"], checked["loss"])
    level = round(100 * checked["level"])
    rows = []
    for i, r in enumerate(result.single):
        if r.get("measured_loss") is not None:
            lo, hi = r["loss_interval"]
            measured = f"{fmt_float(r['measured_loss'])} [{fmt_float(lo)}, {fmt_float(hi)}]"
        else:
            measured = "failed" if any(f["id"] == r["id"] and f["version"] == r["version"] for f in checked["failures"]) else "not checked"
        rows.append([i + 1, r["id"], r["version"], r["name"], r["spec_rank"], f"{r['score']:.3f}", measured])
    title = f"candidates re-ranked by their {loss} on your {checked['rows']} labeled rows ({level} % bootstrap interval)"
    console.print(table(title, ["rank", "id", "version", "name", "spec rank", "spec score", f"measured {loss} [interval]"], rows))
    best = checked["best"]
    others = checked["measured"] - 1
    if others:
        console.print(
            f"{safe(best['id'])}@{safe(best['version'])} is best in {100 * checked['best_share']:.0f} % of {checked['n_boot']} resamples of your labeled rows"
            f" (against the {others} other measured candidate(s))",
            highlight=False,
        )
    else:
        why = "could be measured" if checked["failures"] else "was checked"
        console.print(f"only {safe(best['id'])}@{safe(best['version'])} {why}: nothing to compare it with", highlight=False)
    for failure in checked["failures"]:
        console.print(f"failed {safe(failure['id'])}@{safe(failure['version'])}: {safe(failure['reason'])}", highlight=False)
    if checked.get("replaced_cells"):
        console.print(f"{checked['replaced_cells']} missing or infinite cell(s) of your labeled rows replaced by column means", highlight=False)
    if hint:
        console.print(hint, highlight=False)
    if result.mixture:
        mix = result.mixture
        rows = [[r["id"], r["version"], r["name"], f"{r['weight']:.3f}"] for r in mix["learnwares"]]
        where = f" on {len(mix['shared'])} shared feature(s)" if result.match == "features" and "shared" in mix else ""
        console.print(table(f"best mixture{where}: MMD² {fmt_float(mix['mmd2'])}, score {mix['score']:.3f}", ["id", "version", "name", "weight"], rows))
        console.print("(`lw reuse --from` takes this mixture; add --use ranking for the re-ranked list)", highlight=False)


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
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the index (index.sqlite) and search segments from the learnwares/ID/vN folders even if they read fine."),
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
        lines.append(f"Rebuilt the index from the version folders ({rebuilt.reason}): {rebuilt.learnwares} learnware(s), {rebuilt.versions} version(s)")
        lines += [f"  reconstructed {note}" for note in rebuilt.reconstructed] + [f"  skipped {note}" for note in rebuilt.skipped]
        lines += [f"  the old index is kept as {rebuilt.backup}"] if rebuilt.backup else []
    lines.append(f"Compacted the search segments: {sum(counts.values())} spec(s) in {len(counts)} island(s); removed {len(swept.removed)} leftover(s)")
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
