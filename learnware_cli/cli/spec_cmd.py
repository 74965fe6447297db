"""`lw spec`: fit an RKME specification to a data file, locally."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from learnware_cli.cli.common import JSON_OPTION, gamma_option, k_option, open_market
from learnware_cli.cli.output import Output, fmt_float, safe
from learnware_cli.market.store import DEFAULT_MARKET_ENV


ERROR_SAMPLE_ROWS = 10_000


def spec(
    data: Path = typer.Argument(..., help="Data to summarise: rows (.csv, header optional, .parquet, .npy, .npz), images (.npy/.npz arrays, a folder of PNG/JPEG) or texts (.txt one per line, .jsonl, a CSV column)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the specification JSON."),
    market: Optional[Path] = typer.Option(None, "--market", "-m", envvar=DEFAULT_MARKET_ENV, help="Take gamma and K from this market (recommended; default $LW_MARKET if set)."),
    gamma: Optional[float] = gamma_option("Kernel width (default: the market's, else 0.1)."),
    k: Optional[int] = k_option(None, "Reduced-set size (default: the market's, else 100); at most the number of rows.", "-K"),
    steps: int = typer.Option(3, "--steps", min=0, help="Alternating refinement rounds after k-means."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same spec)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="table, image or text (default: from the file: a folder, image files or 3-D+ arrays are images; .txt/.jsonl texts; else a table)."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="Texts in this CSV column (name or index)."),
    embedder: Optional[str] = typer.Option(None, "--embedder", help="Texts: lw-hashed-ngrams-v1 (default, built in) or sentence-transformers:PATH (a model already on disk; never downloaded). Only specs of one embedder are compared."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Fit the RKME specification of a data file (the data never leaves this machine).

    Example: lw spec train.csv --market ./market --out rkme.json

    Example: lw spec reviews.csv --text-column review --market ./market --out texts.json  (images: lw spec photos/ ...)
    """
    from learnware_cli.data_io import SAMPLE_ERROR, SAMPLE_FIT, check_output_path, release_free_memory, scan_table, write_text_atomic
    from learnware_cli.errors import InputError
    from learnware_cli.rkme.spec import DEFAULT_GAMMA, DEFAULT_K, fit_sample_rows

    output = Output(json_output)
    check_output_path(out)  # before the fit: a bad --out must not cost the work
    k_from = "--k"
    if market is not None:
        opened = open_market(market)
        gamma = opened.gamma if gamma is None else gamma
        if k is None:
            k, k_from = opened.k, f"the market's K ({market})"
    gamma = DEFAULT_GAMMA if gamma is None else gamma
    if k is None:
        k, k_from = DEFAULT_K, "the default K"

    from learnware_cli.specs.data import infer_kind, read_data

    kind = infer_kind(data, kind, text_column)
    if embedder is not None and kind != "text":
        raise InputError("--embedder is for text data (--kind text)")
    if kind != "table":
        explicit_k = k if k_from == "--k" else None  # images: the reference's 16 unless asked
        _spec_of_kind(output, read_data(data, kind, text_column), out, explicit_k if kind == "image" else k, gamma, seed, steps if steps != 3 else None, embedder)
        return
    # one streaming pass: the row count, missing cells, column means and two uniform samples (the rows
    # the fit sees, as fit_rkme would pick them from the whole table, and the rows the error is measured
    # on); the table itself is never held in memory
    table = scan_table(data, {"fit": (fit_sample_rows(max(k, 1)), SAMPLE_FIT), "error": (ERROR_SAMPLE_ROWS, SAMPLE_ERROR)}, seed=seed)
    rows = table.rows
    if k > rows:
        raise InputError(
            f"{data} has {rows} rows, fewer than K={k} ({k_from}): give --k {rows} or less, or more rows"
        )
    from learnware_cli.rkme import approximation_error, fit_rkme

    x = table.samples["fit"][1]
    started = time.perf_counter()
    with output.progress(f"fitting RKME on {rows} x {table.width}", total=1) as update:
        fitted = fit_rkme(x, k=k, gamma=gamma, steps=steps, seed=seed, num_points=rows, on_stage=lambda name, done, total: update(done, total, name))
    elapsed = time.perf_counter() - started
    fitted_rows = len(x)
    del x
    release_free_memory()
    # the exact error costs n^2 kernel evaluations: on big data, measure it on a sample
    error_rows = table.samples["error"][1]
    error = approximation_error(fitted, error_rows)
    write_text_atomic(out, json.dumps(fitted.to_json_dict(), separators=(",", ":")))  # as RKMESpec.save, whole or not at all
    data_out = {
        "ok": True,
        "out": str(out),
        "rows": int(rows),
        "dim": fitted.dim,
        "K": fitted.size,
        "gamma": fitted.gamma,
        "approximation_error": error,
        "error_rows": int(len(error_rows)),
        "fit_rows": int(fitted_rows),
        "replaced_cells": table.replaced,
        "seconds": round(elapsed, 4),
    }
    replaced = f", {table.replaced} missing or infinite cell(s) replaced by column means" if table.replaced else ""
    output.emit(
        data_out,
        lambda c: c.print(
            f"Wrote {safe(out)}: RKME of {rows} rows x {fitted.dim} columns, K={fitted.size}, "
            f"gamma={fitted.gamma:g}, approximation error {fmt_float(error, 3)}"
            + (f" (on a sample of {len(error_rows)} rows)" if len(error_rows) < rows else "")
            + (f", fitted on a sample of {fitted_rows} rows" if fitted_rows < rows else "")
            + replaced
            + f" ({elapsed:.2f} s)",
            highlight=False,
        ),
    )


def _spec_of_kind(output: Output, loaded, out: Path, k: int, gamma: float, seed: int, steps, embedder=None) -> None:
    """`lw spec` for images and texts: the kind's own fit; K is capped at the number of items."""
    from learnware_cli.data_io import write_text_atomic
    from learnware_cli.specs.data import fit_spec

    started = time.perf_counter()
    with output.progress(f"fitting the {loaded.kind} specification of {loaded.describe()}", total=None):
        fitted = fit_spec(loaded, k=k, gamma=gamma, seed=seed, steps=steps, embedder=embedder)
    elapsed = time.perf_counter() - started
    write_text_atomic(out, json.dumps(fitted.to_json_dict(), separators=(",", ":")))
    summary = fitted.summary()
    output.emit(
        {"ok": True, "out": str(out), "kind": loaded.kind, "rows": loaded.rows, **{key: value for key, value in summary.items() if key != "type"}, "type": fitted.type_name, "seconds": round(elapsed, 4)},
        lambda c: c.print(f"Wrote {safe(out)}: {fitted.describe()}, from {loaded.describe()} ({elapsed:.2f} s)", highlight=False),
    )


def register(app: typer.Typer) -> None:
    app.command("spec")(spec)
