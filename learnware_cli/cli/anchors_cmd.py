"""`lw anchors`: anchor learnwares for users with labels but no RKME to share, and scoring them locally."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple

import typer

from learnware_cli.cli.common import JSON_OPTION, MARKET_OPTION, open_market, timeout_option
from learnware_cli.cli.output import Output, fmt_float, safe, table


def anchors(
    market: Optional[Path] = MARKET_OPTION,
    count: int = typer.Option(8, "-n", "--count", min=1, help="How many anchors."),
    dim: Optional[int] = typer.Option(None, "--dim", min=1, help="Input width of the island (default: the width of --labeled X)."),
    task: Optional[str] = typer.Option(None, "--task", help="Regression or Classification (default: the island's only task)."),
    labeled: Optional[Tuple[Path, Path]] = typer.Option(None, "--labeled", metavar="X Y", help="Your labeled rows: with --evaluate, the anchors are scored on them here."),
    evaluate: bool = typer.Option(False, "--evaluate", help="Run the anchors on --labeled locally and write their scores (--out): the file to share, holding no rows."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="With --evaluate: where to write the scores JSON."),
    refresh: bool = typer.Option(False, "--refresh", help="Rebuild the island's probe bank from today's specifications (every learnware runs again)."),
    timeout: Optional[float] = timeout_option("Seconds per model call (default: the market's)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Pick anchor learnwares that cover the market's functional space, and score them on your rows.

    Every learnware of the island (one input width, one task) is run once on a common probe bank;
    anchors are the k-medoids of the distances between their outputs. With --evaluate the anchors
    run on your labeled rows on this machine and only their losses are written, for
    `lw search --anchor-scores`.

    Example: lw anchors --market ./market --labeled X.csv y.csv --evaluate --out scores.json
    """
    from learnware_cli.data_io import check_output_path, read_matrix, read_vector
    from learnware_cli.errors import InputError
    from learnware_cli.market import anchors as lib

    output = Output(json_output)
    if evaluate and (labeled is None or out is None):
        raise InputError("--evaluate scores the anchors on your rows: give --labeled X.csv y.csv and --out SCORES.json")
    if out is not None:
        check_output_path(out)
    opened = open_market(market)
    rows = labels = None
    if labeled is not None:
        rows, labels = read_matrix(labeled[0], fill=True).values, read_vector(labeled[1])
        if len(rows) != len(labels):
            raise InputError(f"--labeled: {labeled[0]} has {len(rows)} rows but {labeled[1]} has {len(labels)}")
        if dim is not None and dim != rows.shape[1]:
            raise InputError(f"--dim {dim} but {labeled[0]} has {rows.shape[1]} columns")
        dim = rows.shape[1]
    if dim is None:
        raise InputError("which island? give --dim D or --labeled X.csv y.csv")
    task = task or _only_task(opened, dim)
    with output.progress("signing the island's learnwares on its probe bank", total=None):
        found = lib.island(opened, dim, task, refresh=refresh, timeout=timeout)
    chosen = lib.anchors_of(found, count)
    doc = {
        "ok": True,
        "market": str(opened.root),
        "task": task,
        "input_dim": dim,
        "island_learnwares": len(found.members),
        "bank_rows": int(len(found.bank)),
        "anchors": [{"id": entry["id"], "version": record["version"], "name": entry.get("name", "")} for _, entry, record in chosen],
    }
    if evaluate:
        with output.progress(f"scoring {len(chosen)} anchors on your {len(rows)} rows", total=None):
            scores, baseline = _score(opened, chosen, task, rows, labels, timeout)
        shared = lib.scores_document(opened, task, dim, scores, baseline, len(rows))
        from learnware_cli.data_io import write_text_atomic

        write_text_atomic(out, json.dumps(shared, indent=2))
        doc.update(out=str(out), scores=shared["scores"], baseline=baseline, metric=shared["metric"])
    output.emit(doc, lambda console: _render(console, doc))


def _only_task(market, dim: int) -> str:
    from learnware_cli.errors import InputError
    from learnware_cli.search import cache

    tasks = sorted({record.get("task") for _, _, record in cache.searchable_versions(market.read_index()).get(dim, [])} - {None, ""})
    if len(tasks) != 1:
        raise InputError(f"the learnwares of input dimension {dim} have tasks {tasks or 'none'}: choose one with --task")
    return tasks[0]


def _score(market, chosen: list, task: str, rows, labels, timeout) -> tuple[dict, float]:
    """Each anchor's loss on the user's rows (run in its sandboxed worker here) and the baseline's."""
    import numpy as np

    from learnware_cli.market import anchors as lib
    from learnware_cli.reuse.market_models import open_learnwares

    y = np.asarray(labels)
    if task == "Classification":
        y = y.astype(int)
    refs = [(entry["id"], record["version"], 1.0) for _, entry, record in chosen]
    scores = {}
    width = None
    with open_learnwares(market, refs, timeout=timeout, input_dim=rows.shape[1]) as loaded:
        started = {lw.id: lw for lw in loaded}  # an anchor whose model fails to start is left out
        for key, entry, record in chosen:
            if entry["id"] in started:
                outputs = lib.signature_of(started[entry["id"]].model, task, rows, record.get("output_dim"))
                width = outputs.shape[1]
                scores[key] = lib.losses_of(task, y, outputs)
    return scores, lib.baseline_loss(task, y, width if task == "Classification" else None)


def _render(console, doc: dict) -> None:
    rows = [[i + 1, a["id"], a["version"], safe(a["name"]), fmt_float(doc["scores"][f"{a['id']}@{a['version']}"]) if "scores" in doc else ""] for i, a in enumerate(doc["anchors"])]
    title = f"{len(doc['anchors'])} anchors of {doc['island_learnwares']} {doc['task']} learnwares of input dimension {doc['input_dim']}"
    console.print(table(title, ["#", "id", "version", "name", doc.get("metric", "") if "scores" in doc else ""], rows))
    if "scores" in doc:
        console.print(f"baseline (your labels' mean): {fmt_float(doc['baseline'])}; scores written to {safe(doc['out'])} (no rows, no labels)", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("anchors")(anchors)
