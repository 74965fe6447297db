"""Pack a fitted scikit-learn estimator into a reference-compatible learnware zip.

This runs on the developer's machine with the developer's own model, so it
may load the .joblib file (to read n_features_in_, classes_, output width).
The market never does: it checks the resulting zip with package.py and
runs the model only in a worker (worker.py).

Layout written (all at the zip root)::

    learnware.yaml  __init__.py  model.joblib  rkme.json
    semantic_specification.json  requirements.txt

``__init__.py``, ``learnware.yaml`` and ``requirements.txt`` come from the
templates in ``market_template/package/``.
"""

from __future__ import annotations

import json
import os
import string
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from learnware_cli.errors import InputError

MODEL_FILE = "model.joblib"
SPEC_FILE = "rkme.json"
TEMPLATE_FILES = ("__init__.py", "learnware.yaml", "requirements.txt")


def template_dir() -> Path:
    """market_template/package/: from the installed package, else from the source tree."""
    try:
        from importlib.resources import files

        candidate = Path(str(files("learnware_cli.market_template") / "package"))
        if (candidate / "learnware.yaml").is_file():
            return candidate
    except (ModuleNotFoundError, TypeError):
        pass
    candidate = Path(__file__).resolve().parents[2] / "market_template" / "package"
    if (candidate / "learnware.yaml").is_file():
        return candidate
    raise InputError("package templates (market_template/package) not found; is lw installed correctly?")


def _load_estimator(model_path: Path):
    import joblib

    if not model_path.is_file():
        raise InputError(f"{model_path}: no such file")
    try:
        return joblib.load(model_path)
    except Exception as exc:  # the developer's own file: report, do not crash
        raise InputError(f"{model_path}: cannot load with joblib ({type(exc).__name__}: {exc})") from None


def _output_width(estimator, sample: np.ndarray) -> int:
    """Columns a regressor predicts, found by running it on two spec points."""
    try:
        out = np.asarray(estimator.predict(sample))
    except Exception as exc:
        raise InputError(f"the estimator cannot predict on the specification's points ({type(exc).__name__}: {exc})") from None
    return 1 if out.ndim == 1 else int(np.prod(out.shape[1:]))


def _describe_estimator(estimator, spec, semantic: dict, sample=None) -> tuple[tuple, int, dict]:
    """(input_shape, output_shape width, semantic with Output filled/checked) for the estimator.

    Tables: input_shape (d,), checked against n_features_in_ and the spec;
    images: the sample images' (C, H, W); texts: (1,) (the model takes a list
    of str). sample: a few inputs the estimator can predict on (default: two
    of the table spec's points).
    """
    if not hasattr(estimator, "predict"):
        raise InputError(f"{type(estimator).__name__} has no predict method; is it a fitted estimator?")
    data_type = semantic["Data"]["Values"][0]
    if data_type == "Table":
        input_shape = (_input_width(estimator, spec),)
        sample = np.asarray(spec.z[:2], dtype=np.float64) if sample is None else sample
        declared_in = semantic.get("Input", {}).get("Dimension")
        if declared_in is not None and declared_in != input_shape[0]:
            raise InputError(f"semantic Input.Dimension is {declared_in} but the model takes {input_shape[0]} features")
    elif sample is None:
        raise InputError(f"packing a {data_type} model needs a few of its inputs to try it on (pack it with --data)")
    else:
        input_shape = tuple(int(s) for s in np.asarray(sample).shape[1:]) if data_type == "Image" else (1,)
    task = semantic["Task"]["Values"][0]
    classes = getattr(estimator, "classes_", None)
    if task == "Classification":
        if classes is None:
            raise InputError("Task is Classification but the estimator has no classes_ (is it a classifier?)")
        n_classes = len(classes)
        _check_output_dim(semantic, n_classes, "classes")
        out_desc = semantic["Output"].get("Description") or {str(i): str(c) for i, c in enumerate(classes)}
        semantic["Output"] = {"Dimension": n_classes, "Description": out_desc}
        return input_shape, 1, semantic
    if task == "Regression":
        width = _output_width(estimator, sample)
        _check_output_dim(semantic, width, "output columns")
        return input_shape, width, semantic
    return input_shape, _output_width(estimator, sample), semantic


def _input_width(estimator, spec) -> int:
    """The estimator's number of input features, which must be the specification's dimension."""
    n_in = getattr(estimator, "n_features_in_", None)
    if n_in is None:
        raise InputError(f"{type(estimator).__name__} has no n_features_in_; fit it before packing")
    if int(n_in) != spec.dim:
        raise InputError(f"the model takes {int(n_in)} features but the specification has dimension {spec.dim}")
    return int(n_in)


def infer_output_dim(model_path, spec, task: str, sample=None) -> int:
    """Output.Dimension for a model: its number of classes (Classification) or output columns.

    sample: a few inputs to run it on (default: two of a table spec's points).
    """
    estimator = _load_estimator(Path(model_path))
    if sample is None:
        _input_width(estimator, spec)
        sample = np.asarray(spec.z[:2], dtype=np.float64)
    classes = getattr(estimator, "classes_", None)
    if task.lower() == "classification" and classes is not None:
        return len(classes)
    return _output_width(estimator, sample)


def _check_output_dim(semantic: dict, actual: int, what: str) -> None:
    declared = semantic.get("Output", {}).get("Dimension")
    if declared is not None and declared != actual:
        raise InputError(f"semantic Output.Dimension is {declared} but the model has {actual} {what}")


def _requirements_text(requirements, values: dict) -> str:
    """requirements: None (template with this machine's versions), a file path, or a list of lines."""
    if requirements is None:
        text = (template_dir() / "requirements.txt").read_text()
        return string.Template(text).substitute(values)
    if isinstance(requirements, (str, os.PathLike)):
        path = Path(requirements)
        if not path.is_file():
            raise InputError(f"{path}: no such requirements file")
        return path.read_text()
    return "".join(f"{line.strip()}\n" for line in requirements if str(line).strip())


def _versions() -> dict:
    import joblib
    import sklearn

    return {"numpy_version": np.__version__, "sklearn_version": sklearn.__version__, "joblib_version": joblib.__version__}


def pack_sklearn(
    model_path,
    spec_path,
    semantic: dict,
    out_zip,
    requirements: Union[None, str, os.PathLike, Sequence[str]] = None,
    sample=None,
) -> Path:
    """Write a learnware zip for a fitted scikit-learn estimator saved with joblib.

    semantic: a semantic specification (e.g. from build_semantic); Input and
    Output dimensions are checked against the model (Classification: Output
    is the number of classes, filled with class names when not described).
    Input.Features (explicit market feature ids, build_semantic's
    input_features) is validated and written with the rest.
    The model is declared with input_shape (d,) for tables, (C, H, W) for
    images, (1,) for texts, and output_shape (1,) for a classifier (it
    predicts class indices) or (columns,) for a regressor. The spec may be of
    any kind (its type goes into learnware.yaml); image and text models need
    ``sample``, a few of their inputs, to be tried on.
    Returns the path of the zip, written atomically.
    """
    from learnware_cli.market.semantic import validate_semantic
    from learnware_cli.specs import load_spec

    model_path, out_zip = Path(model_path), Path(out_zip)
    spec = load_spec(spec_path)
    semantic = validate_semantic(semantic)
    if "Input" not in semantic and semantic["Data"]["Values"][0] == "Table":
        semantic["Input"] = {"Dimension": spec.dim, "Description": {}}
    estimator = _load_estimator(model_path)
    input_shape, output_dim, semantic = _describe_estimator(estimator, spec, semantic, sample)
    semantic = validate_semantic(semantic)
    templates = template_dir()
    values = {"input_shape": ", ".join(str(s) for s in input_shape), "output_dim": output_dim, "spec_type": spec.type_name, **_versions()}
    members = {
        "learnware.yaml": string.Template((templates / "learnware.yaml").read_text()).substitute(values).encode(),
        "__init__.py": (templates / "__init__.py").read_bytes(),
        SPEC_FILE: json.dumps(spec.to_json_dict(), separators=(",", ":")).encode(),
        "semantic_specification.json": json.dumps(semantic, indent=2, ensure_ascii=False).encode(),
        "requirements.txt": _requirements_text(requirements, values).encode(),
    }
    members[MODEL_FILE] = model_path.read_bytes()
    write_zip(out_zip, members)
    return out_zip


def write_zip(out_zip: Path, members: dict) -> None:
    """Write members ({name: bytes}, in order) as a zip at out_zip, atomically and byte-for-byte
    deterministically (fixed dates and modes: packs of the same inputs are identical)."""
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".lw-pack-", suffix=".zip", dir=out_zip.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(_entry(name), data)
        os.replace(tmp, out_zip)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _entry(name: str) -> zipfile.ZipInfo:
    """A plain file entry (0644, fixed date) so packs of the same inputs are byte-identical."""
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o100644 << 16
    return info
