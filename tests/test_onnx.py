"""ONNX learnwares (issue 17): conversion, validation, in-process running, packing."""

from __future__ import annotations

import functools
import zipfile

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import badpackages as bp  # noqa: E402
from learnware_cli.errors import RejectedError  # noqa: E402
from learnware_cli.market import onnx_kind as ok  # noqa: E402
from learnware_cli.market.worker import WorkerError  # noqa: E402

DIM = bp.DIM


# --------------------------------------------------------------------------- helpers


def _graph_model(nodes, inputs, outputs, initializers=(), opsets=(("", 17),), **kwargs) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets], **kwargs)
    model.ir_version = 8
    return model


def _x(elem=TensorProto.FLOAT, shape=(None, DIM), name="X"):
    return helper.make_tensor_value_info(name, elem, list(shape))


def _y(elem=TensorProto.FLOAT, shape=(None, 1), name="Y"):
    return helper.make_tensor_value_info(name, elem, list(shape))


def _linear(weights=None, dtype=np.float32, elem=TensorProto.FLOAT) -> onnx.ModelProto:
    """Y = X @ W: a valid little regressor."""
    w = np.arange(DIM, dtype=dtype).reshape(DIM, 1) if weights is None else weights
    return _graph_model(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        [_x(elem)],
        [_y(elem, (None, w.shape[1]))],
        [numpy_helper.from_array(w, "W")],
    )


def _reject_message(data, limits=None) -> str:
    with pytest.raises(RejectedError) as info:
        ok.validate_onnx(data, limits)
    assert info.value.check == "model-load"
    assert "\n" not in info.value.reason
    return info.value.reason


@functools.lru_cache(maxsize=None)
def _fitted(name: str):
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y_class, y_reg = bp.data()
    three = np.array(["low", "mid", "high"])[np.digitize(x[:, 1], [-0.5, 0.5])]
    makers = {
        "logistic": lambda: LogisticRegression().fit(x, y_class * 4 + 3),  # classes 3 and 7: positions differ from values
        "forest": lambda: RandomForestClassifier(n_estimators=15, max_depth=6, random_state=0).fit(x, y_class),
        "ridge": lambda: Ridge().fit(x, y_reg),
        "boosting": lambda: GradientBoostingRegressor(n_estimators=30, random_state=0).fit(x, y_reg),
        "pipeline": lambda: make_pipeline(StandardScaler(), LogisticRegression()).fit(x, three),  # string classes
        "pipeline-forest": lambda: make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=10, random_state=0)).fit(x, three),
        "ridge-2": lambda: Ridge().fit(x, np.c_[y_reg, -y_reg]),
    }
    est = makers[name]()
    return est, ok.convert_sklearn(est, DIM)


# --------------------------------------------------------------------------- conversion


@pytest.mark.parametrize("name", ["logistic", "forest", "pipeline", "pipeline-forest"])
def test_converted_classifiers_predict_positions_and_probabilities(name):
    est, data = _fitted(name)
    x = bp.data(n=500, seed=1)[0]
    model = ok.OnnxModel(data)
    want = np.searchsorted(est.classes_, est.predict(x))  # what the Python template's SklearnLearnware returns
    got = model.predict(x)
    assert got.dtype == np.int64 and got.shape == (len(x),)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(model.predict_proba(x), est.predict_proba(x), atol=1e-5, rtol=0)
    assert model.info["output_shape"] == (1,) and model.info["input_shape"] == (DIM,)
    assert model.info["has_predict_proba"] and model.info["class_name"] == "onnx"
    assert model.onnx_info.n_classes == len(est.classes_)
    assert model.onnx_info.metadata[ok.CLASSES_METADATA]  # the original class values travel along


@pytest.mark.parametrize("name", ["ridge", "boosting", "ridge-2"])
def test_converted_regressors_match_sklearn(name):
    est, data = _fitted(name)
    x = bp.data(n=500, seed=1)[0]
    model = ok.OnnxModel(data)
    want = est.predict(x)
    got = model.predict(x)
    assert got.shape == want.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not model.info["has_predict_proba"]
    assert model.info["output_shape"] == ((1,) if want.ndim == 1 else (want.shape[1],))


def test_linear_models_convert_in_double_trees_in_float():
    assert ok.OnnxModel(_fitted("ridge")[1]).onnx_info.input_dtype == "float64"
    assert ok.OnnxModel(_fitted("forest")[1]).onnx_info.input_dtype == "float32"  # sklearn splits in float32


def test_outputs_meet_the_market_contract():
    from learnware_cli.market.checks import check_interface, check_outputs

    est, data = _fitted("pipeline")
    model = ok.OnnxModel(data)
    semantic = bp.semantic("Classification", 3)
    check_interface(model.start(), semantic)
    x = bp.data()[0][:20]
    check_outputs(model.predict(x), 20, model.info, semantic)
    check_outputs(model.predict_proba(x), 20, dict(model.info, output_shape=(3,)), semantic, "predict_proba")


class _Custom:
    """A model skl2onnx knows nothing about."""

    classes_ = np.array([0, 1])
    n_features_in_ = DIM

    def fit(self, X, y):
        return self

    def predict(self, X):
        return np.zeros(len(X), dtype=np.int64)


def test_unsupported_estimator_is_a_conversion_error():
    with pytest.raises(ok.ConversionError) as info:
        ok.convert_sklearn(_Custom(), DIM)
    assert "_Custom" in info.value.message and "\n" not in info.value.message
    with pytest.raises(ok.ConversionError, match="no predict"):
        ok.convert_sklearn(object(), DIM)


# --------------------------------------------------------------------------- validation


def test_valid_graph_info():
    info = ok.validate_onnx(_linear().SerializeToString())
    assert (info.n_features, info.output_width, info.input_dtype, info.label_dtype) == (DIM, 1, "float32", "float32")
    assert not info.is_classifier and info.proba_output is None and info.initializer_bytes == DIM * 4


def test_rejects_unknown_domain_and_operator():
    custom = _graph_model(
        [helper.make_node("Evil", ["X"], ["Y"], domain="com.evil")], [_x()], [_y(shape=(None, DIM))], opsets=(("", 17), ("com.evil", 1))
    )
    message = _reject_message(custom.SerializeToString())
    assert "com.evil" in message
    # the domain allowed, the opset is then accepted and the operator left to onnxruntime
    node_only = _graph_model([helper.make_node("Evil", ["X"], ["Y"], domain="com.evil")], [_x()], [_y(shape=(None, DIM))])
    assert "'Evil'" in _reject_message(node_only.SerializeToString()) and "com.evil" in _reject_message(node_only.SerializeToString())
    unknown = _graph_model([helper.make_node("NoSuchOp", ["X"], ["Y"])], [_x()], [_y(shape=(None, DIM))])
    assert "unknown operator 'NoSuchOp'" in _reject_message(unknown.SerializeToString())


def test_rejects_opset_out_of_range():
    model = _linear()
    model.opset_import[0].version = 99
    assert "opset 99" in _reject_message(model.SerializeToString())


@pytest.mark.parametrize(
    "x, needle",
    [
        (_x(shape=(None, DIM, 1)), "rank 3"),
        (_x(shape=(None,)), "rank 1"),
        (_x(TensorProto.INT64), "int64"),
        (_x(shape=(4, DIM)), "first dimension must be dynamic"),
    ],
)
def test_rejects_wrong_input(x, needle):
    out_shape = (None, DIM, 1) if len(x.type.tensor_type.shape.dim) == 3 else (None,) if len(x.type.tensor_type.shape.dim) == 1 else (None, DIM)
    out_elem = x.type.tensor_type.elem_type
    model = _graph_model([helper.make_node("Identity", ["X"], ["Y"])], [x], [_y(out_elem, out_shape)])
    assert needle in _reject_message(model.SerializeToString())


def test_rejects_two_inputs_and_string_or_map_outputs():
    two = _graph_model([helper.make_node("Add", ["X", "Z"], ["Y"])], [_x(), _x(name="Z")], [_y(shape=(None, DIM))])
    assert "exactly one input" in _reject_message(two.SerializeToString())
    strings = _graph_model(
        [helper.make_node("Cast", ["X"], ["Y"], to=TensorProto.STRING)], [_x()], [_y(TensorProto.STRING, (None, DIM))]
    )
    assert "class positions" in _reject_message(strings.SerializeToString())
    # skl2onnx's default classifier output: a sequence of maps (ZipMap)
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    est = _fitted("logistic")[0]
    zipmap = convert_sklearn(est, initial_types=[("X", FloatTensorType([None, DIM]))], target_opset=17)
    assert "zipmap" in _reject_message(zipmap.SerializeToString())


def test_rejects_huge_initializer_and_huge_static_shape():
    big = _linear(np.zeros((DIM, 20_000), dtype=np.float32))
    message = _reject_message(big.SerializeToString(), ok.OnnxLimits(max_initializer_bytes=100_000))
    assert "max_initializer_bytes = 100000" in message
    # a tensor declared 2**31 elements by a constant shape: no weight is large, the computed tensor would be
    shape = numpy_helper.from_array(np.array([2**31, DIM], dtype=np.int64), "S")
    bomb = _graph_model(
        [helper.make_node("ConstantOfShape", ["S"], ["C"]), helper.make_node("Add", ["X", "C"], ["Y"])],
        [_x()],
        [_y(shape=(None, DIM))],
        [shape],
    )
    assert "max_tensor_elements" in _reject_message(bomb.SerializeToString())
    assert "max_model_bytes" in _reject_message(big.SerializeToString(), ok.OnnxLimits(max_model_bytes=1000))


def test_rejects_truncated_garbled_and_empty_files():
    data = _fitted("forest")[1]
    assert "truncated or garbled" in _reject_message(data[: len(data) // 2])
    assert "not a valid ONNX model" in _reject_message(b"\x00\xff" * 50)
    assert "empty" in _reject_message(b"")
    assert "not a valid ONNX model" in _reject_message(b"PK\x03\x04 this is a zip, not a model")


def test_rejects_external_data():
    model = _linear()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "20")):
        weight.external_data.add(key=key, value=value)
    assert "external file" in _reject_message(model.SerializeToString())
    # also inside a Constant node of a subgraph
    inner = helper.make_tensor("k", TensorProto.FLOAT, [1], [1.0])
    inner.data_location = TensorProto.EXTERNAL
    inner.external_data.add(key="location", value="weights.bin")
    then = helper.make_graph([helper.make_node("Constant", [], ["c"], value=inner)], "then", [], [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1])])
    cond = numpy_helper.from_array(np.array(True), "cond")
    branchy = _graph_model(
        [helper.make_node("If", ["cond"], ["c"], then_branch=then, else_branch=then), helper.make_node("Add", ["X", "c"], ["Y"])],
        [_x()],
        [_y(shape=(None, DIM))],
        [cond],
    )
    assert "external file" in _reject_message(branchy.SerializeToString())


def test_checker_errors_are_one_line_rejections():
    broken = _graph_model([helper.make_node("MatMul", ["X", "W"], ["Y"])], [_x()], [_y()])  # W undefined
    assert "not valid ONNX" in _reject_message(broken.SerializeToString())


# --------------------------------------------------------------------------- running


def test_session_uses_one_thread_no_arena_sequential():
    import onnxruntime as ort

    model = ok.OnnxModel(_linear().SerializeToString())
    options = model._session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.enable_cpu_mem_arena is False
    assert model._session.get_providers() == ["CPUExecutionProvider"]
    assert ok.OnnxModel(_linear().SerializeToString(), threads=3)._session.get_session_options().intra_op_num_threads == 3


def test_predict_casts_and_reports_bad_input_as_worker_errors():
    model = ok.OnnxModel(_linear().SerializeToString())
    x = np.ones((3, DIM))  # float64 in, the graph wants float32
    np.testing.assert_allclose(model.predict(x), np.full(3, float(sum(range(DIM)))))
    assert model.predict(x.astype(int)).shape == (3,)
    with pytest.raises(WorkerError) as info:
        model.predict(np.ones((3, DIM + 1)))
    assert info.value.kind == "crash"
    with pytest.raises(WorkerError):
        model.predict(np.array([["a"] * DIM]))
    with pytest.raises(WorkerError, match="no probabilities"):
        model.predict_proba(x)
    model.close()
    with pytest.raises(WorkerError):
        model.predict(x)


def test_dynamic_width_takes_declared_shapes():
    model = _linear()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "features"
    data = model.SerializeToString()
    assert ok.validate_onnx(data).n_features is None
    assert ok.OnnxModel(data).info["input_shape"] is None  # check_interface would reject it
    assert ok.OnnxModel(data, input_shape=[DIM]).info["input_shape"] == (DIM,)
    with pytest.raises(RejectedError) as info:
        ok.OnnxModel(_linear().SerializeToString(), input_shape=[DIM + 1])
    assert info.value.check == "model-interface"


def test_rejects_ml_opset_out_of_range():
    model = _linear()
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 9))
    assert "ai.onnx.ml opset 9" in _reject_message(model.SerializeToString())


# --------------------------------------------------------------------------- manifest and packing


def _onnx_yaml(**model) -> dict:
    section = {"kind": "onnx", "file": "model.onnx", **model}
    return {"model": section, "stat_specifications": [{"class_name": "RKMETableSpecification", "file_name": "rkme.json"}]}


def test_manifest_parsing():
    assert ok.is_onnx_manifest(_onnx_yaml()) and not ok.is_onnx_manifest({"model": {"class_name": "M"}})
    assert ok.model_kind({"model": {"class_name": "M"}}) == "python" and ok.model_kind(_onnx_yaml()) == "onnx"
    with pytest.raises(RejectedError, match="tflite"):
        ok.model_kind({"model": {"kind": "tflite"}})
    parsed = ok.parse_onnx_manifest(_onnx_yaml(input_shape=[5], output_shape=[1]))
    assert (parsed.file, parsed.spec_file, parsed.input_shape, parsed.output_shape) == ("model.onnx", "rkme.json", (5,), (1,))
    for bad, needle in [
        (_onnx_yaml(file="../x.onnx"), "'..'"),
        (_onnx_yaml(file="model.pkl"), ".onnx"),
        (_onnx_yaml(input_shape=[0]), "positive integers"),
        (_onnx_yaml(class_name="Evil"), "unknown keys"),
        ({"model": {"kind": "onnx"}}, "stat_specifications"),
    ]:
        with pytest.raises(RejectedError, match=needle) as info:
            ok.parse_onnx_manifest(bad)
        assert info.value.check == "manifest"


def _pack(tmp_path, name="pipeline", task="Classification", out_dim=3):
    spec = tmp_path / "rkme.json"
    spec.write_text(bp.spec_json())
    est, data = _fitted(name)
    out = ok.pack_onnx(data, spec, bp.semantic(task, out_dim), tmp_path / f"{name}.zip")
    return est, data, out


def test_pack_onnx_writes_a_package_that_reads_back(tmp_path):
    from learnware_cli.market import package as pkg

    est, data, out = _pack(tmp_path)
    scan = pkg.scan_archive(out)
    assert set(scan.files) == {"learnware.yaml", "model.onnx", "rkme.json", "semantic_specification.json", "requirements.txt"}
    raw = pkg.load_manifest_yaml(pkg.read_member(out, scan, "learnware.yaml", 10_000, "manifest").decode())
    assert ok.is_onnx_manifest(raw)
    manifest = ok.read_onnx_manifest(out, scan)
    assert (manifest.input_shape, manifest.output_shape) == ((DIM,), (1,))
    model_bytes = ok.read_onnx_model(out, scan, manifest)
    assert model_bytes == data
    model = ok.OnnxModel(model_bytes, input_shape=manifest.input_shape, output_shape=manifest.output_shape)
    x = bp.data()[0]
    np.testing.assert_array_equal(model.predict(x), np.searchsorted(est.classes_, est.predict(x)))
    spec = pkg.read_spec(out, scan, manifest)  # duck-typed: spec_file is all it reads
    assert spec.dim == DIM
    semantic = pkg.read_semantic_raw(out, scan)
    assert semantic["Output"]["Dimension"] == 3
    # deterministic: the same inputs give the same bytes
    again = ok.pack_onnx(data, tmp_path / "rkme.json", bp.semantic("Classification", 3), tmp_path / "again.zip")
    assert again.read_bytes() == out.read_bytes()
    with zipfile.ZipFile(out) as zf:
        assert all(i.date_time == (2020, 1, 1, 0, 0, 0) for i in zf.infolist())


def test_pack_onnx_checks_dimensions_and_describes_classes(tmp_path):
    from learnware_cli.errors import InputError

    with pytest.raises(InputError, match="Output.Dimension is 2 but the model has 3 classes"):
        _pack(tmp_path, "pipeline", "Classification", 2)
    with pytest.raises(InputError, match="Task is Regression"):
        _pack(tmp_path, "pipeline", "Regression", 1)
    sem = bp.semantic("Classification", 3)
    sem["Output"].pop("Description", None)
    spec = tmp_path / "rkme.json"
    out = ok.pack_onnx(_fitted("pipeline")[1], spec, sem, tmp_path / "described.zip")
    import json

    with zipfile.ZipFile(out) as zf:
        described = json.loads(zf.read("semantic_specification.json"))["Output"]["Description"]
    assert described == {"0": "high", "1": "low", "2": "mid"}  # sklearn's sorted classes_


def test_onnx_package_with_code_is_refused(tmp_path):
    from learnware_cli.market import package as pkg

    _, _, out = _pack(tmp_path, "ridge", "Regression", 1)
    with zipfile.ZipFile(out, "a") as zf:
        zf.writestr("__init__.py", "import os\n")
    with pytest.raises(RejectedError, match="carries no code"):
        ok.read_onnx_manifest(out, pkg.scan_archive(out))


def test_pack_estimator_onnx(tmp_path):
    from learnware_cli.market import package as pkg

    spec = tmp_path / "rkme.json"
    spec.write_text(bp.spec_json())
    est = _fitted("logistic")[0]
    out = ok.pack_estimator_onnx(est, spec, bp.semantic("Classification", 2), tmp_path / "est.zip")
    scan = pkg.scan_archive(out)
    assert pkg.read_semantic_raw(out, scan)["Output"]["Description"] == {"0": "3", "1": "7"}  # class values, as pack_sklearn
    model = ok.OnnxModel(ok.read_onnx_model(out, scan, ok.read_onnx_manifest(out, scan)))
    assert set(np.unique(model.predict(bp.data()[0]))) == {0, 1}
    with pytest.raises(ok.ConversionError):
        ok.pack_estimator_onnx(_Custom(), spec, bp.semantic("Classification", 2), tmp_path / "custom.zip")


def _endless_loop() -> bytes:
    """A valid graph that loops 10**9 times: data can still burn CPU, so calls need a timeout."""
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x_in", "W"], ["x_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [None, DIM]),
        ],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [None, DIM])],
    )
    return _graph_model(
        [helper.make_node("Loop", ["M", "", "X"], ["Y"], body=body)],
        [_x()],
        [_y(shape=(None, DIM))],
        [numpy_helper.from_array(np.array(10**9, dtype=np.int64), "M"), numpy_helper.from_array(np.eye(DIM, dtype=np.float32), "W")],
    ).SerializeToString()


def test_timeout_stops_a_long_run():
    import time

    model = ok.OnnxModel(_endless_loop(), timeout=0.3)
    started = time.perf_counter()
    with pytest.raises(WorkerError) as info:
        model.predict(np.ones((100, DIM)))
    assert info.value.kind == "timeout" and time.perf_counter() - started < 5
