"""`lw reuse`: predict on the user's rows with learnwares of a market (each model in its own worker)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from learnware_cli.cli.common import JSON_OPTION, MARKET_OPTION, k_option, open_market, timeout_option
from learnware_cli.cli.output import Output, fmt_float, safe, table

METHOD_NAMES = "auto, single, average, job-selector, ensemble-pruning, feature-augment, user-ensemble"


def reuse(
    market: Optional[Path] = MARKET_OPTION,
    learnware: List[str] = typer.Option([], "--learnware", "-l", help="A learnware to reuse, ID or ID@VERSION (repeatable, best first)."),
    from_search: Optional[Path] = typer.Option(None, "--from", help="Output of `lw search --json`: its mixture (with weights), else its ranking (see --use)."),
    use: Optional[str] = typer.Option(
        None, "--use", help="With --from: ranking or mixture. Default: the mixture when the search found one, else the ranking.", show_default=False
    ),
    top: Optional[int] = k_option(None, "With --from: take the first N learnwares of the ranking or mixture."),
    data: Path = typer.Option(..., "--data", help="Your rows to predict (CSV, .npy, .npz); missing or infinite cells are replaced by column means."),
    labeled: Optional[Tuple[Path, Path]] = typer.Option(None, "--labeled", metavar="X Y", help="X.csv y.csv: labeled rows of your task, for the methods that learn from them."),
    method: Optional[str] = typer.Option(
        None,
        "--method",
        help=f"{METHOD_NAMES}. Default: auto with --labeled (the best by cross-validation on them), else job-selector for several learnwares, single for one.",
        show_default=False,
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the predictions here (.csv, one row per input row, or .npy)."),
    evaluate: Optional[Path] = typer.Option(None, "--evaluate", help="True labels/targets of --data: report accuracy or MSE."),
    columns: Optional[str] = typer.Option(None, "--columns", help="What your columns are, comma-separated, in order (default: the CSV header of --data): learnwares read them by market feature."),
    kind: Optional[str] = typer.Option(None, "--kind", help="table, image or text: what --data holds (default: from the file, as `lw spec`)."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="Texts in this CSV column of --data (and of --labeled X)."),
    timeout: Optional[float] = timeout_option("Seconds per model call (default: the market's model limit)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Reuse learnwares on your rows: each model runs in a sandboxed worker, never in this process.

    Learnwares whose stored package no longer matches its recorded sha256, or
    whose model fails to start, fails to predict or answers outside its
    contract (wrong width, NaN, unknown class) are reported and left out; the
    command fails only when none is left. Every flag and file is checked
    before any model starts.

    With described columns (a CSV header or --columns), a learnware on another column set reads
    the columns it shares with you by market feature and gets the ones you lack filled in from its
    RKME (their conditional mean given the shared ones).

    Example: lw reuse --market ./market --from found.json -k 3 --data my_rows.csv --out pred.csv
    """
    from learnware_cli.data_io import read_vector
    from learnware_cli.errors import InputError
    from learnware_cli.reuse import get_method, needs_labels, uses_labels
    from learnware_cli.specs.data import infer_kind, read_data

    output = Output(json_output)
    _check_flags(from_search, use, top, out)
    opened = open_market(market)
    refs = _refs(learnware, from_search, use, top)
    kind = infer_kind(data, kind, text_column)
    method = method or default_method(len(refs), labeled is not None, kind)
    reuser_class = get_method(method)
    if needs_labels(method) and labeled is None:
        raise InputError(f"--method {method} learns from your labels: add --labeled X.csv y.csv")
    if out is None and evaluate is None:
        raise InputError("nothing to do: give --out PRED.csv to save the predictions and/or --evaluate y.csv to score them")
    # missing / infinite cells get their column's mean, as in the RKME the search matched
    read = read_data(data, kind, text_column)
    rows = read.values
    train = None
    if labeled is not None:
        read_lab, y_lab = read_data(labeled[0], kind, text_column), read_vector(labeled[1])
        if len(read_lab.values) != len(y_lab):
            raise InputError(f"--labeled: {labeled[0]} has {len(read_lab.values)} rows but {labeled[1]} has {len(y_lab)}")
        if kind != "text" and read_lab.values.shape[1:] != rows.shape[1:]:
            raise InputError(f"--labeled: {labeled[0]} has items of shape {read_lab.values.shape[1:]} but {data} has {rows.shape[1:]}")
        train = (read_lab.values, y_lab)
    y_true = read_vector(evaluate) if evaluate is not None else None
    if y_true is not None and len(y_true) != len(rows):
        raise InputError(f"{evaluate} has {len(y_true)} rows but {data} has {len(rows)}")
    if train is not None and not uses_labels(method):
        output.note(f"note: --method {method} does not use --labeled")
        train = None

    user_columns = _user_columns(output, opened, read, columns) if kind == "table" else None
    with contextlib.ExitStack() as stack:
        loaded = _start_models(stack, output, opened, refs, timeout, rows.shape[1] if kind == "table" else None, user_columns)
        reuser = reuser_class(learnwares=list(loaded))
        if method in ("job-selector", "auto") and from_search is None and len(loaded) > 1 and kind == "table":
            reuser.user_spec = user_columns.user_spec() if user_columns is not None else _user_spec(output, opened, rows)
        predictions = _fit_predict(output, reuser, rows, train)
        versions = {d["id"]: d["version"] for d in loaded.described}
        failures = loaded.failures + [{"id": i, "version": versions.get(i), "reason": why} for i, why in reuser.failures_]
        used = set(reuser.used_ids_)
        routing = _routing_shares(reuser)
        auto = _auto_summary(reuser)
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
        "replaced_cells": read.replaced,  # missing or infinite cells of --data set to their column's mean
        "out": str(out) if out is not None else None,
        "metric": metric,
    }
    sources = {"replaced_cells": data}
    if labeled is not None:
        result["labeled_replaced_cells"] = read_lab.replaced  # the same, in the labeled rows
        sources["labeled_replaced_cells"] = labeled[0]
    if auto:
        result["auto"] = auto
    if routing:
        result["routing"] = routing
    output.emit(result, lambda console: render(console, result, sources))


def _check_flags(from_search, use, top, out) -> None:
    """Flag values that are wrong whatever the market holds: one InputError before any work.

    (--timeout and -k are range-checked while the command line is parsed.)
    """
    from learnware_cli.errors import InputError
    from learnware_cli.reuse.market_models import SEARCH_LISTS

    if use is not None and use not in SEARCH_LISTS:
        raise InputError(f"--use must be ranking or mixture, got {use!r}")
    if (use is not None or top is not None) and from_search is None:
        raise InputError("--use and -k choose among the learnwares of a search result: use them with --from SEARCH.json")
    if out is not None:
        from learnware_cli.data_io import check_output_path

        check_output_path(out)  # a folder, a path under a file, no permission: before any model starts


def _routing_shares(reuser) -> dict:
    """Job selector (chosen directly or by auto): the share of herded rows each learnware got (its weight in the routing)."""
    from learnware_cli.reuse import AutoReuser, JobSelectorReuser

    if isinstance(reuser, AutoReuser):
        reuser = reuser.reuser_
    if not isinstance(reuser, JobSelectorReuser) or len(reuser.herd_counts_) < 2:
        return {}
    total = float(sum(reuser.herd_counts_.values()))
    return {lid: round(count / total, 4) for lid, count in reuser.herd_counts_.items()}


def _auto_summary(reuser) -> Optional[dict]:
    """What --method auto compared and why it chose, for the output (None for other methods)."""
    from learnware_cli.reuse import AutoReuser

    if not isinstance(reuser, AutoReuser):
        return None
    return {
        "chosen": reuser.chosen_,
        "reason": reuser.reason_,
        "metric": reuser.metric_,
        "folds": reuser.n_folds_,
        "labeled_rows": reuser.n_labeled_,
        "cv": dict(reuser.cv_scores_),
        "skipped": dict(reuser.skipped_),
    }


def default_method(n_learnwares: int, has_labels: bool, kind: str = "table") -> str:
    """Labels: the method that does best on them (auto); else route rows among several (tables;
    images and texts: average them), or use the one."""
    if has_labels:
        return "auto"
    if n_learnwares == 1:
        return "single"
    return "job-selector" if kind == "table" else "average"


def _refs(learnware: List[str], from_search: Optional[Path], use: Optional[str], top: Optional[int]) -> list:
    """(id, version, weight) triples from --learnware or --from (exactly one of them)."""
    from learnware_cli.errors import InputError
    from learnware_cli.market.store import parse_learnware_ref
    from learnware_cli.reuse.market_models import refs_from_search_json

    if bool(learnware) == (from_search is not None):
        raise InputError("name the learnwares with --learnware ID[@V] (repeatable) or --from SEARCH.json, not both")
    if learnware:
        return [(*parse_learnware_ref(text), 1.0) for text in learnware]
    from learnware_cli.data_io import read_json_file

    return refs_from_search_json(read_json_file(from_search, "a JSON search result"), use=use, k=top)


def _user_spec(output: Output, market, rows):
    """The RKME of the user's rows, fitted here, so the job selector weighs the learnwares
    by the mixture that best matches them (as the reference does) instead of equally."""
    from learnware_cli.rkme import fit_rkme

    with output.progress("fitting your RKME locally", total=1) as update:
        return fit_rkme(rows, k=market.k, gamma=market.gamma, on_stage=lambda s, d, t: update(d, t, s))


def _user_columns(output: Output, market, read, columns: Optional[str]):
    """The user's columns as market features (from --columns or the CSV header), or None when undescribed."""
    from learnware_cli.cli.search_cmd import user_columns_semantic
    from learnware_cli.errors import InputError
    from learnware_cli.reuse.market_models import UserColumns

    semantic = user_columns_semantic(columns, None, header=read.header if columns is None and read.header else None)
    if semantic is None:
        return None
    if semantic["Input"]["Dimension"] != read.values.shape[1]:
        raise InputError(f"--columns names {semantic['Input']['Dimension']} column(s) but your data has {read.values.shape[1]}")
    return UserColumns.described(market, semantic, spec=lambda: _user_spec(output, market, read.values))


def _start_models(stack, output: Output, market, refs: list, timeout: Optional[float], input_dim: int, user_columns=None):
    """Open the learnwares inside stack (their workers stop when it closes), with a spinner meanwhile."""
    from learnware_cli.reuse.market_models import open_learnwares

    with output.progress(f"starting {len(refs)} model worker(s)"):
        loaded = stack.enter_context(open_learnwares(market, refs, timeout=timeout, input_dim=input_dim, user_columns=user_columns))
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


def render(console, result: dict, sources: Optional[dict] = None) -> None:
    """Human output; ``sources`` names the file behind each replaced-cells count."""
    auto = result.get("auto")
    title = f"reused with {auto['chosen']} (chosen by auto)" if auto else f"reused with {result['method']}"
    rows = [[d["id"], d["version"], d["name"], f"{d['weight']:.3f}", "yes" if d["used"] else "no", _columns_note(d)] for d in result["learnwares"]]
    console.print(table(title, ["id", "version", "name", "weight", "used", "columns"], rows))
    if auto:
        _render_auto(console, auto)
    for failure in result["failures"]:
        where = f"@{safe(failure['version'])}" if failure.get("version") is not None else ""
        console.print(f"left out {safe(failure['id'])}{where}: {safe(failure['reason'])}", highlight=False)
    for key, path in (sources or {}).items():
        if result.get(key):
            console.print(f"{result[key]} missing or infinite cell(s) of {safe(path)} replaced by column means", highlight=False)
    if result["out"]:
        console.print(f"Predictions for {result['rows']} rows written to {safe(result['out'])}", highlight=False)
    if result["metric"]:
        console.print(f"{result['metric']['name']}: {fmt_float(result['metric']['value'])}", highlight=False)


def _columns_note(described: dict) -> str:
    """How a learnware read the user's columns: yours as they are, or shared by feature + filled in."""
    if "filled_columns" not in described:
        return "yours"
    return f"{described['shared_columns']} shared, {described['filled_columns']} filled in"


def _render_auto(console, auto: dict) -> None:
    """The methods auto compared, their scores and its choice."""
    console.print(f"auto chose {auto['chosen']}: {safe(auto['reason'])}", highlight=False)
    if auto["cv"]:
        metric = "MSE" if auto["metric"] == "mse" else "accuracy"
        rows = [[m, fmt_float(score), "<- chosen" if m == auto["chosen"] else ""] for m, score in auto["cv"].items()]
        console.print(table(None, ["method", f"cv {metric}", ""], rows))
    for method, why in auto["skipped"].items():
        console.print(f"not scored: {method} ({safe(why)})", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("reuse")(reuse)
