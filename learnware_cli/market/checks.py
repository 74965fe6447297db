"""The submission checks: everything a package must pass before it enters the market.

Checks run in this order; the first failure raises
``RejectedError(check, one-line reason)``:

==================  =============================================================
archive             zip structure, entry names and types, sizes (package.py)
manifest            learnware.yaml, __init__.py, the RKME file present
semantic            semantic specification valid (override, else the zip's);
                    Input/Output.Dimension within CheckLimits
update              (only for a new version) Data, Task, Input/Output.Dimension
                    as in the learnware it updates, unless allow_breaking
spec                RKME parses, finite, |z| <= MAX_ABS_Z, beta >= 0 and sums
                    to 1, dimension == Input.Dimension, gamma == the market's,
                    size <= k; the probe rows fit CheckLimits.max_probe_bytes
model-load          the model loads in a sandboxed worker (time/memory limits)
model-interface     declared input_shape / output_shape fit the semantic spec
model-predict       predict answers on rows herded from the spec, in time,
                    without crashing or flooding stdout/stderr
model-output        one finite output per row, of the declared shape; labels
                    in [0, classes) or one score column per class
==================  =============================================================

Only our own code (parsers, RKME maths, herding) runs in this process; the
model runs in a ModelWorker. A package is small but may claim any size, so
every size this process allocates from (dimensions, K, probe rows and the
probe arrays' bytes) is checked against a limit before anything is allocated.
"""

from __future__ import annotations

import math
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from learnware_cli.errors import RejectedError
from learnware_cli.market import onnx_kind
from learnware_cli.market import package as pkg
from learnware_cli.market.semantic import semantic_value, validate_semantic
from learnware_cli.market.worker import ModelWorker, WorkerError
from learnware_cli.specs.base import GAMMA_REL_TOL

CHECK_NAMES = (
    "archive",
    "manifest",
    "semantic",
    "spec",
    "model-load",
    "model-interface",
    "model-predict",
    "model-output",
)
BETA_SUM_TOL = 1e-6
BETA_NEG_TOL = 1e-8  # the reference QP returns weights like -1e-10
# The search stacks specs in float32 (max 3.4e38) and forms squared norms and
# distances over d coordinates: with |z| <= 1e12 and d <= 10^6 (the absolute
# dimension cap) they stay below d * (2e12)^2 = 4e30, eight orders of magnitude
# from overflow, whereas |z| = 1e39 is already inf in float32 and scores NaN.
# Real features, even unscaled counts or amounts, sit far below 1e12.
MAX_ABS_Z = 1e12
MiB = 1024 * 1024


@dataclass(frozen=True)
class CheckLimits:
    """Caps on the sizes the checker allocates from in the market process, checked before allocating.

    A 400 KB package may claim Input.Dimension 100 000, and herding probe
    rows of that width asked for ~25 GB here before any worker ran. Defaults
    fit real tabular data:

    * max_input_dim 10 000: wider than nearly all tabular data sets (the
      widest common ones, gene-expression panels and one-hot encodings, have
      a few thousand columns); probing that width with the default 64 rows
      fits max_probe_bytes (about 1 000 herding candidates).
    * max_output_dim 1 000: classes or regression targets; tabular tasks
      with more classes are rare, and reuse holds rows x classes arrays.
    * max_probe_bytes 256 MiB: the herding arrays (about two copies of the
      candidates x dimension matrix plus a candidates x K kernel matrix, as
      measured); wide specs get fewer candidates instead of more memory, and
      a spec that cannot be probed with check_rows rows within it is rejected.

    K is capped by the market's kernel K (check_package's k) and the probe
    rows by its check_rows (n_rows).
    """

    max_input_dim: int = 10_000
    max_output_dim: int = 1_000
    max_probe_bytes: int = 256 * MiB


_PROBE_BYTES_PER_VALUE = 8  # float64


@dataclass
class CheckResult:
    check: str
    seconds: float
    detail: str = ""


@dataclass
class CheckReport:
    """What passed (with timings) and what was learned about the package."""

    zip_path: str
    passed: list = field(default_factory=list)
    model: dict = field(default_factory=dict)
    spec: dict = field(default_factory=dict)
    semantic: dict = field(default_factory=dict)
    package: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    update: dict = field(default_factory=dict)  # for a new version: the breaking changes accepted
    rkme: object = field(default=None, repr=False)  # the parsed specification (an RKMESpec today), for the caller to store

    @property
    def passed_names(self) -> list:
        return [r.check for r in self.passed]

    def to_dict(self) -> dict:
        return {
            "zip_path": self.zip_path,
            "passed": [asdict(r) for r in self.passed],
            "model": dict(self.model),
            "spec": dict(self.spec),
            "semantic": self.semantic,
            "package": dict(self.package),
            "warnings": list(self.warnings),
            "update": dict(self.update),
        }


@contextmanager
def _timed(report: CheckReport, check: str, detail: str = ""):
    """Record check as passed, with its wall time, if the block raises nothing."""
    start = time.perf_counter()
    yield
    report.passed.append(CheckResult(check, round(time.perf_counter() - start, 4), detail))


def _reject(check: str, message: str):
    raise RejectedError(check, message)


# --------------------------------------------------------------------------- semantic


def choose_semantic(zip_path, scan, limits, semantic_override: Optional[dict]) -> dict:
    """The override when given (it wins), else the zip's file; neither is a rejection."""
    if semantic_override is not None:
        semantic = validate_semantic(semantic_override)
    else:
        raw = pkg.read_semantic_raw(zip_path, scan, limits)
        if raw is None:
            _reject("semantic", f"no semantic specification: the package has no {pkg.SEMANTIC_FILE} and none was given")
        semantic = validate_semantic(raw)
    if semantic_value(semantic, "Data") not in DATA_TYPES:
        _reject("semantic", f"Data is {semantic_value(semantic, 'Data')!r}; this market holds {', '.join(DATA_TYPES)} learnwares")
    return semantic


DATA_TYPES = ("Table", "Image", "Text")  # the data types a specification kind exists for


def _dimension(semantic: dict, block: str) -> Optional[int]:
    return (semantic.get(block) or {}).get("Dimension")


def check_dimensions(semantic: dict, limits: CheckLimits) -> None:
    """Input/Output.Dimension within the market's limits, before anything of that width exists."""
    for block, limit, name in (("Input", limits.max_input_dim, "max_input_dim"), ("Output", limits.max_output_dim, "max_output_dim")):
        dim = _dimension(semantic, block)
        if dim is not None and dim > limit:
            _reject("semantic", f"{block}.Dimension {dim} is over the market's limit {name} = {limit}")


# --------------------------------------------------------------------------- update


UPDATE_KEYS = ("Data", "Task", "Input.Dimension", "Output.Dimension")


def _update_value(semantic: dict, key: str):
    block, _, part = key.partition(".")
    return _dimension(semantic, block) if part else semantic_value(semantic, block)


def breaking_changes(old: dict, new: dict) -> list:
    """What a new version changes that users of the learnware rely on: data type, task, widths."""
    changes = []
    for key in UPDATE_KEYS:
        before, after = _update_value(old, key), _update_value(new, key)
        if before != after:
            changes.append(f"{key} from {before} to {after}")
    return changes


def check_update(old: dict, new: dict, allow_breaking: bool) -> dict:
    """A new version must fit where the old one is used, unless the submitter says it breaks."""
    changes = breaking_changes(old, new)
    if changes and not allow_breaking:
        _reject("update", f"the new version changes {', '.join(changes)}, which breaks its users (submit with --allow-breaking to accept it)")
    return {"breaking_changes": changes}


# --------------------------------------------------------------------------- spec


def check_spec(spec, semantic: dict, gamma: float, k: Optional[int] = None) -> dict:
    """Spec sanity against the semantic spec and the market's settings; returns a summary.

    Every kind: finite points, simplex weights, at most k points, the data
    type it describes = the semantic Data. Kinds with a kernel width (table,
    text): the market's gamma. Tables: the width = Input.Dimension.
    """
    from learnware_cli.specs import data_type_of

    z, beta = (np.asarray(a, dtype=np.float64) for a in spec.stack_arrays())
    island = spec.island_key()
    data_type = semantic_value(semantic, "Data")
    if data_type_of(spec) != data_type:
        _reject("spec", f"a {spec.type_name} describes {data_type_of(spec)} data but the semantic spec says Data is {data_type}")
    if not (np.all(np.isfinite(z)) and np.all(np.isfinite(beta))):
        _reject("spec", "z and beta must be finite (found NaN or Inf)")
    biggest = float(np.max(np.abs(z)))
    if biggest > MAX_ABS_Z:
        _reject("spec", f"z has a value of magnitude {biggest:.3g}, over {MAX_ABS_Z:g} (it would overflow the search's float32 arithmetic)")
    if beta.min() < -BETA_NEG_TOL:
        _reject("spec", f"beta has a negative weight {beta.min():.3g} (weights must be >= 0)")
    total = float(beta.sum())
    if abs(total - 1.0) > BETA_SUM_TOL:
        _reject("spec", f"beta sums to {total:.9g}, not 1 (tolerance {BETA_SUM_TOL:g})")
    input_dim = semantic.get("Input", {}).get("Dimension")
    if data_type == "Table" and input_dim is not None and island.dim != input_dim:
        _reject("spec", f"spec dimension {island.dim} differs from semantic Input.Dimension {input_dim}")
    if island.gamma > 0 and not math.isclose(island.gamma, gamma, rel_tol=GAMMA_REL_TOL):
        _reject("spec", f"spec gamma {island.gamma:g} differs from the market's gamma {gamma:g}")
    if k is not None and len(beta) > k:
        _reject("spec", f"spec has {len(beta)} reduced-set points, the market allows at most {k}")
    return {"type": spec.type_name, "dim": island.dim, "k": len(beta), "gamma": island.gamma, "num_points": getattr(spec, "num_points", 0), "beta_sum": total}


def probe_candidates(spec, n_rows: int, limits: CheckLimits) -> int:
    """Herding candidates for n_rows probe rows, as many as herd() would draw but within max_probe_bytes.

    Herding holds the candidates (n, d) about twice plus an (n, K) kernel
    matrix (measured); counted three and two times for margin. Wide specs get
    fewer candidates; one that cannot get n_rows of them is rejected.
    """
    from learnware_cli.rkme.spec import RKMESpec, default_herd_candidates

    if not isinstance(spec, RKMESpec):  # other kinds draw a fixed, small probe set (images: at most n_rows)
        return 0
    d, k = spec.dim, spec.size
    per_candidate = _PROBE_BYTES_PER_VALUE * (3 * d + 2 * k)
    budget = limits.max_probe_bytes - _PROBE_BYTES_PER_VALUE * n_rows * d  # the rows themselves
    fit = max(budget, 0) // per_candidate
    if fit < n_rows:
        _reject("spec", f"probing the model with {n_rows} rows of dimension {d} (K={k}) needs more than the market's limit max_probe_bytes = {limits.max_probe_bytes}")
    return int(min(fit, default_herd_candidates(n_rows)))


# --------------------------------------------------------------------------- model


def check_interface(info: dict, semantic: dict) -> None:
    """Declared shapes against the semantic spec, as the reference checker does."""
    input_dim = semantic.get("Input", {}).get("Dimension") if semantic_value(semantic, "Data") == "Table" else None
    if info["input_shape"] is None:
        _reject("model-interface", f"model input_shape must be a tuple of ints, got {info['declared_input_shape']}")
    if input_dim is not None and tuple(info["input_shape"]) != (input_dim,):
        _reject("model-interface", f"model input_shape {tuple(info['input_shape'])} differs from semantic Input.Dimension ({input_dim},)")
    task = semantic_value(semantic, "Task")
    if task not in ("Classification", "Regression"):
        return
    out_dim = semantic["Output"]["Dimension"]
    shape = info["output_shape"]
    if shape is None:
        _reject("model-interface", f"model output_shape must be a tuple of ints, got {info['declared_output_shape']}")
    allowed = [(out_dim,)] if task == "Regression" else [(1,), (out_dim,)]
    if tuple(shape) not in allowed:
        want = " or ".join(str(a) for a in allowed)
        _reject("model-interface", f"model output_shape {tuple(shape)} does not fit {task} with Output.Dimension {out_dim} (expected {want})")


def check_outputs(y: np.ndarray, n_rows: int, info: dict, semantic: dict, what: str = "predict") -> dict:
    """One finite output per row, of the declared width; labels within [0, classes)."""
    if y.ndim == 0 or y.shape[0] != n_rows:
        _reject("model-output", f"{what} returned shape {tuple(y.shape)} for {n_rows} input rows")
    if y.dtype.kind not in "biuf":
        _reject("model-output", f"{what} returned dtype {y.dtype}, not numbers")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        _reject("model-output", f"{what} returned {int(np.sum(~np.isfinite(y)))} NaN or Inf values")
    rows = y.reshape(n_rows, -1) if y.ndim != 1 else y.reshape(n_rows, 1)
    row_shape = tuple(y.shape[1:]) if y.ndim > 1 else (1,)
    declared = info.get("output_shape")
    if declared is not None and row_shape != tuple(declared):
        _reject("model-output", f"{what} returned rows of shape {row_shape}, the model declares output_shape {tuple(declared)}")
    task = semantic_value(semantic, "Task")
    if task == "Regression":
        out_dim = semantic["Output"]["Dimension"]
        if rows.shape[1] != out_dim:
            _reject("model-output", f"{what} returned {rows.shape[1]} columns, semantic Output.Dimension is {out_dim}")
    elif task == "Classification":
        _check_classification(rows, semantic["Output"]["Dimension"], what)
    return {"shape": list(y.shape), "dtype": str(y.dtype)}


def _check_classification(rows: np.ndarray, n_classes: int, what: str) -> None:
    if rows.shape[1] == 1:
        labels = rows[:, 0]
        if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
            _reject("model-output", f"{what} returned non-integer class labels (e.g. {labels[labels != np.round(labels)][0]:g})")
        bad = labels[(labels < 0) | (labels >= n_classes)]
        if bad.size:
            _reject("model-output", f"{what} returned label {bad[0]:g}, outside [0, {n_classes}) for {n_classes} classes")
    elif rows.shape[1] != n_classes:
        _reject("model-output", f"{what} returned {rows.shape[1]} score columns for {n_classes} classes")


def _worker_failure(check: str, exc: WorkerError, output_check: str = "model-output"):
    """Map a worker failure to the check it fails: bad answers are output failures."""
    raise RejectedError(output_check if exc.kind == "bad-output" else check, f"{exc.kind}: {exc.message}") from None


def _check_flood(worker: ModelWorker, check: str, cap: int) -> None:
    if worker.output_bytes > cap:
        _reject(check, f"model wrote {worker.output_bytes} bytes to stdout/stderr, the limit is {cap}")


PROBE_TEXTS = "probes/text.txt"  # in market_template: sentences every text model is tried on


def probe_inputs(spec, n_rows: int, n_candidates: int, input_shape=None):
    """What the model is tried on: drawn from its specification (table rows, images), else the
    market's probe texts. Images are brought to the model's declared (C, H, W)."""
    return _fit_probes(_draw_probes(spec, n_rows, n_candidates), input_shape)


def _draw_probes(spec, n_rows: int, n_candidates: int):
    """The probe rows, images or texts, before any fitting to the model's declared input shape."""
    try:
        x = spec.probe_inputs(n_rows, n_candidates=n_candidates) if n_candidates else spec.probe_inputs(n_rows)
    except NotImplementedError:
        from learnware_cli.market.store import template_text

        texts = [line.strip() for line in template_text(PROBE_TEXTS).splitlines() if line.strip()]
        return [texts[i % len(texts)] for i in range(n_rows)]
    return np.asarray(x, dtype=np.float64)


def _fit_probes(x, input_shape):
    if isinstance(x, np.ndarray) and x.ndim == 4 and input_shape is not None and len(input_shape) == 3 and tuple(x.shape[1:]) != tuple(input_shape):
        x = resize_images(x, tuple(input_shape))
    return x


class _ProbeDraw:
    """Draw the probes (herding: JAX, in this process) in a thread while the model loads in its worker."""

    def __init__(self, spec, n_rows: int, n_candidates: int):
        import threading

        self._result = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(spec, n_rows, n_candidates), name="lw-probe-draw", daemon=True)
        self._thread.start()

    def _run(self, spec, n_rows: int, n_candidates: int) -> None:
        try:
            self._result = _draw_probes(spec, n_rows, n_candidates)
        except BaseException as exc:  # noqa: BLE001 - raised again in the checking thread
            self._error = exc

    def result(self, input_shape):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return _fit_probes(self._result, input_shape)

    def join(self) -> None:
        self._thread.join()


def resize_images(images: np.ndarray, shape: tuple) -> np.ndarray:
    """(n, C, H, W) -> (n, C', H', W'): bilinear in space; 1 -> 3 channels by repetition, 3 -> 1 by the mean."""
    from learnware_cli.rkme import _jax_setup  # noqa: F401  (x64 and the compilation cache, before any JAX use)
    import jax

    channels, height, width = shape
    if images.shape[1] != channels:
        images = images.mean(axis=1, keepdims=True) if channels == 1 else np.repeat(images[:, :1], channels, axis=1)
    return np.asarray(jax.image.resize(images, (images.shape[0], channels, height, width), method="linear"))


def _run_model_checks(report, open_model, spec, semantic, n_rows, n_candidates, output_cap) -> None:
    """model-load .. model-output on the model open_model() gives: a ModelWorker (Python learnwares)
    or an onnx_kind.OnnxModel (ONNX ones, run in this process: no submitted code runs)."""
    worker = None
    probes = _ProbeDraw(spec, n_rows, n_candidates)  # meanwhile the worker starts and loads the model
    try:
        with _timed(report, "model-load"):
            worker = open_model()
            try:
                info = worker.start()
            except WorkerError as exc:
                _worker_failure("model-load", exc, "model-load")
            _check_flood(worker, "model-load", output_cap)
        report.model = {k: (list(v) if isinstance(v, tuple) else v) for k, v in info.items() if not k.startswith("declared_")}
        report.model["load_seconds"] = round(worker.load_seconds, 4)
        with _timed(report, "model-interface"):
            check_interface(info, semantic)
        x = probes.result(info.get("input_shape"))
        with _timed(report, "model-predict"):
            try:
                y = worker.predict(x)
                proba = worker.predict_proba(x) if _wants_proba(info, semantic) else None
            except WorkerError as exc:
                _worker_failure("model-predict", exc)
            _check_flood(worker, "model-predict", output_cap)
        with _timed(report, "model-output"):
            report.model["predict"] = check_outputs(y, n_rows, info, semantic)
            if proba is not None:
                proba_info = dict(info, output_shape=(semantic["Output"]["Dimension"],))
                report.model["predict_proba"] = check_outputs(proba, n_rows, proba_info, semantic, "predict_proba")
        report.model["output_bytes"] = worker.output_bytes
    finally:
        probes.join()
        if worker is not None:
            worker.close()


def _wants_proba(info: dict, semantic: dict) -> bool:
    return info["has_predict_proba"] and semantic_value(semantic, "Task") == "Classification"


# --------------------------------------------------------------------------- entry point


def check_package(
    zip_path,
    gamma: float,
    k: Optional[int] = None,
    limits: Optional[pkg.PackageLimits] = None,
    timeout: float = 60,
    memory_mb: int = 4096,
    semantic_override: Optional[dict] = None,
    n_rows: int = 64,
    load_timeout: Optional[float] = None,
    output_cap_bytes: int = 1024 * 1024,
    check_limits: Optional[CheckLimits] = None,
    update_of: Optional[dict] = None,
    allow_breaking: bool = False,
    worker_options: Optional[dict] = None,
) -> CheckReport:
    """Run every check on a submitted zip; RejectedError(check, reason) at the first failure.

    gamma: the market's kernel width (the spec must use it). k: the most
    reduced-set points a spec may have (None: no limit but max_probe_bytes).
    timeout: seconds per model call; load_timeout: for loading (default
    timeout). semantic_override: a semantic spec that replaces the zip's.
    n_rows: rows herded from the spec to exercise predict. output_cap_bytes:
    how much the model may print before it is rejected. check_limits: the
    sizes this process may allocate from. update_of: the semantic spec of
    the learnware this package is a new version of (runs the 'update'
    check); allow_breaking lets that version change Data, Task or widths.
    worker_options: further ModelWorker settings (sandbox mode, processes).
    """
    limits = limits or pkg.PackageLimits()
    check_limits = check_limits or CheckLimits()
    report = CheckReport(zip_path=str(zip_path))
    with _timed(report, "archive"):
        scan = pkg.scan_archive(zip_path, limits)
    with _timed(report, "manifest"):
        manifest = pkg.read_any_manifest(zip_path, scan, limits)
        req_file, requirements = pkg.read_requirements(zip_path, scan, limits)
    if not isinstance(manifest, onnx_kind.OnnxManifest) and (worker_options or {}).get("sandbox", "required") == "required":
        from learnware_cli.market import pool

        pool.prestart()  # Python code ahead: the worker zygote starts while the remaining checks run
    with _timed(report, "semantic"):
        semantic = choose_semantic(zip_path, scan, limits, semantic_override)
        check_dimensions(semantic, check_limits)
    report.semantic = semantic
    if update_of is not None:
        with _timed(report, "update"):
            report.update = check_update(update_of, semantic, allow_breaking)
    with _timed(report, "spec"):
        spec = pkg.read_spec(zip_path, scan, manifest, limits)
        report.spec = check_spec(spec, semantic, gamma, k)
        n_candidates = probe_candidates(spec, n_rows, check_limits)
    report.rkme = spec
    report.package = {
        "root": scan.root,
        "files": {rel: size for rel, (_, size) in sorted(scan.files.items())},
        "total_bytes": scan.total_bytes,
        "kind": "onnx" if isinstance(manifest, onnx_kind.OnnxManifest) else "python",
        "class_name": getattr(manifest, "class_name", "onnx"),
        "spec_file": manifest.spec_file,
        "requirements_file": req_file,
        "requirements": requirements,
    }
    if req_file is None:
        report.warnings.append("no requirements.txt or environment.yaml: dependencies unknown")
    if isinstance(manifest, onnx_kind.OnnxManifest):
        model_bytes = onnx_kind.read_onnx_model(zip_path, scan, manifest, limits)
        report.package["model_file"] = manifest.file

        def open_onnx():
            return onnx_kind.OnnxModel(model_bytes, threads=1, input_shape=manifest.input_shape, output_shape=manifest.output_shape, timeout=timeout)

        _run_model_checks(report, open_onnx, spec, semantic, n_rows, n_candidates, output_cap_bytes)
        return report
    with tempfile.TemporaryDirectory(prefix="lw-check-") as tmp:
        package_dir = pkg.extract_package(zip_path, Path(tmp) / "package", limits)

        def open_worker():
            return ModelWorker(
                package_dir,
                timeout=timeout,
                load_timeout=load_timeout,
                memory_mb=memory_mb,
                output_cap_bytes=output_cap_bytes,
                copy_package=False,  # already a private extraction
                **(worker_options or {}),
            )

        _run_model_checks(report, open_worker, spec, semantic, n_rows, n_candidates, output_cap_bytes)
    return report
