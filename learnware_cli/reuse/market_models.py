"""Learnwares of a market, ready for the reusers, with their models kept out of this process.

Each learnware's stored ``package.zip`` is copied to a private temp dir, its
sha256 verified against the index (a swapped zip never runs), extracted there,
and its model runs in a ``ModelWorker`` (a sandboxed subprocess); the reusers
see a ``WorkerModel`` with the usual ``predict`` / ``predict_proba``. The task
comes from the ``semantic.json`` the market stored at submission; the RKME is
read through ``store.version_spec`` with the submit checks' capped, data-only
parsers: out of the verified package copy (a column map, made while planning,
reads the stored package, which that copy then verifies), or from the
market's own ``rkme.json`` in folders stored before specs were kept once.

Passing the submit checks once proves little about later calls, so every
answer is checked again against the same output contract (``checks.check_outputs``);
a model that breaks it raises ``OutputContractError``, which the reusers treat
like a crash: that learnware is left out.

A learnware whose model cannot start is left out and reported in
``LoadedLearnwares.failures``; only when none starts is that an error.

When the user's columns are described (``UserColumns``), a learnware that
shares market features with them reads its columns from hers by feature and
gets the ones she lacks filled in from its RKME (``reuse.fill``); its RKME is
carried into her columns for the job selector. Otherwise its input width must
equal hers, column for column, as before.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from learnware_cli.errors import InputError, LwError, MarketError, RejectedError
from learnware_cli.market.integrity import PACKAGE_FILE, verify_package, version_folder
from learnware_cli.market.store import Market
from learnware_cli.reuse.base import CLASSIFICATION, ReusableLearnware, ReuseError, failure_reason, normalize_task

Ref = tuple[str, Optional[int], float]  # (learnware id, version or None for the latest, weight)


@dataclass
class UserColumns:
    """The user's columns as market features (None: undescribed), and her RKME for carrying specs into them.

    spec may be a callable that fits it on first need (only a learnware that
    does not read exactly her columns in her order needs it).
    """

    features: list
    spec: object = None

    def user_spec(self):
        if callable(self.spec):
            self.spec = self.spec()
        return self.spec

    @classmethod
    def described(cls, market: Market, semantic: dict, spec=None) -> "UserColumns":
        """Her columns as described by a semantic Input block, matched to the market's features."""
        from learnware_cli.market.features import build_vocabulary, features_of

        return cls(features_of(semantic, build_vocabulary(market.feature_entries())), spec=spec)

# Workers load in threads: start-up is mostly the child importing its libraries,
# so a few at once overlap that wait without flooding a small machine.
MAX_PARALLEL_STARTS = 4


class OutputContractError(LwError):
    """A stored model answered outside the contract the market checked at submission."""

    kind = "model-output"


class WorkerModel:
    """A started ModelWorker seen as a model: predict, predict_proba, has_predict_proba.

    Every answer is held to the learnware's contract (task, Output.Dimension,
    declared output_shape) before a reuser sees it.
    """

    def __init__(self, worker, info: dict, task: str, output_dim: int):
        self._worker = worker
        self.info = dict(info)
        self.has_predict_proba = bool(info.get("has_predict_proba"))
        # the stored semantic spec reduced to what check_outputs reads, with the task spelled canonically
        self._contract = {"Task": {"Values": [task]}, "Output": {"Dimension": output_dim}}

    def predict(self, X) -> np.ndarray:
        return self._checked(self._worker.predict(X), len(X), self.info, "predict")

    def predict_proba(self, X) -> np.ndarray:
        if not self.has_predict_proba:
            # AttributeError is what the reusers read as "no probabilities here"
            raise AttributeError(f"model {self.info.get('class_name', '')} has no predict_proba")
        one_score_per_class = dict(self.info, output_shape=(self._contract["Output"]["Dimension"],))
        return self._checked(self._worker.predict_proba(X), len(X), one_score_per_class, "predict_proba")

    def _checked(self, answer, n_rows: int, info: dict, what: str) -> np.ndarray:
        """The answer, if the submit check's model-output rules still hold for it; else OutputContractError."""
        from learnware_cli.market.checks import check_outputs

        answer = np.asarray(answer)
        try:
            check_outputs(answer, n_rows, info, self._contract, what)
        except RejectedError as exc:
            raise OutputContractError(f"broke its output contract: {exc.reason}") from None
        return answer


class LoadedLearnwares(list):
    """What open_learnwares yields: a list of the usable ReusableLearnware (in ref order), plus

    ``described``: per listed learnware, {"id", "version", "name", "weight"};
    ``failures``: the learnwares left out, {"id", "version", "reason"}.
    """

    def __init__(self):
        super().__init__()
        self.described: list[dict] = []
        self.failures: list[dict] = []


@dataclass
class _Planned:
    """A ref resolved against the index, before any worker starts."""

    id: str
    version: int
    name: str
    weight: float
    folder: Path
    record: dict  # its index record (the package's recorded sha256)
    semantic: dict  # the stored semantic.json ({} when unreadable)
    column_map: object = None  # reuse.fill.ColumnMap when it reads the user's columns by feature
    limits: object = None  # the market's package.PackageLimits, to read its specification under

    def describe(self) -> dict:
        described = {"id": self.id, "version": self.version, "name": self.name, "weight": self.weight}
        if self.column_map is not None and not self.column_map.identity:
            described["filled_columns"] = len(self.column_map.missing)
            described["shared_columns"] = len(self.column_map.shared)
        return described


# --------------------------------------------------------------------------- refs


SEARCH_LISTS = ("ranking", "mixture")


def refs_from_search_json(doc, use: Optional[str] = None, k: Optional[int] = None) -> list[Ref]:
    """The learnwares to reuse from `lw search --json` output.

    use: "mixture" (its members with their weights: the set that together
    covers the user's data), "ranking" (the single ranking, best first,
    weight 1 each) or None: the mixture when the search found one, else the
    ranking. k: keep only the first k of that list (the mixture's members as
    listed, the ranking's best k). InputError for a document that is not a
    search result, an empty list, or a mixture asked for but absent.
    """
    if use is not None and use not in SEARCH_LISTS:
        raise InputError(f"--use must be ranking or mixture, got {use!r}")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise InputError(f"-k must be a positive integer, got {k!r}")
    if isinstance(doc, dict) and doc.get("ok") is False:
        raise InputError(f"the search itself failed: {doc.get('message', 'no message')}")
    if not isinstance(doc, dict) or ("single" not in doc and "mixture" not in doc):
        raise InputError("not the output of `lw search --json` (no 'single' or 'mixture' list)")
    mixture = doc.get("mixture") if isinstance(doc.get("mixture"), dict) else {}
    members = _listed(mixture.get("learnwares") or [])
    if use == "mixture" and not members:
        raise InputError("the search result has no mixture (use --use ranking)")
    if use != "ranking" and members:
        refs = [_ref(item, "weight") for item in members]
    else:
        single = _listed(doc.get("single") or [])
        if not single:
            raise InputError("the search result lists no learnwares")
        refs = [_ref(item, None) for item in single]
    return refs[:k] if k is not None else refs


def _listed(items) -> list:
    if not isinstance(items, list):
        raise InputError("the search result's learnwares are not a list")
    return items


def _ref(item, weight_key: Optional[str]) -> Ref:
    """(id, version, weight) of one search result entry; weight 1 when weight_key is None."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        raise InputError(f"search result entry without an id: {item!r}")
    weight = item.get(weight_key, 1.0) if weight_key else 1.0
    version = item.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise InputError(f"search result entry {item['id']} has a bad version {version!r}")
    try:
        weight = float(weight)
    except (TypeError, ValueError):
        raise InputError(f"search result entry {item['id']} has a bad weight {weight!r}") from None
    if not (math.isfinite(weight) and weight >= 0):
        raise InputError(f"search result entry {item['id']} has a bad weight {weight!r}")
    return item["id"], version, weight


# --------------------------------------------------------------------------- opening


def _plan(market: Market, refs: Sequence[Ref], input_dim: Optional[int], user_columns: Optional[UserColumns] = None) -> list[_Planned]:
    """Resolve every ref (unknown id or version: NotFoundError) and read its stored semantic specification.

    Done for all refs before any worker starts, so a typo costs nothing.
    Folders come from id and version, never from the index's paths.
    """
    index = market.read_index()
    vocabulary = None
    planned = []
    for learnware_id, version, weight in refs:
        entry = market.entry(learnware_id, index)
        learnware_id = entry["id"]
        record = market.version_record(entry, version)
        folder = version_folder(market, learnware_id, record)
        name = str(entry.get("name", ""))
        semantic = _read_semantic(folder / "semantic.json")
        column_map = None
        if user_columns is not None and any(f is not None for f in user_columns.features):
            from learnware_cli.market.features import build_vocabulary, features_of

            vocabulary = vocabulary or build_vocabulary(index["learnwares"].values())
            own = features_of(semantic, vocabulary)
            if set(own) & (set(user_columns.features) - {None}):
                column_map = _column_map(market, folder, record, own, user_columns, f"learnware {learnware_id}@{record['version']}")
        dim = record.get("input_dim")
        if column_map is None and input_dim is not None and dim is not None and dim != input_dim:
            raise InputError(f"your data has {input_dim} columns but learnware {learnware_id}@{record['version']} takes {dim}")
        planned.append(_Planned(learnware_id, record["version"], name, float(weight), folder, record, semantic, column_map, market.package_limits))
    return planned


def _column_map(market: Market, folder: Path, record: dict, own: list, user_columns: UserColumns, what: str):
    """How a learnware reads the user's columns (reuse.fill.ColumnMap); its RKME fills what she lacks."""
    from learnware_cli.market.store import version_spec
    from learnware_cli.reuse.fill import ColumnMap
    from learnware_cli.rkme.spec import RKMESpec

    try:
        spec = version_spec(folder, record, market.package_limits)
        if not isinstance(spec, RKMESpec):
            raise InputError(f"its specification is a {spec.type_name}, not a table RKME")
        return ColumnMap(own, list(user_columns.features), spec)
    except MarketError:
        raise  # a damaged stored package: the market's problem, said as it is
    except LwError as exc:
        raise InputError(f"{what}: {exc.message}") from None


def _read_semantic(path: Path) -> dict:
    """A stored semantic.json; {} when unreadable (that learnware is then left out at start)."""
    try:
        semantic = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return semantic if isinstance(semantic, dict) else {}


def _contract_of(semantic: dict) -> tuple[str, int]:
    """(canonical task, Output.Dimension): what the model's answers are held to. InputError if absent."""
    try:
        task = semantic["Task"]["Values"][0]
        dimension = semantic["Output"]["Dimension"]
    except (KeyError, IndexError, TypeError):
        raise InputError("its stored semantic specification names no task or no Output.Dimension") from None
    if not isinstance(dimension, int) or isinstance(dimension, bool) or dimension < 1:
        raise InputError(f"its stored semantic specification has a bad Output.Dimension {dimension!r}")
    return normalize_task(task), dimension


def _verified_copy(plan: _Planned, own: Path) -> Path:
    """A private copy (in the folder own) of the stored package, verified against the recorded sha256.

    The copy is what gets extracted, so the stored file cannot be swapped
    between the check and the use.
    """
    copy = own / PACKAGE_FILE
    try:
        shutil.copyfile(plan.folder / PACKAGE_FILE, copy)
    except FileNotFoundError:
        pass  # verify_package reports the missing file
    verify_package(copy, plan.id, plan.record)
    return copy


def _start(plan: _Planned, scratch: Path, settings: dict, user_spec=None) -> tuple[object, ReusableLearnware]:
    """Verify and extract the package, start its worker, wrap it. Raises LwError on any failure."""
    from learnware_cli.market.package import extract_package
    from learnware_cli.market.store import version_spec
    from learnware_cli.market.worker import ModelWorker

    task, output_dim = _contract_of(plan.semantic)
    own = Path(tempfile.mkdtemp(prefix=f"{plan.id}-v{plan.version}-", dir=scratch))  # one per ref, even a repeated one
    copy = _verified_copy(plan, own)
    spec = plan.column_map.spec if plan.column_map is not None else version_spec(plan.folder, plan.record, plan.limits, package=copy)
    onnx = _onnx_model(copy, settings)  # a graph, run here by onnxruntime: no submitted code runs
    if onnx is not None:
        worker = onnx
    else:
        # copy_package=False: this extraction is private to the worker already
        worker = ModelWorker(extract_package(copy, own / "package"), copy_package=False, **settings)
    try:
        model = WorkerModel(worker, worker.start(), task, output_dim)
        if plan.column_map is not None and not plan.column_map.identity:
            from learnware_cli.reuse.fill import MappedModel, user_space_spec

            model = MappedModel(model, plan.column_map)
            spec = user_space_spec(plan.column_map, user_spec) if user_spec is not None else None
        n_classes = output_dim if task == CLASSIFICATION else None
        return worker, ReusableLearnware(plan.id, model, spec=spec, task=task, n_classes=n_classes, weight=plan.weight)
    except BaseException:
        worker.close()
        raise


def _onnx_model(copy: Path, settings: dict):
    """An ONNX learnware's model from its verified package copy (validated again: the graph is input),
    or None for a Python learnware. The kind is read from the package itself, so records that do not
    say it (rebuilt by `lw reindex`) are served right."""
    from learnware_cli.market import onnx_kind
    from learnware_cli.market.package import read_any_manifest, scan_archive

    scan = scan_archive(copy)
    manifest = read_any_manifest(copy, scan)
    if not isinstance(manifest, onnx_kind.OnnxManifest):
        return None
    data = onnx_kind.read_onnx_model(copy, scan, manifest)
    return onnx_kind.OnnxModel(data, threads=1, input_shape=manifest.input_shape, output_shape=manifest.output_shape, timeout=settings.get("timeout"))


def _start_all(planned: list[_Planned], scratch: Path, settings: dict, user_spec=None) -> list[Future]:
    """Start every worker (a few at a time) and wait for all; futures in plan order.

    If we are interrupted while waiting, each worker that still comes up is
    closed as soon as it does, so no model process outlives us.
    """
    pool = ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_STARTS, len(planned)))
    futures = [pool.submit(_start, plan, scratch, settings, user_spec) for plan in planned]
    try:
        wait(futures)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        for future in futures:
            future.add_done_callback(_close_if_started)
        raise
    pool.shutdown()
    return futures


def _close_if_started(future: Future) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result()[0].close()


@contextlib.contextmanager
def open_learnwares(
    market: Market,
    refs: Sequence[Ref],
    timeout: Optional[float] = None,
    memory_mb: Optional[int] = None,
    input_dim: Optional[int] = None,
    user_columns: Optional[UserColumns] = None,
) -> Iterator[LoadedLearnwares]:
    """Start a worker per learnware; yield the ones that started; stop every worker at exit.

    refs: (id, version or None for the latest, weight), best first. timeout
    (seconds per model call) and memory_mb default to the market's model
    limits. input_dim, when given, must match each learnware's (InputError
    otherwise, before any worker starts) unless the learnware reads the
    user's columns by market feature (user_columns, see the module
    docstring). Raises ReuseError when no learnware starts.
    """
    if not refs:
        raise InputError("no learnwares to reuse")
    timeout = float(timeout if timeout is not None else market.model_timeout_s)
    memory_mb = int(memory_mb if memory_mb is not None else market.model_memory_mb)
    from learnware_cli.market.worker import worker_options

    settings = dict(worker_options(market.limits, str(market.root / "market.json")), timeout=timeout, memory_mb=memory_mb)
    planned = _plan(market, refs, input_dim, user_columns)
    mapped = any(p.column_map is not None and not p.column_map.identity for p in planned)
    user_spec = user_columns.user_spec() if mapped else None
    loaded = LoadedLearnwares()
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lw-reuse-")))
        futures = _start_all(planned, scratch, settings, user_spec)
        started = [f.result() if f.exception() is None else None for f in futures]
        for pair in started:
            if pair is not None:
                stack.callback(pair[0].close)
        for plan, pair, future in zip(planned, started, futures):
            if pair is None:  # one bad learnware is reported, not fatal
                loaded.failures.append({"id": plan.id, "version": plan.version, "reason": failure_reason(future.exception())})
                continue
            loaded.append(pair[1])
            loaded.described.append(plan.describe())
        if not loaded:
            raise ReuseError("no learnware could be started", [(f["id"], f["reason"]) for f in loaded.failures])
        yield loaded
