"""`lw list`, `lw show`, `lw versions`, `lw remove`, `lw reindex`: looking after a market."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from learnware_cli.cli.common import JSON_OPTION, MARKET_OPTION, open_market
from learnware_cli.cli.output import Output, key_values, safe, table
from learnware_cli.market.store import parse_learnware_ref, semantic_name
from learnware_cli.search.semantic import values_of


def _semantic_value(entry: dict, key: str) -> str:
    return ", ".join(values_of(entry.get("semantic", {}), key))


def summary(entry: dict) -> dict:
    """The fields of an entry a listing shows (and --json returns)."""
    latest = entry["versions"][-1]
    return {
        "id": entry["id"],
        "name": entry.get("name", ""),
        "version": latest["version"],
        "versions": len(entry["versions"]),
        "task": _semantic_value(entry, "Task"),
        "data": _semantic_value(entry, "Data"),
        "scenario": _semantic_value(entry, "Scenario"),
        "input_dim": latest.get("input_dim"),
        "output_dim": latest.get("output_dim"),
        "submitted": latest["submitted"],
    }


def list_learnwares(
    market: Optional[Path] = MARKET_OPTION,
    tag: List[str] = typer.Option([], "--tag", "-t", help="Filter Key=Value (repeatable), e.g. Task=Regression."),
    name: Optional[str] = typer.Option(None, "--name", help="Name/description text (substring, else fuzzy)."),
    limit: int = typer.Option(100, "--limit", "-n", min=0, help="Show at most this many (0: all)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """List the learnwares in a market.

    Example: lw list --market ./market --tag Task=Classification --name diabetes
    """
    from learnware_cli.search.semantic import parse_tag_filters

    opened = open_market(market)
    query = parse_tag_filters(tag, opened.vocabulary)
    if query or name:  # filtered in the catalog: ids first, then the entries shown
        found = opened.semantic_matches(query, name)
        count, shown = len(found), [opened.entry(learnware_id) for learnware_id, _ in (found if limit <= 0 else found[:limit])]
    elif limit <= 0:
        count, shown = opened.count(), opened.entries()
    else:  # no filter: one page of the catalog, whatever the market's size
        count, shown = opened.count(), opened.page(limit)
    rows = [summary(entry) for entry in shown]
    columns = ["id", "name", "version", "task", "scenario", "input_dim", "output_dim"]
    title = f"{opened.name}: {count} learnware(s)" + (f", showing {len(rows)} (--limit 0 for all)" if len(rows) < count else "")
    Output(json_output).emit(
        {"ok": True, "market": str(opened.root), "count": count, "learnwares": rows},
        lambda c: c.print(table(title, columns, [[r[k] for k in columns] for r in rows])),
    )


def show(
    ref: str = typer.Argument(..., metavar="ID[@V]", help="Learnware id, optionally @version (e.g. 00000001@2)."),
    market: Optional[Path] = MARKET_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Show one learnware: semantic specification, RKME summary, versions and check report.

    Its package.zip is verified against the recorded sha256 first (a mismatch is an error).

    Example: lw show 00000001 --market ./market
    """
    from learnware_cli.market.features import build_vocabulary, features_of
    from learnware_cli.market.integrity import PACKAGE_FILE, verify_package, version_folder

    opened = open_market(market)
    learnware_id, version = parse_learnware_ref(ref)
    entry = opened.entry(learnware_id)
    learnware_id = entry["id"]
    record = opened.version_record(entry, version)
    folder = version_folder(opened, learnware_id, record)
    verify_package(folder / PACKAGE_FILE, learnware_id, record)  # vouch only for the bytes that passed the checks
    semantic = json.loads((folder / "semantic.json").read_text())
    report_path = folder / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    spec = opened.version_spec(learnware_id, record["version"], record)  # out of the package just verified (or an older folder's rkme.json)
    spec_summary = spec.summary()
    name = _version_name(semantic, entry)
    reads = features_of(semantic, build_vocabulary(opened.feature_entries()))
    # the model's kind: a code-free ONNX graph run in-process, or Python code run in a sandboxed worker
    model_kind = record.get("model_kind") or (report.get("package") or {}).get("kind") or "python"
    data = {"ok": True, "id": learnware_id, "name": name, "version": record, "versions": entry["versions"], "semantic": semantic, "rkme": spec_summary, "features": reads, "model_kind": model_kind, "report": report, "package_verified": True}

    def human(console):
        console.print(f"[bold]{safe(name)}[/] ({safe(learnware_id)} v{record['version']})", highlight=False)
        pairs = [(k, _semantic_value({"semantic": semantic}, k)) for k in ("Data", "Task", "Library", "Scenario", "License", "Description")]
        pairs += [("Input dim", semantic.get("Input", {}).get("Dimension")), ("Output dim", semantic.get("Output", {}).get("Dimension"))]
        pairs += [("Model", "ONNX graph (no code; run in-process by onnxruntime)" if model_kind == "onnx" else "Python (run in a sandboxed worker)")]
        pairs += [("RKME", spec.describe())]
        pairs += [("Market features", ", ".join(f if f is not None else "(undescribed)" for f in reads) or "(none described)")]
        pairs += [("checksum", record["checksum"][:16] + "… (package.zip verified)")]
        console.print(key_values(pairs))
        console.print(table("versions", ["version", "submitted", "checksum", "notes"], [[r["version"], r["submitted"], r["checksum"][:12], r.get("notes", "")] for r in entry["versions"]]))
        checks = report.get("passed", [])
        if checks:
            console.print(table("checks passed", ["check", "seconds", "detail"], [[c.get("check"), f"{c.get('seconds', 0):.3f}", c.get("detail", "")] for c in checks]))

    Output(json_output).emit(data, human)


def _version_name(semantic: dict, entry: dict) -> str:
    """The name a version was submitted under (its own semantic.json), else the learnware's current name."""
    return semantic_name(semantic) or entry.get("name", "")


def versions(
    learnware_id: str = typer.Argument(..., metavar="ID", help="Learnware id."),
    market: Optional[Path] = MARKET_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """List every version of a learnware (search and reuse use the latest unless told).

    Example: lw versions 00000001 --market ./market
    """
    opened = open_market(market)
    entry = opened.entry(learnware_id)
    rows = entry["versions"]
    columns = ["version", "submitted", "checksum", "price", "notes"]
    Output(json_output).emit(
        {"ok": True, "id": learnware_id, "versions": rows},
        lambda c: c.print(table(f"{learnware_id}: {entry.get('name', '')}", columns, [[r["version"], r["submitted"], r["checksum"][:16], r.get("price"), r.get("notes", "")] for r in rows])),
    )


def features(
    market: Optional[Path] = MARKET_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """List the market's features: input columns of different learnwares that describe the same quantity.

    Columns are matched by their semantic Input.Description (normalised text, then near-identical
    wording); each feature says how many learnwares read it.

    Example: lw features --market ./market
    """
    from learnware_cli.market.features import FUZZY_THRESHOLD, build_vocabulary

    opened = open_market(market)
    # only the learnwares that describe or name a column add features (a partial index lists them); the others'
    # columns are counted as undescribed in SQLite: no command here reads every entry
    vocabulary = build_vocabulary(opened.feature_entries())
    rows = sorted((f.to_dict() for f in vocabulary.features.values()), key=lambda r: (-r["learnwares"], r["id"]))
    undescribed = vocabulary.undescribed_columns() + opened.undescribed_elsewhere()
    data = {"ok": True, "market": str(opened.root), "count": len(rows), "features": rows, "undescribed_columns": undescribed, "fuzzy_threshold": FUZZY_THRESHOLD}

    def human(console):
        columns = ["feature", "name", "learnwares", "columns", "spellings"]
        body = [[r["id"], r["name"], r["learnwares"], r["columns"], "; ".join(r["spellings"])] for r in rows]
        console.print(table(f"{opened.name}: {len(rows)} market feature(s)", columns, body))
        if undescribed:
            console.print(f"{undescribed} input column(s) have no description and no market feature", highlight=False)

    Output(json_output).emit(data, human)


def remove(
    ref: str = typer.Argument(..., metavar="ID[@V]", help="Learnware id, or ID@VERSION to drop one version."),
    market: Optional[Path] = MARKET_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Remove a learnware (all versions) or one version, atomically.

    Example: lw remove 00000003 --market ./market
    """
    opened = open_market(market)
    learnware_id, version = parse_learnware_ref(ref)
    opened.remove(learnware_id, version)
    what = f"{learnware_id}" + (f" version {version}" if version else "")
    Output(json_output).emit({"ok": True, "removed": learnware_id, "version": version}, lambda c: c.print(f"Removed {what}"))


def register(app: typer.Typer) -> None:
    app.command("list")(list_learnwares)
    app.command("show")(show)
    app.command("versions")(versions)
    app.command("features")(features)
    app.command("remove")(remove)
