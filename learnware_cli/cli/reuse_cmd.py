"""`lw reuse`: predict on the user's rows with learnwares of a market (each model in its own worker)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from learnware_cli.cli.common import JSON_OPTION, MARKET_OPTION, open_market
from learnware_cli.cli.output import Output, fmt_float, safe, table

METHOD_NAMES = "single, average, job-selector, ensemble-pruning, feature-augment, user-ensemble"


def reuse(
    market: Optional[Path] = MARKET_OPTION,
    learnware: List[str] = typer.Option([], "--learnware", "-l", help="A learnware to reuse, ID or ID@VERSION (repeatable, best first)."),
    from_search: Optional[Path] = typer.Option(None, "--from", help="Output of `lw search --json`: its mixture (with weights), else its ranking."),
    data: Path = typer.Option(..., "--data", help="Your rows to predict (CSV, .npy, .npz)."),
    labeled: Optional[Tuple[Path, Path]] = typer.Option(None, "--labeled", metavar="X Y", help="X.csv y.csv: labeled rows of your task, for the methods that learn from them."),
    method: Optional[str] = typer.Option(
        None,
        "--method",
        help=f"{METHOD_NAMES}. Default: user-ensemble with --labeled, else job-selector for several learnwares, single for one.",
        show_default=False,
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the predictions here (.csv, one row per input row, or .npy)."),
    evaluate: Optional[Path] = typer.Option(None, "--evaluate", help="True labels/targets of --data: report accuracy or MSE."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds per model call (default: the market's model limit)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Reuse learnwares on your rows: each model runs in a sandboxed worker, never in this process.

    Learnwares whose stored package no longer matches its recorded sha256, or
    whose model fails to start, fails to predict or answers outside its
    contract (wrong width, NaN, unknown class) are reported and left out; the
    command fails only when none is left.

    Example: lw reuse --market ./market --from found.json --data my_rows.csv --out pred.csv
    """
    from learnware_cli.data_io import read_table, read_vector
    from learnware_cli.errors import InputError
    from learnware_cli.reuse import get_method, needs_labels

    output = Output(json_output)
    opened = open_market(market)
    refs = _refs(learnware, from_search)
    method = method or default_method(len(refs), labeled is not None)
    reuser_class = get_method(method)
    if needs_labels(method) and labeled is None:
        raise InputError(f"--method {method} learns from your labels: add --labeled X.csv y.csv")
    if out is None and evaluate is None:
        raise InputError("nothing to do: give --out PRED.csv to save the predictions and/or --evaluate y.csv to score them")
    rows = read_table(data)
    train = (read_table(labeled[0]), read_vector(labeled[1])) if labeled is not None else None
    y_true = read_vector(evaluate) if evaluate is not None else None
    if y_true is not None and len(y_true) != len(rows):
        raise InputError(f"{evaluate} has {len(y_true)} rows but {data} has {len(rows)}")
    if train is not None and not needs_labels(method):
        output.note(f"note: --method {method} does not use --labeled")
        train = None

    with contextlib.ExitStack() as stack:
        loaded = _start_models(stack, output, opened, refs, timeout, rows.shape[1])
        reuser = reuser_class(learnwares=list(loaded))
        if method == "job-selector" and from_search is None and len(loaded) > 1:
            reuser.user_spec = _user_spec(output, opened, rows)
        predictions = _fit_predict(output, reuser, rows, train)
        versions = {d["id"]: d["version"] for d in loaded.described}
        failures = loaded.failures + [{"id": i, "version": versions.get(i), "reason": why} for i, why in reuser.failures_]
        used = set(used_ids(reuser))
        routing = _routing_shares(reuser)
        task = reuser.task_

    if out is not None:
        from learnware_cli.data_io import write_table

        write_table(out, predictions)
    metric = None
    if y_true is not None:
        from learnware_cli.reuse import evaluate as score

        name, value = score(task, y_true, predictions)
        metric = {"name": name, "value": value}
    result = {
        "ok": True,
        "method": method,
        "learnwares": [{**d, "used": d["id"] in used} for d in loaded.described],
        "failures": failures,
        "rows": int(len(rows)),
        "out": str(out) if out is not None else None,
        "metric": metric,
    }
    if routing:
        result["routing"] = routing
    output.emit(result, lambda console: render(console, result))


def _routing_shares(reuser) -> dict:
    """Job selector: the share of herded rows each learnware got (its weight in the routing)."""
    counts = getattr(reuser, "herd_counts_", None)
    ids = getattr(reuser, "route_ids_", None)
    if counts is None or ids is None or len(ids) < 2:
        return {}
    total = float(sum(counts))
    return {lid: round(int(c) / total, 4) for lid, c in zip(ids, counts)}


def default_method(n_learnwares: int, has_labels: bool) -> str:
    """Labels: combine the learnwares with a model of them; else route rows among several, or use the one."""
    if has_labels:
        return "user-ensemble"
    return "job-selector" if n_learnwares > 1 else "single"


def _refs(learnware: List[str], from_search: Optional[Path]) -> list:
    """(id, version, weight) triples from --learnware or --from (exactly one of them)."""
    from learnware_cli.errors import InputError
    from learnware_cli.market.store import parse_learnware_ref
    from learnware_cli.reuse.market_models import refs_from_search_json

    if bool(learnware) == (from_search is not None):
        raise InputError("name the learnwares with --learnware ID[@V] (repeatable) or --from SEARCH.json, not both")
    if learnware:
        return [(*parse_learnware_ref(text), 1.0) for text in learnware]
    try:
        doc = json.loads(Path(from_search).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{from_search}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{from_search}: not a JSON search result ({exc})") from None
    return refs_from_search_json(doc)


def _user_spec(output: Output, market, rows):
    """The RKME of the user's rows, fitted here, so the job selector weighs the learnwares
    by the mixture that best matches them (as the reference does) instead of equally."""
    from learnware_cli.rkme import fit_rkme

    with output.progress("fitting your RKME locally", total=1) as update:
        return fit_rkme(rows, k=market.k, gamma=market.gamma, on_stage=lambda s, d, t: update(d, t, s))


def _start_models(stack, output: Output, market, refs: list, timeout: Optional[float], input_dim: int):
    """Open the learnwares inside stack (their workers stop when it closes), with a spinner meanwhile."""
    from learnware_cli.reuse.market_models import open_learnwares

    with output.progress(f"starting {len(refs)} model worker(s)"):
        loaded = stack.enter_context(open_learnwares(market, refs, timeout=timeout, input_dim=input_dim))
    for failure in loaded.failures:
        output.note(f"[yellow]left out[/] {safe(failure['id'])}@{safe(failure['version'])}: {safe(failure['reason'])}")
    return loaded


def _fit_predict(output: Output, reuser, rows, train):
    """Fit (on the labeled rows, or on nothing) then predict, with a progress bar over rows."""
    description = "learning from your labeled rows" if train is not None else "preparing"
    with output.progress(description, total=len(train[0]) if train is not None else None) as update:
        reuser.progress = lambda done, total: update(done, total)
        if train is not None:
            reuser.fit(*train)
        else:
            reuser.fit()
    with output.progress("predicting", total=len(rows)) as update:
        reuser.progress = lambda done, total: update(done, total)
        return reuser.predict(rows)


def used_ids(reuser) -> list[str]:
    """Ids of the learnwares the fitted reuser actually answers with (each method names them its own way)."""
    for attr in ("selected_ids_", "used_ids_", "component_ids_", "route_ids_", "used_"):
        value = getattr(reuser, attr, None)
        if value is not None:
            ids = [value] if isinstance(value, str) else list(value)
            break
    else:
        ids = [lw.id for lw in reuser.learnwares]
    failed = {lw_id for lw_id, _ in reuser.failures_}
    return [i for i in ids if i not in failed]


def render(console, result: dict) -> None:
    rows = [[d["id"], d["version"], d["name"], f"{d['weight']:.3f}", "yes" if d["used"] else "no"] for d in result["learnwares"]]
    console.print(table(f"reused with {result['method']}", ["id", "version", "name", "weight", "used"], rows))
    for failure in result["failures"]:
        where = f"@{safe(failure['version'])}" if failure.get("version") is not None else ""
        console.print(f"left out {safe(failure['id'])}{where}: {safe(failure['reason'])}", highlight=False)
    if result["out"]:
        console.print(f"Predictions for {result['rows']} rows written to {result['out']}", highlight=False)
    if result["metric"]:
        console.print(f"{result['metric']['name']}: {fmt_float(result['metric']['value'])}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("reuse")(reuse)
