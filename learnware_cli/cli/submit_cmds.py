"""`lw pack` and `lw submit`: the submitting stage."""

from __future__ import annotations

import json

from pathlib import Path
from typing import List, Optional

import typer

from learnware_cli.cli.common import JSON_OPTION, MARKET_OPTION, open_market, timeout_option
from learnware_cli.cli.output import Output, safe
from learnware_cli.market.store import DEFAULT_MARKET_ENV
from learnware_cli.errors import EXIT_MARKET, EXIT_REJECTED


def _read_semantic(path: Path) -> dict:
    from learnware_cli.errors import InputError
    from learnware_cli.market.package import JSONProblem, parse_json

    try:
        return parse_json(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except JSONProblem as exc:
        raise InputError(str(exc)) from None


def _semantic_from_flags(build, **fields) -> dict:
    """A bad flag value is a usage error of `lw pack` (exit 2), not a market rejection."""
    from learnware_cli.errors import InputError, RejectedError

    try:
        return build(**fields)
    except RejectedError as exc:
        raise InputError(exc.reason) from None


def _check_feature_ids(feature_ids: List[str], dimension: int) -> None:
    """--feature-id names every input column, in order, or none."""
    from learnware_cli.errors import InputError

    if feature_ids and len(feature_ids) != dimension:
        raise InputError(f"--feature-ids names {len(feature_ids)} column(s) but the input dimension is {dimension}: give one id per column, in order")


def pack(
    model: Optional[Path] = typer.Option(None, "--model", help="A fitted scikit-learn estimator saved with joblib.dump."),
    onnx: bool = typer.Option(False, "--onnx", help="Convert --model to ONNX (skl2onnx) and pack it as a code-free learnware; if it cannot be converted, say why and pack it as Python."),
    onnx_model: Optional[Path] = typer.Option(None, "--onnx-model", help="A model already exported to ONNX (from any framework): packed as a code-free learnware (tables)."),
    out: Path = typer.Option(..., "--out", "-o", help="The learnware zip to write."),
    spec: Optional[Path] = typer.Option(None, "--spec", help="The model's RKME (from `lw spec`)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Training data (rows, images or texts, as `lw spec` reads them): fit the specification now (instead of --spec)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="With --data: table, image or text (default: from --data-type, else from the file)."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="With --data: texts in this CSV column."),
    market: Optional[Path] = typer.Option(None, "--market", "-m", envvar=DEFAULT_MARKET_ENV, help="Take gamma and K for --data from this market (default $LW_MARKET if set)."),
    semantic: Optional[Path] = typer.Option(None, "--semantic", help="Semantic specification JSON (instead of the flags below)."),
    name: Optional[str] = typer.Option(None, "--name", help="Learnware name."),
    description: str = typer.Option("", "--description", help="What the model does, on which data."),
    task: Optional[str] = typer.Option(None, "--task", help="Classification, Regression, ..."),
    data_type: str = typer.Option("Table", "--data-type", help="Table, Image or Text."),
    library: str = typer.Option("Scikit-learn", "--library", help="Scikit-learn, PyTorch, TensorFlow, Others."),
    scenario: List[str] = typer.Option([], "--scenario", help="Scenario tag (repeatable): Business, Health, ..."),
    license: str = typer.Option("MIT", "--license", help="MIT, Apache-2.0, BSD-3-Clause, ..."),
    input_desc: List[str] = typer.Option([], "--input-desc", help="Description of each input column, in order (repeatable)."),
    feature_ids: List[str] = typer.Option([], "--feature-ids", "--feature-id", help="Explicit market feature id of each input column, in order: comma-separated and/or repeated (a,b,c); columns with the same id are one market feature, matched exactly (Input.Features)."),
    output_dim: Optional[int] = typer.Option(None, "--output-dim", min=1, help="Output columns (regression) or classes (classification); default: from the model."),
    requirements: Optional[Path] = typer.Option(None, "--requirements", help="requirements.txt to ship (default: this machine's versions)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Pack a scikit-learn model, its RKME and its semantic specification into a learnware zip.

    Example: lw pack --model model.joblib --data train.csv --market ./market --name "Store 7 sales" --task Regression --scenario Business --out store7.zip

    Example: lw pack --model model.joblib --onnx --data train.csv --market ./market --name "Store 7 sales" --task Regression --out store7.zip  (code-free)
    """
    from learnware_cli.errors import InputError
    from learnware_cli.market.semantic import build_semantic
    from learnware_cli.specs import load_spec
    from learnware_cli.specs.data import DATA_TYPE, KIND_OF_DATA_TYPE, infer_kind

    from learnware_cli.data_io import check_output_path

    output = Output(json_output)
    if (spec is None) == (data is None):
        raise InputError("give exactly one of --spec (a fitted RKME) or --data (rows to fit it on)")
    feature_ids = [key.strip() for value in feature_ids for key in value.split(",")]
    if feature_ids and semantic is not None:
        raise InputError("--feature-ids goes with the semantic flags; with --semantic FILE, put the ids in its Input.Features")
    if (model is None) == (onnx_model is None):
        raise InputError("give the model: --model M.joblib (a scikit-learn estimator) or --onnx-model M.onnx")
    if onnx and model is None:
        raise InputError("--onnx converts --model M.joblib; a model already in ONNX goes with --onnx-model")
    source = model if model is not None else onnx_model
    if not source.is_file():
        raise InputError(f"{source}: no such file")
    if onnx_model is not None and data_type != "Table":
        raise InputError("ONNX learnwares take table rows for now (--data-type Table)")
    check_output_path(out)  # before the RKME fit and the packing
    import tempfile

    if data is not None:
        kind = infer_kind(data, kind or (KIND_OF_DATA_TYPE.get(data_type) if data_type != "Table" else None), text_column)
        if data_type == "Table" and kind != "table":
            data_type = DATA_TYPE[kind]  # the data says what the model takes
    sample = None  # a few inputs of an image or text model, to try it on
    with tempfile.TemporaryDirectory(prefix="lw-pack-") as tmp:
        if data is not None and kind != "table":
            from learnware_cli.specs.data import fit_spec, read_data
            from learnware_cli.rkme.spec import DEFAULT_GAMMA, DEFAULT_K

            gamma, k = DEFAULT_GAMMA, DEFAULT_K
            if market is not None:
                opened = open_market(market)
                gamma, k = opened.gamma, opened.k
            loaded_data = read_data(data, kind, text_column)
            with output.progress(f"fitting the {kind} specification", total=None):
                fitted = fit_spec(loaded_data, k=None if kind == "image" else k, gamma=gamma)
            sample = loaded_data.values[:2]
            spec = Path(tmp) / "rkme.json"
            spec.write_text(json.dumps(fitted.to_json_dict(), separators=(",", ":")))
        elif data is not None:
            from learnware_cli.data_io import read_matrix
            from learnware_cli.rkme import fit_rkme
            from learnware_cli.rkme.spec import DEFAULT_GAMMA, DEFAULT_K

            gamma, k = DEFAULT_GAMMA, DEFAULT_K
            if market is not None:
                opened = open_market(market)
                gamma, k = opened.gamma, opened.k
            table = read_matrix(data, fill=True)
            rows = table.values
            _check_feature_ids(feature_ids, rows.shape[1])  # before the RKME fit
            if table.replaced:
                output.note(f"note: {table.replaced} missing or infinite cell(s) of {data} replaced by column means")
            if not input_desc and semantic is None and table.header and len(table.header) == rows.shape[1]:
                input_desc = list(table.header)  # the columns' names identify them as market features
                output.note(f"note: input descriptions taken from the header of {data} (--input-desc to set them)")
            if k > len(rows):
                output.note(f"note: {data} has {len(rows)} rows, fewer than K={k}: the RKME is the rows themselves")
            with output.progress("fitting RKME", total=1) as update:
                fitted = fit_rkme(rows, k=k, gamma=gamma, on_stage=lambda s, d, t: update(d, t, s))
            spec = Path(tmp) / "rkme.json"
            fitted.save(spec)
        loaded = load_spec(spec)
        table_model = data_type == "Table"
        if table_model:
            _check_feature_ids(feature_ids, loaded.dim)
        elif feature_ids:
            raise InputError("--feature-ids names table columns; this is a(n) {data_type} model")
        if sample is None and not table_model:
            from learnware_cli.market.checks import probe_inputs

            sample = probe_inputs(loaded, 2, 0)  # images herded from its spec, or the market's probe texts
        if semantic is not None:
            semantic_doc = _read_semantic(semantic)
        else:
            if not name or not task:
                raise InputError("give --semantic FILE, or at least --name and --task")
            if output_dim is None:
                from learnware_cli.market.pack import infer_output_dim

                output_dim = infer_output_dim(model, loaded, task, sample) if model is not None else _onnx_output_dim(onnx_model, task)
            semantic_doc = _semantic_from_flags(build_semantic, 
                name=name,
                description=description,
                data=data_type,
                task=task,
                library=library,
                scenarios=scenario or ["Others"],
                license=license,
                input_dim=loaded.dim if table_model else None,
                output_dim=output_dim,
                input_desc=input_desc or None,
                input_features=feature_ids or None,
            )
        written = _pack(output, model, onnx, onnx_model, spec, semantic_doc, out, requirements, sample)
    size = written.stat().st_size
    island = loaded.island_key()
    k_points = len(loaded.stack_arrays().beta)
    output.emit(
        {"ok": True, "out": str(written), "bytes": size, "input_dim": island.dim, "K": k_points, "type": loaded.type_name},
        lambda c: c.print(f"Wrote {safe(written)} ({size / 1024:.1f} KiB): {loaded.describe()}", highlight=False),
    )


def _onnx_output_dim(onnx_model: Path, task: str) -> int:
    """Output.Dimension of an ONNX model: its number of classes (Classification) or output width."""
    from learnware_cli.market import onnx_kind

    info = onnx_kind.validate_onnx(onnx_model.read_bytes())
    return int(info.n_classes) if task.lower() == "classification" and info.n_classes else int(info.output_width)


def _pack(output: Output, model, onnx: bool, onnx_model, spec, semantic_doc: dict, out, requirements, sample):
    """The zip of the kind asked for: ONNX (exported, or converted from --model, falling back to
    Python with a note when the estimator cannot be converted) or Python."""
    from learnware_cli.market import onnx_kind
    from learnware_cli.market.pack import pack_sklearn

    if onnx_model is not None:
        return onnx_kind.pack_onnx(onnx_model.read_bytes(), spec, semantic_doc, out, requirements=requirements)
    if onnx:
        from learnware_cli.market.pack import _load_estimator

        try:
            return onnx_kind.pack_estimator_onnx(_load_estimator(model), spec, semantic_doc, out, requirements=requirements)
        except onnx_kind.ConversionError as exc:
            output.note(f"note: packed as a Python learnware: {exc.message}")
    return pack_sklearn(model, spec, semantic_doc, out, requirements=requirements, sample=sample)


def submit(
    packages: List[Path] = typer.Argument(..., help="Learnware zip(s) to submit (lw pack output or Beimingwu format)."),
    market: Optional[Path] = MARKET_OPTION,
    semantic: Optional[Path] = typer.Option(None, "--semantic", help="Semantic specification JSON (wins over the zip's own)."),
    update: Optional[str] = typer.Option(None, "--update", help="Submit as a new version of this learnware id."),
    allow_breaking: bool = typer.Option(False, "--allow-breaking", help="With --update: accept a version whose Data, Task or input/output dimension differs (recorded as breaking)."),
    price: Optional[float] = typer.Option(None, "--price", help="Optional price recorded with the version."),
    notes: Optional[str] = typer.Option(None, "--notes", help="Optional release notes recorded with the version."),
    timeout: Optional[float] = timeout_option("Seconds the model may take to load and predict, more than 0 (default: the market's)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="Packages checked at once (default: up to 4, one per core)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Check packages and add the accepted ones to the market (exit 3 if any is rejected).

    Example: lw submit store7.zip --market ./market --json
    """
    from learnware_cli.errors import RejectedError
    from learnware_cli.market.submit import BUSY_CHECK, submit_packages
    from learnware_cli.market.worker import MarketBusyError

    output = Output(json_output)
    opened = open_market(market)
    override = _read_semantic(semantic) if semantic is not None else None
    with output.progress("checking packages", total=len(packages)) as update_bar:
        outcomes = submit_packages(
            opened, packages, override, update_id=update, price=price, notes=notes, timeout=timeout, jobs=jobs,
            allow_breaking=allow_breaking,
            progress=lambda done, total, what: update_bar(done, total, f"checking {what}"),
        )
    rejected = [o for o in outcomes if not o.accepted and o.check != BUSY_CHECK]
    busy = [o for o in outcomes if not o.accepted and o.check == BUSY_CHECK]
    warnings = duplicate_warnings(opened, outcomes)
    # one shape for one package or many: per-package dicts, in input order in "results"
    data = {
        "ok": not rejected and not busy,
        "accepted": [o.to_dict() for o in outcomes if o.accepted],
        "rejected": [o.to_dict() for o in rejected],
        "not_judged": [o.to_dict() for o in busy],
        "results": [o.to_dict() for o in outcomes],
        "warnings": warnings,
    }
    if len(outcomes) == 1 and busy:  # one package: one line, and the same document under --json
        raise MarketBusyError(f"{Path(busy[0].package).name}: {busy[0].reason}").with_extra(**data)
    if len(outcomes) == 1 and rejected:
        raise RejectedError(rejected[0].check, f"{Path(rejected[0].package).name}: {rejected[0].reason}").with_extra(**data)

    def human(console):
        for o in outcomes:
            if o.accepted:
                console.print(f"[green]accepted[/] {safe(o.package)} -> id {o.id} version {o.version} ({safe(o.name)})", highlight=False)
            elif o.check == BUSY_CHECK:
                console.print(f"[yellow]not judged[/] {safe(o.package)}: {safe(o.reason)}", highlight=False)
            else:
                console.print(f"[red]rejected[/] {safe(o.package)}: {safe(o.check)}: {safe(o.reason)}", highlight=False)
        if len(outcomes) > 1:
            console.print(f"{len(outcomes) - len(rejected) - len(busy)} accepted, {len(rejected)} rejected" + (f", {len(busy)} not judged (machine too busy: submit them again)" if busy else ""))

    for warning in warnings:
        output.warn(warning)
    output.emit(data, human)
    if busy:
        raise typer.Exit(EXIT_MARKET)
    if rejected:
        raise typer.Exit(EXIT_REJECTED)


def duplicate_warnings(market, outcomes) -> list[str]:
    """One line per accepted package whose bytes (sha256) the market already holds under another id/version."""
    accepted = [o for o in outcomes if o.accepted]
    if not accepted:
        return []
    warnings = []
    for o in accepted:
        checksum = o.record.get("checksum") or o.report.get("package", {}).get("sha256")
        others = [f"{i} v{v}" for i, v in (market.holders_of(checksum) if checksum else []) if (i, v) != (o.id, o.version)]
        if checksum and others:
            warnings.append(
                f"{Path(o.package).name} (stored as {o.id} v{o.version}) is byte-identical (same sha256) to "
                f"{', '.join(others)} in the market"
            )
    return warnings


def register(app: typer.Typer) -> None:
    app.command("pack")(pack)
    app.command("submit")(submit)
