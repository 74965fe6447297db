"""ONNX learnwares: models that are data, not code.

A Python learnware is code (``__init__.py`` plus a pickle) and runs in a
sandboxed worker process (worker.py). An ONNX learnware carries a single
``model.onnx`` graph and no code at all: it is validated here with data-only
parsers and runs in this process in onnxruntime, so nothing submitted is ever
imported or unpickled, and it answers the same in every environment.

Package layout (the same zip as a Python learnware, minus the code)::

    learnware.yaml  model.onnx  rkme.json  [semantic_specification.json]
    [requirements.txt]

with ``learnware.yaml``::

    model:
      kind: onnx
      file: model.onnx
      input_shape: [8]       # optional; needed only when the graph leaves the width dynamic
      output_shape: [1]      # optional; likewise for the output width
    stat_specifications:
      - module_path: learnware.specification
        class_name: RKMETableSpecification
        file_name: rkme.json
        kwargs: {}

An ONNX package must not contain ``__init__.py`` (rejected by
``read_onnx_manifest``): whoever reads it must not be led to run code.

The graph contract (``validate_onnx``):

* exactly one input, a rank-2 float32/float64 tensor ``[batch, d]``; the batch
  dimension is dynamic, ``d`` fixed or dynamic;
* one or two outputs, both plain tensors (no sequences or maps, so no
  skl2onnx ZipMap: convert with ``options={id(clf): {'zipmap': False}}``):
  the first is the prediction, ``[batch]`` or ``[batch, t]``, numeric; the
  optional second is the class probabilities, a float ``[batch, C]`` tensor;
* a classifier (an integer-typed prediction) predicts class *positions*
  0..C-1 (indices into the classes listed in the semantic specification's
  Output.Description), exactly like the Python template's ``SklearnLearnware``;
  a float prediction is a regression output. ``convert_sklearn`` rewrites the
  labels of a scikit-learn classifier into positions (see there);
* operators only from the standard domains ``""``/``ai.onnx`` and
  ``ai.onnx.ml`` (``OnnxLimits.allow_domains`` adds more), every operator
  known to the onnx schema registry, opsets in a supported range;
* no external data (every weight is inside the file), initializer bytes and
  every statically known tensor size under ``OnnxLimits``.

Rejections are ``RejectedError(check, message)`` as everywhere in the market:
``manifest`` for learnware.yaml / layout problems, ``model-load`` for a model
file that is unreadable or breaks the graph contract, ``model-interface`` when
declared shapes disagree with the graph. Failures while predicting are
``WorkerError`` (``crash``, ``timeout``, ``bad-output``) so that the checks and
the reusers treat an OnnxModel exactly like a ModelWorker.

Public API::

    is_onnx_manifest(obj) -> bool
    model_kind(obj) -> "python" | "onnx"
    parse_onnx_manifest(obj) -> OnnxManifest
    read_onnx_manifest(zip_path, scan, limits=None) -> OnnxManifest
    read_onnx_model(zip_path, scan, manifest, limits=None, onnx_limits=None) -> bytes
    validate_onnx(data, limits=None) -> OnnxInfo
    OnnxModel(data, threads=1, ...)            .info .predict .predict_proba
    convert_sklearn(estimator, n_features, ...) -> bytes     (ConversionError)
    pack_onnx(onnx_bytes, spec_path, semantic, out_zip, ...) -> Path
    pack_estimator_onnx(estimator, spec_path, semantic, out_zip, ...) -> Path

onnx, onnxruntime and skl2onnx are imported lazily, inside the functions
that need them, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from learnware_cli.errors import InputError, RejectedError
from learnware_cli.market import package as pkg

MiB = 1024 * 1024

ONNX_KIND = "onnx"
ONNX_MODEL_FILE = "model.onnx"
CLASS_NAME = "onnx"  # info["class_name"] of every ONNX model
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
LOAD_CHECK = "model-load"
INTERFACE_CHECK = "model-interface"
MANIFEST_CHECK = "manifest"

# skl2onnx is asked for this opset; it is within OnnxLimits' default range and
# high enough for Equal on strings (19), used to turn string labels into positions.
CONVERT_OPSET = 21
CLASSES_METADATA = "lw.classes"  # metadata_props key: JSON list of the original class values


@dataclass(frozen=True)
class OnnxLimits:
    """What an ONNX model may be, checked by validate_onnx before onnxruntime sees it.

    * max_model_bytes: the serialized file (a package's own limits apply first).
    * max_initializer_bytes: the sum of all weights (initializers, sparse
      initializers, Constant node tensors, in subgraphs too), counted from their
      declared shapes, i.e. what onnxruntime would allocate for them.
    * max_tensor_elements: any tensor whose statically known dimensions (declared
      or found by shape inference) multiply to more is refused; dynamic
      dimensions count as 1. 2**28 elements is 1 GiB of float32.
    * min_opset/max_opset: the ai.onnx opset; max_ml_opset: ai.onnx.ml's.
    * allow_domains: operator domains accepted besides the standard ones; their
      operators are not checked against the onnx schemas (onnxruntime decides).
    * max_nodes: nodes in all graphs together.
    """

    max_model_bytes: int = 200 * MiB
    max_initializer_bytes: int = 200 * MiB
    max_tensor_elements: int = 2**28
    min_opset: int = 7
    max_opset: int = 24
    max_ml_opset: int = 5
    allow_domains: tuple = ()
    max_nodes: int = 50_000


@dataclass(frozen=True)
class OnnxManifest:
    """learnware.yaml of an ONNX learnware: the model file, the spec file and kind, declared shapes."""

    file: str
    spec_file: str
    spec_class: str = "RKMETableSpecification"
    spec_kwargs: dict = field(default_factory=dict)
    input_shape: Optional[tuple] = None  # declared in learnware.yaml, else None
    output_shape: Optional[tuple] = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class OnnxInfo:
    """What validate_onnx learned about a graph that passed.

    n_features / output_width are None where the graph leaves that width
    dynamic. output_width is 1 for a rank-1 prediction. n_classes is the
    probabilities' width (None without a probabilities output).
    """

    ir_version: int
    opset: int
    ml_opset: Optional[int]
    producer: str
    input_name: str
    input_dtype: str  # "float32" | "float64"
    n_features: Optional[int]
    label_output: str
    label_dtype: str  # a numpy dtype name: int64, float32, ...
    output_width: Optional[int]
    proba_output: Optional[str]
    n_classes: Optional[int]
    nodes: int
    initializer_bytes: int
    domains: tuple
    metadata: dict = field(default_factory=dict)

    @property
    def is_classifier(self) -> bool:
        """An integer prediction: class positions."""
        return self.label_dtype.startswith(("int", "uint"))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["domains"] = list(self.domains)
        out["is_classifier"] = self.is_classifier
        return out


class ConversionError(InputError):
    """A scikit-learn model cannot be turned into an ONNX learnware (lw pack can fall back to Python)."""

    kind = "conversion"


def _reject(check: str, message: str):
    raise RejectedError(check, message)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- manifest


def _model_section(obj) -> Optional[dict]:
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        return obj["model"]
    return None


def is_onnx_manifest(obj) -> bool:
    """True when a parsed learnware.yaml declares ``model: {kind: onnx, ...}``."""
    model = _model_section(obj)
    return model is not None and model.get("kind") == ONNX_KIND


def model_kind(obj) -> str:
    """'onnx' or 'python' (no 'kind', the reference layout); any other kind is RejectedError('manifest')."""
    model = _model_section(obj)
    kind = None if model is None else model.get("kind")
    if kind is None or kind == "python":
        return "python"
    if kind == ONNX_KIND:
        return ONNX_KIND
    _reject(MANIFEST_CHECK, f"model.kind {pkg._show(str(kind))} is not known (expected 'onnx', or none for a Python learnware)")


def _shape(value, what: str) -> Optional[tuple]:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if (
        not isinstance(value, (list, tuple))
        or not 1 <= len(value) <= 8
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        _reject(MANIFEST_CHECK, f"model.{what} must be a list of positive integers, got {pkg._show(str(value))}")
    return tuple(value)


def parse_onnx_manifest(obj) -> OnnxManifest:
    """Validate a parsed learnware.yaml of kind onnx; RejectedError('manifest') on any problem.

    Needs model.kind == 'onnx', model.file (a relative path, default
    model.onnx, ending in .onnx), optional model.input_shape / output_shape
    (lists of positive ints) and the usual stat_specifications list with an
    entry of a known specification kind. No class_name or kwargs: nothing is
    instantiated.
    """
    from learnware_cli.specs.registry import known_types

    obj = pkg._mapping(obj, "learnware.yaml")
    model = pkg._mapping(obj.get("model"), "learnware.yaml 'model'")
    if model.get("kind") != ONNX_KIND:
        _reject(MANIFEST_CHECK, f"model.kind must be 'onnx', got {pkg._show(str(model.get('kind')))}")
    unknown = sorted(str(k) for k in model if k not in ("kind", "file", "input_shape", "output_shape"))
    if unknown:
        _reject(MANIFEST_CHECK, f"model has unknown keys for an ONNX learnware: {', '.join(pkg._show(k) for k in unknown[:5])}")
    file_name = model.get("file", ONNX_MODEL_FILE)
    if not isinstance(file_name, str) or not file_name.strip():
        _reject(MANIFEST_CHECK, "model.file must name the .onnx file")
    rel = pkg._normalise_member(file_name.strip(), MANIFEST_CHECK, "model.file")
    if not rel.lower().endswith(".onnx"):
        _reject(MANIFEST_CHECK, f"model.file {pkg._show(rel)} must end in .onnx")
    input_shape = _shape(model.get("input_shape"), "input_shape")
    output_shape = _shape(model.get("output_shape"), "output_shape")
    specs = obj.get("stat_specifications")
    if not isinstance(specs, list) or not specs:
        _reject(MANIFEST_CHECK, "learnware.yaml needs a non-empty 'stat_specifications' list")
    for entry in specs:
        if isinstance(entry, dict) and entry.get("class_name") in known_types():
            spec_name = entry.get("file_name")
            if not isinstance(spec_name, str) or not spec_name.strip():
                _reject(MANIFEST_CHECK, f"the {entry['class_name']} entry has no file_name")
            spec_rel = pkg._normalise_member(spec_name.strip(), MANIFEST_CHECK, "spec file_name")
            if spec_rel == rel:
                _reject(MANIFEST_CHECK, f"model.file and the spec file are both {pkg._show(rel)}")
            spec_kwargs = pkg._mapping(entry.get("kwargs"), "stat_specifications kwargs", allow_none=True)
            return OnnxManifest(
                file=rel,
                spec_file=spec_rel,
                spec_class=entry["class_name"],
                spec_kwargs=dict(spec_kwargs),
                input_shape=input_shape,
                output_shape=output_shape,
                raw=obj,
            )
    _reject(MANIFEST_CHECK, "stat_specifications has no RKMETableSpecification entry")


def read_onnx_manifest(zip_path, scan, limits=None) -> OnnxManifest:
    """The 'manifest' check for an ONNX package (the counterpart of package.read_manifest).

    learnware.yaml parses and is of kind onnx, the model file and the spec
    file are in the package, and there is no __init__.py.
    """
    limits = limits or pkg.PackageLimits()
    where = f" under {scan.root!r}" if scan.root else " at the package root"
    if not scan.has(pkg.MANIFEST_FILE):
        _reject(MANIFEST_CHECK, f"{pkg.MANIFEST_FILE} not found{where}")
    text = pkg._read_text(zip_path, scan, pkg.MANIFEST_FILE, limits.max_text_bytes, MANIFEST_CHECK)
    manifest = parse_onnx_manifest(pkg.load_manifest_yaml(text))
    if scan.has(pkg.MODULE_FILE):
        _reject(MANIFEST_CHECK, f"an ONNX learnware carries no code: remove {pkg.MODULE_FILE}")
    if not scan.has(manifest.file):
        _reject(MANIFEST_CHECK, f"model file {manifest.file!r} named in {pkg.MANIFEST_FILE} is not in the package")
    if not scan.has(manifest.spec_file):
        _reject(MANIFEST_CHECK, f"spec file {manifest.spec_file!r} named in {pkg.MANIFEST_FILE} is not in the package")
    return manifest


def read_onnx_model(zip_path, scan, manifest: OnnxManifest, limits=None, onnx_limits: Optional[OnnxLimits] = None) -> bytes:
    """The model file's bytes, read with the smaller of the package's per-file cap and max_model_bytes."""
    limits = limits or pkg.PackageLimits()
    onnx_limits = onnx_limits or OnnxLimits()
    return pkg.read_member(zip_path, scan, manifest.file, min(limits.max_file_bytes, onnx_limits.max_model_bytes), LOAD_CHECK)


# --------------------------------------------------------------------------- validation


def _np_dtype_name(elem_type: int) -> str:
    from onnx import helper

    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        return f"onnx-type-{elem_type}"


def _itemsize(elem_type: int) -> int:
    from onnx import helper

    try:
        return max(1, np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize)
    except (KeyError, TypeError, ValueError):
        return 8


def _walk_graphs(model):
    """(where, graph) for the main graph and every subgraph (If/Loop/Scan bodies), iteratively."""
    from onnx import AttributeProto

    pending = [("graph", model.graph)]
    for function in model.functions:
        pending.append((f"function {function.domain}.{function.name}", function))
    while pending:
        where, graph = pending.pop()
        yield where, graph
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == AttributeProto.GRAPH:
                    pending.append((f"a subgraph of {node.op_type}", attr.g))
                elif attr.type == AttributeProto.GRAPHS:
                    pending.extend((f"a subgraph of {node.op_type}", g) for g in attr.graphs)


def _node_tensors(node):
    from onnx import AttributeProto

    for attr in node.attribute:
        if attr.type == AttributeProto.TENSOR:
            yield attr.t
        elif attr.type == AttributeProto.TENSORS:
            yield from attr.tensors
        elif attr.type == AttributeProto.SPARSE_TENSOR:
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        elif attr.type == AttributeProto.SPARSE_TENSORS:
            for sparse in attr.sparse_tensors:
                yield sparse.values
                yield sparse.indices


def _graph_tensors(graph):
    """Every weight a graph (or function) holds: initializers, sparse ones, node attribute tensors."""
    yield from getattr(graph, "initializer", ())
    for sparse in getattr(graph, "sparse_initializer", ()):
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _tensor_bytes(tensor, limits: OnnxLimits) -> int:
    from onnx import TensorProto

    if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
        _reject(LOAD_CHECK, f"tensor {pkg._show(tensor.name)} keeps its data in an external file; an ONNX learnware must hold all its weights in {ONNX_MODEL_FILE}")
    count = 1
    for dim in tensor.dims:
        if dim < 0:
            _reject(LOAD_CHECK, f"tensor {pkg._show(tensor.name)} has a negative dimension {dim}")
        count *= dim
        if count > limits.max_tensor_elements:
            _reject(LOAD_CHECK, f"tensor {pkg._show(tensor.name)} has {count}+ elements, over the limit max_tensor_elements = {limits.max_tensor_elements}")
    if tensor.data_type == TensorProto.STRING:
        return sum(len(s) for s in tensor.string_data)
    return count * _itemsize(tensor.data_type)


def _check_opsets(model, limits: OnnxLimits) -> tuple[int, Optional[int]]:
    opset, ml_opset = None, None
    allowed = set(STANDARD_DOMAINS) | set(limits.allow_domains)
    for entry in model.opset_import:
        domain = entry.domain
        if domain in ("", "ai.onnx"):
            if not limits.min_opset <= entry.version <= limits.max_opset:
                _reject(LOAD_CHECK, f"the model uses ONNX opset {entry.version}; supported are {limits.min_opset} to {limits.max_opset}")
            opset = entry.version if opset is None else max(opset, entry.version)
        elif domain == "ai.onnx.ml":
            if not 1 <= entry.version <= limits.max_ml_opset:
                _reject(LOAD_CHECK, f"the model uses ai.onnx.ml opset {entry.version}; supported are 1 to {limits.max_ml_opset}")
            ml_opset = entry.version
        elif domain not in allowed:
            _reject(LOAD_CHECK, f"the model imports the operator domain {pkg._show(domain)}, which is not allowed (only the standard domains '', 'ai.onnx', 'ai.onnx.ml')")
    if opset is None:
        _reject(LOAD_CHECK, "the model imports no ai.onnx opset")
    return opset, ml_opset


def _check_nodes_and_weights(model, limits: OnnxLimits) -> tuple[int, int, tuple]:
    """Domains and operators known, no external data, node count and weight bytes within limits."""
    import onnx

    allowed = set(STANDARD_DOMAINS) | set(limits.allow_domains)
    nodes = total = 0
    domains = set()
    for where, graph in _walk_graphs(model):
        for node in graph.node:
            nodes += 1
            if nodes > limits.max_nodes:
                _reject(LOAD_CHECK, f"the model has more than {limits.max_nodes} nodes (limit max_nodes)")
            domain = node.domain
            if domain not in allowed:
                _reject(LOAD_CHECK, f"operator {pkg._show(node.op_type)} of domain {pkg._show(domain)} (in {where}) is not allowed: only the standard domains '', 'ai.onnx', 'ai.onnx.ml'")
            if domain in STANDARD_DOMAINS and not onnx.defs.has(node.op_type, "" if domain == "ai.onnx" else domain):
                _reject(LOAD_CHECK, f"unknown operator {pkg._show(node.op_type)} in domain {pkg._show(domain or 'ai.onnx')} (in {where})")
            domains.add(domain)
        for tensor in _graph_tensors(graph):
            total += _tensor_bytes(tensor, limits)
            if total > limits.max_initializer_bytes:
                _reject(LOAD_CHECK, f"the model's weights take more than {total} bytes, over the limit max_initializer_bytes = {limits.max_initializer_bytes}")
    return nodes, total, tuple(sorted(domains))


def _static_elements(value_info) -> tuple[int, list]:
    """(product of the known dimensions, the dims as ints or None) of a tensor ValueInfo."""
    dims = []
    count = 1
    for dim in value_info.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
            count *= max(dim.dim_value, 1)
        else:
            dims.append(None)
    return count, dims


def _check_static_sizes(model, limits: OnnxLimits) -> None:
    """No tensor whose statically known size (declared or inferred) is over max_tensor_elements."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 (check_model ran strict inference already; this pass only adds sizes)
        inferred = model
    for where, graph in _walk_graphs(inferred):
        for info in list(getattr(graph, "input", ())) + list(getattr(graph, "output", ())) + list(getattr(graph, "value_info", ())):
            if not info.type.HasField("tensor_type"):
                continue
            count, dims = _static_elements(info)
            if count > limits.max_tensor_elements:
                _reject(LOAD_CHECK, f"tensor {pkg._show(info.name)} (in {where}) has shape {dims}, over the limit max_tensor_elements = {limits.max_tensor_elements}")


def _io_contract(model) -> dict:
    """The one-input, one-or-two-output contract; returns the fields of OnnxInfo it decides."""
    from onnx import TensorProto

    graph = model.graph
    weights = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1:
        _reject(LOAD_CHECK, f"the model must take exactly one input (a [rows, features] float tensor), it takes {len(inputs)}")
    x = inputs[0]
    if not x.type.HasField("tensor_type"):
        _reject(LOAD_CHECK, f"input {pkg._show(x.name)} must be a tensor")
    x_type = x.type.tensor_type
    if x_type.elem_type not in (TensorProto.FLOAT, TensorProto.DOUBLE):
        _reject(LOAD_CHECK, f"input {pkg._show(x.name)} is of type {_np_dtype_name(x_type.elem_type)}; it must be float32 or float64")
    if not x_type.HasField("shape") or len(x_type.shape.dim) != 2:
        rank = len(x_type.shape.dim) if x_type.HasField("shape") else "unknown"
        _reject(LOAD_CHECK, f"input {pkg._show(x.name)} has rank {rank}; it must be rank 2, [rows, features]")
    _, (rows, width) = _static_elements(x)
    if rows is not None:
        _reject(LOAD_CHECK, f"input {pkg._show(x.name)} fixes the number of rows to {rows}; the first dimension must be dynamic")
    if width is not None and width < 1:
        _reject(LOAD_CHECK, f"input {pkg._show(x.name)} has {width} features")

    outputs = list(graph.output)
    if not 1 <= len(outputs) <= 2:
        _reject(LOAD_CHECK, f"the model must have one output (the prediction) or two (prediction, probabilities), it has {len(outputs)}")
    for out in outputs:
        kind = out.type.WhichOneof("value")
        if kind != "tensor_type":
            hint = " (skl2onnx's ZipMap: convert with options={id(model): {'zipmap': False}})" if kind == "sequence_type" else ""
            _reject(LOAD_CHECK, f"output {pkg._show(out.name)} is a {kind or 'untyped value'}, not a tensor{hint}")
    label = outputs[0].type.tensor_type
    label_dtype = _np_dtype_name(label.elem_type)
    if label.elem_type == TensorProto.STRING:
        _reject(LOAD_CHECK, f"output {pkg._show(outputs[0].name)} holds strings; a classifier must output class positions 0..C-1 as integers (lw pack converts labels so)")
    if label_dtype.startswith("onnx-type") or np.dtype(label_dtype).kind not in "iuf":
        _reject(LOAD_CHECK, f"output {pkg._show(outputs[0].name)} is of type {label_dtype}; predictions must be integers (class positions) or floats")
    label_rank = len(label.shape.dim) if label.HasField("shape") else None
    if label_rank not in (1, 2):
        _reject(LOAD_CHECK, f"output {pkg._show(outputs[0].name)} has rank {label_rank}; it must be [rows] or [rows, outputs]")
    output_width = 1 if label_rank == 1 else _static_elements(outputs[0])[1][1]
    if np.dtype(label_dtype).kind in "iu" and output_width not in (1, None):
        _reject(LOAD_CHECK, f"output {pkg._show(outputs[0].name)} has {output_width} integer columns; a classifier predicts one class position per row")
    proba_output, n_classes = None, None
    if len(outputs) == 2:
        proba = outputs[1].type.tensor_type
        if proba.elem_type not in (TensorProto.FLOAT, TensorProto.DOUBLE):
            _reject(LOAD_CHECK, f"output {pkg._show(outputs[1].name)} (probabilities) is of type {_np_dtype_name(proba.elem_type)}; it must be float32 or float64")
        if not proba.HasField("shape") or len(proba.shape.dim) != 2:
            _reject(LOAD_CHECK, f"output {pkg._show(outputs[1].name)} (probabilities) must be rank 2, [rows, classes]")
        if np.dtype(label_dtype).kind == "f":
            _reject(LOAD_CHECK, f"the model has a probabilities output but its prediction {pkg._show(outputs[0].name)} is float; a classifier predicts integer class positions")
        proba_output, n_classes = outputs[1].name, _static_elements(outputs[1])[1][1]
    return {
        "input_name": x.name,
        "input_dtype": "float32" if x_type.elem_type == TensorProto.FLOAT else "float64",
        "n_features": width,
        "label_output": outputs[0].name,
        "label_dtype": label_dtype,
        "output_width": output_width,
        "proba_output": proba_output,
        "n_classes": n_classes,
    }


def validate_onnx(data: bytes, limits: Optional[OnnxLimits] = None) -> OnnxInfo:
    """Check an ONNX model file against the graph contract; RejectedError('model-load', one line) if it fails.

    Order: size; protobuf parse (a truncated or garbled file); opsets;
    operators and domains, external data, weight bytes, node count (all
    before onnx.checker, which must not see an external-data reference:
    it would resolve the path on this machine); onnx.checker.check_model
    with full_check (strict type and shape inference); statically known
    tensor sizes after shape inference with data propagation; the
    input/output contract. Nothing is executed.
    """
    import onnx
    from google.protobuf.message import DecodeError

    limits = limits or OnnxLimits()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("validate_onnx takes the model file's bytes")
    data = bytes(data)
    if len(data) > limits.max_model_bytes:
        _reject(LOAD_CHECK, f"the model file is {len(data)} bytes, over the limit max_model_bytes = {limits.max_model_bytes}")
    if not data:
        _reject(LOAD_CHECK, "the model file is empty")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, RuntimeError, ValueError, RecursionError) as exc:
        _reject(LOAD_CHECK, f"the model file is not a valid ONNX model (truncated or garbled: {_one_line(exc, 120)})")
    if not model.HasField("graph") or not len(model.graph.node):
        _reject(LOAD_CHECK, "the model file is not a valid ONNX model (no graph; truncated or garbled?)")
    opset, ml_opset = _check_opsets(model, limits)
    nodes, weight_bytes, domains = _check_nodes_and_weights(model, limits)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        _reject(LOAD_CHECK, f"the model is not valid ONNX: {_one_line(exc)}")
    except Exception as exc:  # noqa: BLE001 (the checker's C++ layer raises a few other types)
        _reject(LOAD_CHECK, f"the model is not valid ONNX: {type(exc).__name__}: {_one_line(exc)}")
    _check_static_sizes(model, limits)
    contract = _io_contract(model)
    return OnnxInfo(
        ir_version=int(model.ir_version),
        opset=opset,
        ml_opset=ml_opset,
        producer=f"{model.producer_name} {model.producer_version}".strip()[:200],
        nodes=nodes,
        initializer_bytes=weight_bytes,
        domains=domains,
        metadata={p.key[:100]: p.value[:2000] for p in list(model.metadata_props)[:50]},
        **contract,
    )


# --------------------------------------------------------------------------- running


def _session_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 4  # fatal only: errors reach the caller as exceptions, not as log lines on the terminal
    return options


class OnnxModel:
    """An ONNX learnware's model, running in this process in onnxruntime (CPU, no submitted code).

    A drop-in for a started ModelWorker where the checks and the reusers use
    one: ``start()`` / ``info`` / ``predict`` / ``predict_proba`` / ``close()``,
    ``load_seconds``, ``output_bytes`` (always 0), and a context manager.

    ``OnnxModel(data, threads=1, input_shape=None, output_shape=None, limits=None, timeout=None)``

    * data: the model file's bytes; validated with validate_onnx(limits) first.
    * threads: onnxruntime intra-op threads (inter-op 1, sequential
      execution, memory arena off, CPU provider only).
    * input_shape / output_shape: what learnware.yaml declares (OnnxManifest);
      they fill widths the graph leaves dynamic and must equal those it fixes
      (else RejectedError('model-interface')).
    * timeout: seconds per predict call, enforced by onnxruntime's terminate
      flag (checked between operators): WorkerError('timeout').

    Raises RejectedError('model-load') when the data breaks the contract or
    onnxruntime cannot create a session; RejectedError('model-interface') for
    declared shapes that disagree with the graph.

    ``info`` has ModelWorker.start()'s keys: class_name 'onnx', input_shape
    (d,), output_shape ((1,) for a classifier or a single regression target,
    (t,) for t targets), has_predict_proba, declared_input_shape,
    declared_output_shape, sandbox (inactive: not needed, no code runs).
    ``onnx_info`` is the OnnxInfo. A width the graph leaves dynamic and the
    manifest does not declare is None, which check_interface rejects.

    predict(X) -> classifier: int64 class positions (n,); regressor: float64
    (n,) for one target else (n, t). predict_proba(X) -> float64 (n, C).
    X is cast to the graph's input type (float32 or float64). Failures are
    WorkerError: 'crash' (onnxruntime refused the input or failed),
    'timeout', 'bad-output' (an answer that is not one row per input row).
    """

    def __init__(
        self,
        data: bytes,
        threads: int = 1,
        *,
        input_shape: Optional[Sequence[int]] = None,
        output_shape: Optional[Sequence[int]] = None,
        limits: Optional[OnnxLimits] = None,
        timeout: Optional[float] = None,
    ):
        import onnxruntime as ort

        if int(threads) < 1:
            raise ValueError("threads must be at least 1")
        started = time.perf_counter()
        self.onnx_info = validate_onnx(data, limits)
        self.timeout = timeout
        self.threads = int(threads)
        self.info = self._describe(input_shape, output_shape)
        self.has_predict_proba = self.info["has_predict_proba"]
        self.output_bytes = 0
        self.session_options = _session_options(self.threads)
        try:
            self._session = ort.InferenceSession(bytes(data), sess_options=self.session_options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 (onnxruntime raises its own Fail/InvalidGraph/NotImplemented types)
            _reject(LOAD_CHECK, f"onnxruntime cannot load the model: {_one_line(exc)}")
        self._dtype = np.float32 if self.onnx_info.input_dtype == "float32" else np.float64
        self.load_seconds = time.perf_counter() - started

    def _describe(self, input_shape, output_shape) -> dict:
        oi = self.onnx_info
        declared_in = tuple(int(s) for s in input_shape) if input_shape is not None else None
        declared_out = tuple(int(s) for s in output_shape) if output_shape is not None else None
        graph_in = (oi.n_features,) if oi.n_features is not None else None
        if declared_in is not None and graph_in is not None and declared_in != graph_in:
            _reject(INTERFACE_CHECK, f"learnware.yaml declares input_shape {declared_in} but the ONNX graph takes {graph_in}")
        graph_out = (oi.output_width,) if oi.output_width is not None else None
        if oi.is_classifier:
            graph_out = (1,)
        if declared_out is not None and graph_out is not None and declared_out != graph_out:
            _reject(INTERFACE_CHECK, f"learnware.yaml declares output_shape {declared_out} but the ONNX graph gives {graph_out}")
        final_in = graph_in or declared_in
        final_out = graph_out or declared_out
        return {
            "class_name": CLASS_NAME,
            "input_shape": final_in,
            "output_shape": final_out,
            "has_predict_proba": oi.proba_output is not None,
            "declared_input_shape": repr(final_in),
            "declared_output_shape": repr(final_out),
            "sandbox": {"active": False, "reason": "not needed: an ONNX model runs no submitted code (onnxruntime in this process)"},
        }

    # ModelWorker's life cycle, so callers can hold either
    def start(self) -> dict:
        return dict(self.info)

    def close(self) -> None:
        self._session = None

    def __enter__(self) -> "OnnxModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, output: str, x) -> np.ndarray:
        from learnware_cli.market.worker import WorkerError

        if self._session is None:
            raise WorkerError("crash", "the ONNX model has been closed")
        try:
            arr = np.asarray(x)
            if arr.dtype.kind not in "biuf":
                raise WorkerError("crash", f"the ONNX model takes numbers, got an array of {arr.dtype}")
            arr = np.ascontiguousarray(arr, dtype=self._dtype)
        except (TypeError, ValueError) as exc:
            raise WorkerError("crash", f"the input cannot be read as numbers ({_one_line(exc)})") from None
        if arr.ndim != 2:
            raise WorkerError("crash", f"the ONNX model takes a [rows, features] table, got shape {tuple(arr.shape)}")
        import onnxruntime as ort

        run_options = ort.RunOptions()
        run_options.log_severity_level = 4
        timer = None
        if self.timeout:
            timer = threading.Timer(self.timeout, setattr, (run_options, "terminate", True))
            timer.daemon = True
            timer.start()
        try:
            (out,) = self._session.run([output], {self.onnx_info.input_name: arr}, run_options)
        except Exception as exc:  # noqa: BLE001 (onnxruntime's own error types)
            if run_options.terminate:
                raise WorkerError("timeout", f"the ONNX model took more than {self.timeout:g} s") from None
            raise WorkerError("crash", f"onnxruntime failed: {_one_line(exc)}") from None
        finally:
            if timer is not None:
                timer.cancel()
        out = np.asarray(out)
        if out.ndim == 0 or out.shape[0] != arr.shape[0]:
            raise WorkerError("bad-output", f"the ONNX model returned shape {tuple(out.shape)} for {arr.shape[0]} rows")
        return out

    def predict(self, X) -> np.ndarray:
        out = self._run(self.onnx_info.label_output, X)
        if self.onnx_info.is_classifier:
            return out.reshape(out.shape[0]).astype(np.int64) if out.ndim == 2 and out.shape[1] == 1 else out.astype(np.int64)
        out = out.astype(np.float64)
        if out.ndim == 2 and out.shape[1] == 1:
            return out[:, 0]
        return out

    def predict_proba(self, X) -> np.ndarray:
        from learnware_cli.market.worker import WorkerError

        if self.onnx_info.proba_output is None:
            raise WorkerError("crash", "this ONNX model has no probabilities output")
        return self._run(self.onnx_info.proba_output, X).astype(np.float64)


# --------------------------------------------------------------------------- conversion


def _final_step(estimator):
    """The last step of (nested) Pipelines: the estimator that predicts."""
    while hasattr(estimator, "steps") and estimator.steps:
        estimator = estimator.steps[-1][1]
    return estimator


def _classifier_options(estimator) -> dict:
    """zipmap off for every classifier in the model (Pipelines' steps, ensembles' members)."""
    options = {}
    stack = [estimator]
    seen = set()
    while stack:
        est = stack.pop()
        if id(est) in seen:
            continue
        seen.add(id(est))
        if hasattr(est, "classes_") and hasattr(est, "predict"):
            options[id(est)] = {"zipmap": False}
        for _, step in getattr(est, "steps", None) or []:
            stack.append(step)
    return options


def _labels_to_positions(model, classes) -> None:
    """Rewrite the first output (the class labels) into positions in `classes`, in place.

    skl2onnx classifiers output the original class values (int64, or strings).
    Integer labels: appended standard nodes Unsqueeze the labels to [N, 1],
    Equal them against the class list [C] -> [N, C], Cast to int32, ArgMax on
    axis 1 -> int64 [N]. String labels: an ai.onnx.ml LabelEncoder (opset 2)
    maps each class name to its position (-1 for none, which the output
    check would refuse). Either way the result is the position of each label
    in classes_, which is what the Python template's
    np.searchsorted(classes_, pred) gives. The original class values are kept
    in the metadata (lw.classes).
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    old = graph.output[0]
    elem = old.type.tensor_type.elem_type
    inner = old.name + "_value"
    for node in graph.node:
        node.output[:] = [inner if o == old.name else o for o in node.output]
        node.input[:] = [inner if i == old.name else i for i in node.input]
    if elem == TensorProto.STRING:
        # ai.onnx.ml LabelEncoder (opset 2 and later): string -> int64, -1 for a value not in classes
        for entry in model.opset_import:
            if entry.domain == "ai.onnx.ml":
                entry.version = max(entry.version, 2)
                break
        else:
            model.opset_import.add(domain="ai.onnx.ml", version=2)
        graph.node.append(
            helper.make_node(
                "LabelEncoder", [inner], [old.name], name="lw_label_encoder", domain="ai.onnx.ml",
                keys_strings=[str(c) for c in classes], values_int64s=list(range(len(classes))), default_int64=-1,
            )
        )
    elif elem in (TensorProto.INT64, TensorProto.INT32):
        values = np.asarray(classes)
        if values.dtype.kind not in "iub" and not np.all(values == np.round(values.astype(np.float64))):
            raise ConversionError(f"the ONNX labels are integers but the classes are {values.dtype}")
        values = values.astype(np.int64 if elem == TensorProto.INT64 else np.int32)
        graph.initializer.append(numpy_helper.from_array(values, name="lw_classes"))
        graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), name="lw_axis1"))
        graph.node.extend(
            [
                helper.make_node("Unsqueeze", [inner, "lw_axis1"], ["lw_label_column"], name="lw_unsqueeze"),
                helper.make_node("Equal", ["lw_label_column", "lw_classes"], ["lw_label_match"], name="lw_equal"),
                helper.make_node("Cast", ["lw_label_match"], ["lw_label_match_int"], name="lw_cast", to=TensorProto.INT32),
                helper.make_node("ArgMax", ["lw_label_match_int"], [old.name], name="lw_argmax", axis=1, keepdims=0),
            ]
        )
    else:
        raise ConversionError(f"the converted classifier outputs labels of type {_np_dtype_name(elem)}, which cannot be mapped to class positions")
    new_out = helper.make_tensor_value_info(old.name, TensorProto.INT64, [None])
    graph.output[0].CopyFrom(new_out)
    helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, CLASSES_METADATA: json.dumps([_plain(c) for c in classes])})


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _dedupe_opsets(model) -> None:
    """skl2onnx sometimes lists a domain twice in opset_import; keep each domain once, highest version."""
    best = {}
    for entry in model.opset_import:
        best[entry.domain] = max(best.get(entry.domain, 0), entry.version)
    del model.opset_import[:]
    for domain, version in best.items():
        entry = model.opset_import.add()
        entry.domain, entry.version = domain, version


def _convert_once(estimator, n_features: int, dtype: str, classes) -> bytes:
    from skl2onnx import convert_sklearn as skl_convert
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    tensor_type = FloatTensorType if dtype == "float32" else DoubleTensorType
    options = _classifier_options(estimator) or None
    try:
        model = skl_convert(
            estimator,
            initial_types=[("X", tensor_type([None, int(n_features)]))],
            target_opset=CONVERT_OPSET,
            options=options,
        )
    except Exception as exc:  # noqa: BLE001 (skl2onnx raises RuntimeError, NotImplementedError, MissingShapeCalculator, ...)
        raise ConversionError(f"skl2onnx cannot convert {type(estimator).__name__} ({type(exc).__name__}: {_one_line(exc, 160)})") from None
    _dedupe_opsets(model)
    if classes is not None:
        _labels_to_positions(model, classes)
    model.doc_string = f"{type(estimator).__name__} converted by lw with skl2onnx"
    return model.SerializeToString()


def _agrees(onnx_model: OnnxModel, estimator, sample: np.ndarray, classes, rtol: float, atol: float) -> Optional[str]:
    """None when the ONNX model answers like the estimator on the sample, else why not."""
    try:
        if classes is not None:
            want = np.searchsorted(classes, estimator.predict(sample))
            got = onnx_model.predict(sample)
            wrong = int(np.sum(got != want))
            if wrong > max(0, len(sample) // 100):  # float32 may flip a row that sits on a decision boundary
                return f"{wrong} of {len(sample)} predicted classes differ from scikit-learn's"
            if onnx_model.has_predict_proba and hasattr(estimator, "predict_proba"):
                diff = np.abs(onnx_model.predict_proba(sample) - estimator.predict_proba(sample))
                if not np.all(diff <= atol + rtol * np.abs(estimator.predict_proba(sample))):
                    return f"probabilities differ from scikit-learn's by up to {float(diff.max()):.3g}"
        else:
            want = np.asarray(estimator.predict(sample), dtype=np.float64).reshape(len(sample), -1)
            got = onnx_model.predict(sample).reshape(len(sample), -1)
            if got.shape != want.shape:
                return f"predictions have shape {got.shape[1:]}, scikit-learn's {want.shape[1:]}"
            if not np.allclose(got, want, rtol=rtol, atol=atol):
                return f"predictions differ from scikit-learn's by up to {float(np.abs(got - want).max()):.3g}"
    except Exception as exc:  # noqa: BLE001 (the developer's own model, or onnxruntime)
        return f"trying it failed ({type(exc).__name__}: {_one_line(exc, 120)})"
    return None


def _has_tree_ensemble(data: bytes) -> bool:
    import onnx

    model = onnx.load_model_from_string(data)
    return any(node.op_type.startswith("TreeEnsemble") for _, graph in _walk_graphs(model) for node in graph.node)


def convert_sklearn(
    estimator,
    n_features: int,
    *,
    dtype: str = "auto",
    sample=None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    limits: Optional[OnnxLimits] = None,
) -> bytes:
    """A fitted scikit-learn estimator (or Pipeline) as ONNX model bytes that pass validate_onnx.

    * Input: one float tensor ``X`` of shape [None, n_features].
    * Classifiers: zipmap off (plain tensors), outputs ``label`` (int64 [N]:
      class *positions* 0..C-1, rewritten from skl2onnx's class values by
      appended Equal/ArgMax nodes, see _labels_to_positions; the original
      values are in the model's metadata ``lw.classes``) and, when the model
      has predict_proba, ``probabilities`` (float [N, C]).
    * Regressors: one output ``variable``, [N, t].
    * dtype: "float64" (sklearn's own precision; best for linear models),
      "float32", or "auto": float64 unless the graph holds tree ensembles
      (scikit-learn compares tree splits in float32, so float32 reproduces it
      exactly), falling back to the other type when the first fails.
    * sample: rows to compare the ONNX model with the estimator on (default:
      64 standard-normal rows, seed 0); a conversion whose answers differ
      (classes: more than 1% of rows; values beyond rtol/atol) is refused.

    Raises ConversionError (one line) when skl2onnx cannot convert the
    estimator (no converter for a custom class, unsupported options), when
    the result breaks the ONNX learnware contract, or when it disagrees with
    the estimator; lw pack can then fall back to a Python learnware.
    """
    if dtype not in ("auto", "float32", "float64"):
        raise ValueError("dtype must be 'auto', 'float32' or 'float64'")
    if not hasattr(estimator, "predict"):
        raise ConversionError(f"{type(estimator).__name__} has no predict method; is it a fitted estimator?")
    import importlib.util

    if importlib.util.find_spec("skl2onnx") is None or importlib.util.find_spec("onnxruntime") is None:
        raise ConversionError("skl2onnx and onnxruntime are needed to convert to ONNX (pip install skl2onnx onnxruntime)")
    n_features = int(n_features)
    final = _final_step(estimator)
    classes = getattr(final, "classes_", None) if hasattr(final, "classes_") else None
    if classes is not None:
        classes = np.asarray(classes)
        if classes.ndim != 1:
            raise ConversionError("multi-output classifiers cannot be packed as ONNX learnwares")
    if sample is None:
        sample = np.random.default_rng(0).standard_normal((64, n_features))
    sample = np.asarray(sample, dtype=np.float64)
    order = ["float64", "float32"] if dtype == "auto" else [dtype]
    problems = []
    tried_trees = False
    while order:
        current = order.pop(0)
        try:
            data = _convert_once(estimator, n_features, current, classes)
        except ConversionError as exc:
            problems.append(f"{current}: {exc.message}")
            continue  # the other dtype may convert (tree ensembles convert in float32 only)
        if dtype == "auto" and current == "float64" and not tried_trees and _has_tree_ensemble(data):
            tried_trees = True
            order = ["float32", "float64"]
            continue
        try:
            model = OnnxModel(data, limits=limits)
        except RejectedError as exc:
            problems.append(f"{current}: {exc.reason}")
            continue
        why = _agrees(model, estimator, sample, classes, rtol, atol)
        if why is None:
            return data
        problems.append(f"{current}: {why}")
    raise ConversionError(f"cannot convert {type(estimator).__name__} to ONNX: {'; '.join(problems) or 'no conversion tried'}")


# --------------------------------------------------------------------------- packing


def _manifest_text(spec_type: str, input_shape: Optional[tuple], output_shape: Optional[tuple]) -> str:
    lines = ["model:", f"  kind: {ONNX_KIND}", f"  file: {ONNX_MODEL_FILE}"]
    if input_shape:
        lines.append(f"  input_shape: [{', '.join(str(s) for s in input_shape)}]")
    if output_shape:
        lines.append(f"  output_shape: [{', '.join(str(s) for s in output_shape)}]")
    lines += [
        "stat_specifications:",
        "  - module_path: learnware.specification",
        f"    class_name: {spec_type}",
        "    file_name: rkme.json",
        "    kwargs: {}",
    ]
    return "\n".join(lines) + "\n"


def _requirements_text(requirements) -> str:
    if requirements is None:
        import onnxruntime as ort

        major_minor = ".".join(ort.__version__.split(".")[:2])
        return f"onnxruntime>={major_minor}\n"
    if isinstance(requirements, (str, Path)):
        path = Path(requirements)
        if not path.is_file():
            raise InputError(f"{path}: no such requirements file")
        return path.read_text()
    return "".join(f"{line.strip()}\n" for line in requirements if str(line).strip())


def pack_onnx(onnx_bytes: bytes, spec_path, semantic: dict, out_zip, requirements=None) -> Path:
    """Write an ONNX learnware zip (deterministic: same inputs, same bytes), atomically; returns its path.

    Members: learnware.yaml (kind onnx, input_shape / output_shape from the
    graph), model.onnx, rkme.json, semantic_specification.json,
    requirements.txt (default ``onnxruntime>=X.Y``; a file path or a list of
    lines otherwise). The model is validated first (RejectedError
    'model-load' if it breaks the contract); the semantic spec is validated
    and, for tables, its Input.Dimension must equal the graph's width and the
    spec's dimension (filled in when absent). Classification: Output.Dimension
    must equal the probabilities' width when known; without Output.Description
    the classes are described from the model's lw.classes metadata (written
    by convert_sklearn) or as their positions. Regression: Output.Dimension
    must equal the output width. InputError for mismatches.
    """
    from learnware_cli.market.pack import SPEC_FILE, write_zip
    from learnware_cli.market.semantic import validate_semantic
    from learnware_cli.specs import load_spec

    out_zip = Path(out_zip)
    info = validate_onnx(onnx_bytes)
    spec = load_spec(spec_path)
    semantic = validate_semantic(semantic)
    data_type = semantic["Data"]["Values"][0]
    task = semantic["Task"]["Values"][0]
    if data_type != "Table":
        raise InputError(f"ONNX learnwares take a table ([rows, features]); the semantic spec says Data is {data_type}")
    width = info.n_features
    if width is not None and width != spec.dim:
        raise InputError(f"the ONNX model takes {width} features but the specification has dimension {spec.dim}")
    width = spec.dim if width is None else width
    declared_in = semantic.get("Input", {}).get("Dimension")
    if declared_in is not None and declared_in != width:
        raise InputError(f"semantic Input.Dimension is {declared_in} but the model takes {width} features")
    if "Input" not in semantic:
        semantic["Input"] = {"Dimension": width, "Description": {}}
    output_shape = None
    if task == "Classification":
        if not info.is_classifier:
            raise InputError(f"Task is Classification but the ONNX model predicts {info.label_dtype} values, not class positions")
        n_classes = info.n_classes or semantic["Output"]["Dimension"]
        if semantic["Output"]["Dimension"] != n_classes:
            raise InputError(f"semantic Output.Dimension is {semantic['Output']['Dimension']} but the model has {n_classes} classes")
        if not semantic["Output"].get("Description"):
            names = _class_names(info, n_classes)
            semantic["Output"] = {"Dimension": n_classes, "Description": {str(i): names[i] for i in range(n_classes)}}
        output_shape = (1,)
    elif task == "Regression":
        if info.is_classifier:
            raise InputError("Task is Regression but the ONNX model predicts integer class positions")
        out_dim = semantic["Output"]["Dimension"]
        if info.output_width is not None and info.output_width != out_dim:
            raise InputError(f"semantic Output.Dimension is {out_dim} but the model has {info.output_width} output columns")
        output_shape = (out_dim,)
    elif info.output_width is not None:
        output_shape = (info.output_width,)
    semantic = validate_semantic(semantic)
    members = {
        "learnware.yaml": _manifest_text(spec.type_name, (width,), output_shape).encode(),
        ONNX_MODEL_FILE: bytes(onnx_bytes),
        SPEC_FILE: json.dumps(spec.to_json_dict(), separators=(",", ":")).encode(),
        pkg.SEMANTIC_FILE: json.dumps(semantic, indent=2, ensure_ascii=False).encode(),
        "requirements.txt": _requirements_text(requirements).encode(),
    }
    write_zip(out_zip, members)
    return out_zip


def _class_names(info: OnnxInfo, n_classes: int) -> list:
    try:
        names = json.loads(info.metadata.get(CLASSES_METADATA, "null"))
    except ValueError:
        names = None
    if isinstance(names, list) and len(names) == n_classes:
        return [str(n) for n in names]
    return [str(i) for i in range(n_classes)]


def pack_estimator_onnx(estimator, spec_path, semantic: dict, out_zip, requirements=None, dtype: str = "auto") -> Path:
    """Convert a fitted estimator and pack it as an ONNX learnware (tables only).

    Like pack_sklearn: input width checked against n_features_in_ and the
    spec, classification Output filled with the class names; the conversion
    is checked against the estimator on the spec's points. Raises
    ConversionError when the estimator cannot be converted (fall back to
    pack_sklearn), InputError for the same mismatches as pack_sklearn.
    """
    from learnware_cli.market.pack import _describe_estimator
    from learnware_cli.market.semantic import validate_semantic
    from learnware_cli.specs import load_spec

    spec = load_spec(spec_path)
    semantic = validate_semantic(semantic)
    if semantic["Data"]["Values"][0] != "Table":
        raise ConversionError("only table models can be packed as ONNX learnwares")
    if "Input" not in semantic:
        semantic["Input"] = {"Dimension": spec.dim, "Description": {}}
    input_shape, _, semantic = _describe_estimator(estimator, spec, semantic)
    sample = np.asarray(spec.z, dtype=np.float64)[:256]
    data = convert_sklearn(estimator, input_shape[0], dtype=dtype, sample=sample)
    return pack_onnx(data, spec_path, semantic, out_zip, requirements=requirements)
