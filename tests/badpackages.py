"""Builds, at test time, a corpus of learnware packages: good ones and hostile ones.

Nothing is checked in as a binary: every zip is written into a pytest tmp dir
from the recipes below, so each case documents exactly what is wrong with it.

* ``good_sklearn_zip``     - made by pack_sklearn (LogisticRegression or Ridge);
* ``beimingwu_zip``        - written the way the reference template does it
                             (``from learnware.model import BaseModel``,
                             ``!!python/tuple`` shapes, model.pkl via pickle,
                             files under one top folder);
* ``BAD_CASES``            - one recipe per defect, with the check that must
                             reject it and a word its message must contain.

Bad models use a tiny numpy-only model (fast to start) so the corpus stays
cheap on a 2-core machine.
"""

from __future__ import annotations

import functools
import json
import pickle
import textwrap
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from learnware_cli.market.package import PackageLimits
from learnware_cli.market.semantic import build_semantic

GAMMA = 0.1
DIM = 5
K = 10
N_CLASSES = 2
MiB = 1024 * 1024

LEARNWARE_YAML = """\
model:
  class_name: Model
  kwargs: {}
stat_specifications:
  - module_path: learnware.specification
    class_name: RKMETableSpecification
    file_name: rkme.json
    kwargs: {}
"""

NUMPY_MODEL = """\
import numpy as np
from learnware.model.base import BaseModel


class Model(BaseModel):
    def __init__(self):
        super().__init__(input_shape=({dim},), output_shape={output_shape})

    def fit(self, X, y):
        pass

    def predict(self, X):
{body}

    def finetune(self, X, y):
        pass
"""

GOOD_BODY = "return (np.asarray(X)[:, 0] > 0).astype(np.int64)"


# --------------------------------------------------------------------------- shared assets


@functools.lru_cache(maxsize=None)
def data(n: int = 200, seed: int = 0):
    """(X, class labels 0/1, regression target) with DIM columns."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM))
    y_class = (x[:, 0] + 0.3 * x[:, 1] > 0).astype(np.int64)
    y_reg = x @ np.arange(1.0, DIM + 1.0) + 0.1 * rng.normal(size=n)
    return x, y_class, y_reg


@functools.lru_cache(maxsize=None)
def spec_dict() -> dict:
    """The RKME (K=10, gamma 0.1) of data(), as the reference json dict."""
    from learnware_cli.rkme import fit_rkme

    return fit_rkme(data()[0], k=K, gamma=GAMMA).to_json_dict()


def spec_json(**changes) -> str:
    obj = json.loads(json.dumps(spec_dict()))
    obj.update(changes)
    return json.dumps(obj)


def semantic(task: str = "Classification", output_dim: int = N_CLASSES, **changes) -> dict:
    obj = build_semantic(
        name="test model",
        description="built by tests/badpackages.py",
        data="Table",
        task=task,
        library="Scikit-learn",
        scenarios=["Business"],
        license="MIT",
        input_dim=DIM,
        output_dim=output_dim,
        input_desc=[f"feature {i}" for i in range(DIM)],
    )
    obj.update(changes)
    return obj


def numpy_model(body: str = GOOD_BODY, output_shape: str = "(1,)", prelude: str = "") -> str:
    code = NUMPY_MODEL.format(dim=DIM, output_shape=output_shape, body=textwrap.indent(body, " " * 8))
    return prelude + code


def members(**overrides) -> dict:
    """A complete good numpy-model package as {name: content}; override or drop (None) entries."""
    files = {
        "learnware.yaml": LEARNWARE_YAML,
        "__init__.py": numpy_model(),
        "rkme.json": spec_json(),
        "semantic_specification.json": json.dumps(semantic()),
        "requirements.txt": "numpy\n",
    }
    for name, content in overrides.items():
        if content is None:
            files.pop(name, None)
        else:
            files[name] = content
    return files


def write_zip(path: Path, files: dict, top: str = "", compression=zipfile.ZIP_DEFLATED) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on the duplicate-name case
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            for name, content in (files.items() if isinstance(files, dict) else files):
                data_ = content.encode() if isinstance(content, str) else content
                zf.writestr(top + name, data_)
    return path


# --------------------------------------------------------------------------- good packages


def good_sklearn_zip(tmp: Path, task: str = "Classification") -> Path:
    """A package made by pack_sklearn from a small LogisticRegression (or Ridge)."""
    import joblib
    from sklearn.linear_model import LogisticRegression, Ridge

    from learnware_cli.market.pack import pack_sklearn

    tmp.mkdir(parents=True, exist_ok=True)
    x, y_class, y_reg = data()
    model = LogisticRegression().fit(x, y_class) if task == "Classification" else Ridge().fit(x, y_reg)
    joblib.dump(model, tmp / "model.joblib")
    (tmp / "rkme.json").write_text(spec_json())
    sem = semantic(task=task, output_dim=N_CLASSES if task == "Classification" else 1)
    return pack_sklearn(tmp / "model.joblib", tmp / "rkme.json", sem, tmp / f"good-{task.lower()}.zip")


BEIMINGWU_YAML = """\
model:
  class_name: MyModel
  kwargs:
    input_shape: !!python/tuple
    - {dim}
    output_shape: !!python/tuple [1]
stat_specifications:
- module_path: learnware.specification
  class_name: RKMETableSpecification
  file_name: rkme.json
  kwargs: {{}}
"""

BEIMINGWU_INIT = """\
import os
import pickle

import numpy as np

from learnware.model import BaseModel


class MyModel(BaseModel):
    def __init__(self, input_shape, output_shape):
        super(MyModel, self).__init__(input_shape=input_shape, output_shape=output_shape)
        dir_path = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(dir_path, "model.pkl"), "rb") as f:
            self.model = pickle.load(f)

    def fit(self, X: np.ndarray, y: np.ndarray):
        pass

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X)

    def finetune(self, X: np.ndarray, y: np.ndarray):
        pass
"""


def beimingwu_zip(tmp: Path) -> Path:
    """A reference-format regression learnware under a top folder, model pickled."""
    from sklearn.linear_model import Ridge

    tmp.mkdir(parents=True, exist_ok=True)
    x, _, y_reg = data()
    files = {
        "learnware.yaml": BEIMINGWU_YAML.format(dim=DIM),
        "__init__.py": BEIMINGWU_INIT,
        "model.pkl": pickle.dumps(Ridge().fit(x, y_reg)),
        "rkme.json": spec_json(),
        "semantic_specification.json": json.dumps(semantic(task="Regression", output_dim=1)),
        "environment.yaml": "name: lw\ndependencies:\n  - python=3.11\n  - pip:\n    - scikit-learn\n",
    }
    return write_zip(tmp / "beimingwu.zip", files, top="my_learnware/")


# --------------------------------------------------------------------------- bad packages


@dataclass
class BadCase:
    """One defect: how to build it, which check rejects it, a word the message names."""

    name: str
    check: str
    needle: str
    build: Callable[[Path], Path]
    limits: Optional[PackageLimits] = None
    options: dict = field(default_factory=dict)  # extra check_package kwargs (timeout, memory_mb)

    @property
    def archive_level(self) -> bool:
        return self.check in ("archive", "manifest")


def _zip(name: str, **overrides) -> Callable[[Path], Path]:
    return lambda tmp: write_zip(tmp / f"{name}.zip", members(**overrides))


def _raw(name: str, content: bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / f"{name}.zip"
        path.write_bytes(content)
        return path

    return build


def _truncated(tmp: Path) -> Path:
    full = write_zip(tmp / "full.zip", members())
    data_ = full.read_bytes()
    path = tmp / "truncated.zip"
    path.write_bytes(data_[: len(data_) // 2])
    return path


def _with_entries(name: str, extra: list) -> Callable[[Path], Path]:
    """A good package plus raw (ZipInfo | name, bytes) entries appended."""

    def build(tmp: Path) -> Path:
        path = write_zip(tmp / f"{name}.zip", members())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with zipfile.ZipFile(path, "a") as zf:
                for info, content in extra:
                    zf.writestr(info, content)
        return path

    return build


def _symlink_info() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("model_link")
    info.create_system = 3  # unix
    info.external_attr = 0o120777 << 16
    return info


def _many_entries(tmp: Path) -> Path:
    files = members()
    files.update({f"data/part{i:04d}.txt": "x" for i in range(PackageLimits().max_entries)})
    return write_zip(tmp / "many.zip", files)


def _ratio_bomb(tmp: Path) -> Path:
    """20 MiB of zeros: deflates ~1000:1, far over the ratio limit with default limits."""
    return write_zip(tmp / "bomb.zip", members(**{"weights.bin": bytes(20 * MiB)}))


def _size_bomb(tmp: Path) -> Path:
    """3 MiB of zeros against a 2 MiB total limit (see its BadCase limits)."""
    return write_zip(tmp / "size-bomb.zip", members(**{"weights.bin": bytes(3 * MiB)}))


def _lying_header(tmp: Path) -> Path:
    """Central directory claims 100 bytes; the deflate stream holds 5 MiB of zeros."""
    path = tmp / "lying.zip"
    files = members()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
        zf.writestr("weights.bin", bytes(5 * MiB))
        zf.filelist[-1].file_size = 100  # written into the central directory on close
    return path


def _duplicate(tmp: Path) -> Path:
    entries = list(members().items()) + [("__init__.py", numpy_model(body="return np.zeros(len(X))"))]
    return write_zip(tmp / "duplicate.zip", entries)


def _spec_with(name: str, **changes) -> Callable[[Path], Path]:
    return lambda tmp: write_zip(tmp / f"{name}.zip", members(**{"rkme.json": spec_json(**changes)}))


def _nan_spec(tmp: Path) -> Path:
    obj = json.loads(spec_json())
    obj["z"][0][0] = float("nan")
    return write_zip(tmp / "nan-spec.zip", members(**{"rkme.json": json.dumps(obj)}))


def _wrong_dim_spec(tmp: Path) -> Path:
    obj = json.loads(spec_json())
    obj["z"] = [row[:-1] for row in obj["z"]]
    return write_zip(tmp / "wrong-dim-spec.zip", members(**{"rkme.json": json.dumps(obj)}))


def _scaled_beta(tmp: Path) -> Path:
    obj = json.loads(spec_json())
    obj["beta"] = [b * 0.5 for b in obj["beta"]]
    return write_zip(tmp / "beta-sum.zip", members(**{"rkme.json": json.dumps(obj)}))


def _negative_beta(tmp: Path) -> Path:
    obj = json.loads(spec_json())
    beta = obj["beta"]
    beta[0], beta[1] = beta[0] + 0.5, beta[1] - 0.5  # still sums to 1
    return write_zip(tmp / "negative-beta.zip", members(**{"rkme.json": json.dumps(obj)}))


def _bad_semantic(tmp: Path) -> Path:
    sem = semantic()
    sem["Task"] = {"Values": ["Clasification"], "Type": "Class"}
    return write_zip(tmp / "bad-semantic.zip", members(**{"semantic_specification.json": json.dumps(sem)}))


def _model(name: str, body: str = GOOD_BODY, output_shape: str = "(1,)", prelude: str = "") -> Callable[[Path], Path]:
    return _zip(name, **{"__init__.py": numpy_model(body=body, output_shape=output_shape, prelude=prelude)})


BAD_CASES = [
    # archive safety
    BadCase("not-a-zip", "archive", "not a zip", _raw("not-a-zip", b"this is plain text, not an archive\n" * 10)),
    BadCase("truncated-zip", "archive", "truncated", _truncated),
    BadCase("absolute-path", "archive", "absolute path", _with_entries("absolute", [("/etc/cron.d/evil", b"* * * * * root id")])),
    BadCase("dotdot-path", "archive", "'..'", _with_entries("dotdot", [("../../evil.py", b"print('escaped')")])),
    BadCase("backslash-path", "archive", "backslash", _with_entries("backslash", [("..\\..\\evil.py", b"x")])),
    BadCase("drive-letter", "archive", "drive letter", _with_entries("drive", [("C:/Windows/evil.dll", b"x")])),
    BadCase("symlink-entry", "archive", "symbolic link", _with_entries("symlink", [(_symlink_info(), b"/etc/passwd")])),
    BadCase("too-many-entries", "archive", "entries", _many_entries),
    BadCase("zip-bomb-ratio", "archive", "compression ratio", _ratio_bomb),
    BadCase("zip-bomb-size", "archive", "zip bomb", _size_bomb, limits=PackageLimits(max_total_bytes=2 * MiB, max_compression_ratio=1e9)),
    BadCase("lying-header", "archive", "corrupt", _lying_header),
    BadCase("duplicate-names", "archive", "duplicate", _duplicate),
    # manifest
    BadCase("missing-yaml", "manifest", "learnware.yaml not found", _zip("no-yaml", **{"learnware.yaml": None})),
    BadCase(
        "yaml-os-system",
        "manifest",
        "python/object/apply:os.system",
        _zip("yaml-exec", **{"learnware.yaml": LEARNWARE_YAML + "hook: !!python/object/apply:os.system ['touch /tmp/lw-pwned']\n"}),
    ),
    BadCase("missing-init", "manifest", "__init__.py", _zip("no-init", **{"__init__.py": None})),
    BadCase("missing-spec-file", "manifest", "rkme.json", _zip("no-spec", **{"rkme.json": None})),
    # semantic
    BadCase("bad-semantic-value", "semantic", "Clasification", _bad_semantic),
    BadCase("no-semantic", "semantic", "no semantic specification", _zip("no-semantic", **{"semantic_specification.json": None})),
    # spec
    BadCase("nan-spec", "spec", "finite", _nan_spec),
    BadCase("spec-wrong-dimension", "spec", "dimension", _wrong_dim_spec),
    BadCase("spec-other-gamma", "spec", "gamma", _spec_with("gamma", gamma=0.5)),
    BadCase("beta-not-summing-to-1", "spec", "sums to", _scaled_beta),
    BadCase("negative-beta", "spec", "negative", _negative_beta),
    # model
    BadCase("model-crashes-on-import", "model-load", "boom at import", _model("import-crash", prelude="raise RuntimeError('boom at import')\n")),
    BadCase("model-class-missing", "model-load", "no class", _zip("no-class", **{"__init__.py": "X = 1\n"})),
    BadCase("model-declares-wrong-input", "model-interface", "input_shape", _zip("wrong-input", **{"__init__.py": numpy_model().replace(f"input_shape=({DIM},)", "input_shape=(3,)")})),
    BadCase("model-declares-wrong-output", "model-interface", "output_shape", _model("wrong-declared-output", output_shape="(3,)")),
    BadCase("model-sleeps-forever", "model-predict", "timeout", _model("sleeper", body="import time\ntime.sleep(10**6)"), options={"timeout": 3}),
    BadCase("model-raises-in-predict", "model-predict", "bad predict", _model("raiser", body="raise ValueError('bad predict')")),
    BadCase("model-prints-megabytes", "model-predict", "stdout", _model("printer", body="print('x' * (4 * 1024 * 1024))\nreturn np.zeros(len(X), dtype=int)")),
    BadCase(
        "model-exhausts-memory",
        "model-predict",
        "MemoryError",
        _model("hog", body="block = np.ones(2**28)  # 2 GiB\nreturn np.zeros(len(X), dtype=int)"),
        options={"memory_mb": 1024},
    ),
    BadCase("model-kills-itself", "model-predict", "SIGKILL", _model("suicide", body="import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")),
    BadCase(
        "model-exits-with-message",
        "model-predict",
        "exit status 3): loading weights | fatal: weights corrupted",
        _model("exit", body="import os, sys\nsys.stderr.write('loading weights\\nfatal: weights corrupted\\n')\nos._exit(3)"),
    ),
    BadCase("model-segfaults", "model-predict", "SIGSEGV", _model("segv", body="import ctypes\nctypes.string_at(0)")),
    BadCase("output-wrong-rows", "model-output", "input rows", _model("rows", body="return np.zeros(len(X) - 1, dtype=int)")),
    BadCase("output-wrong-dim", "model-output", "shape", _model("dim", body="return np.zeros((len(X), 3))", output_shape=f"({N_CLASSES},)")),
    BadCase("output-labels-out-of-range", "model-output", "outside [0, 2)", _model("labels", body="return np.full(len(X), 5)")),
    BadCase("output-not-numeric", "model-output", "not numeric", _model("strings", body="return np.array(['yes'] * len(X), dtype=object)")),
    BadCase("output-nan", "model-output", "NaN", _model("nan", body="return np.full((len(X), 2), np.nan)", output_shape=f"({N_CLASSES},)")),
]


def good_numpy_zip(tmp: Path) -> Path:
    """The numpy-model package every bad case is a variation of (it passes every check)."""
    tmp.mkdir(parents=True, exist_ok=True)
    return write_zip(tmp / "good-numpy.zip", members())


# --------------------------------------------------------------------------- hostile sizes and numbers
# (appended for tests/test_hostile_inputs.py; each is rejected before any model runs)

HUGE_INT = "1" + "0" * 5000  # over Python's 4300-digit int conversion limit


def _with_raw(text: str, value: str) -> str:
    """JSON text with the placeholder string "@@" replaced by a raw token (json.dumps cannot write 1e400)."""
    return text.replace('"@@"', value)


def spec_with_raw(key: str, value: str) -> str:
    """The good RKME json with one top-level field set to a raw token."""
    return _with_raw(spec_json(**{key: "@@"}), value)


def spec_with_z(value: str) -> str:
    """The good RKME json with z[0][0] set to a raw token."""
    obj = json.loads(spec_json())
    obj["z"][0][0] = "@@"
    return _with_raw(json.dumps(obj), value)


def semantic_with_dimension(block: str, value: str) -> str:
    obj = semantic()
    obj[block]["Dimension"] = "@@"
    return _with_raw(json.dumps(obj), value)


def wide_members(input_dim: int = DIM, output_dim: int = N_CLASSES, k: int = 2) -> dict:
    """A self-consistent package of any width (model, spec and semantic spec agree): what a wide but
    honest-looking package looks like. Its spec is k zero points, so it stays small in the zip."""
    z = "[" + ", ".join(["0.0"] * input_dim) + "]"
    spec = {"type": "RKMETableSpecification", "gamma": GAMMA, "num_points": 100, "cuda_idx": -1, "device": "cpu", "z": "@@", "beta": [1.0 / k] * k}
    sem = build_semantic(
        name="wide", description="wide", data="Table", task="Classification", library="Others",
        scenarios=["Business"], license="MIT", input_dim=input_dim, output_dim=output_dim,
    )
    code = NUMPY_MODEL.format(dim=input_dim, output_shape="(1,)", body=" " * 8 + "return np.zeros(len(X), dtype=np.int64)")
    return members(**{
        "__init__.py": code,
        "rkme.json": _with_raw(json.dumps(spec), "[" + ", ".join([z] * k) + "]"),
        "semantic_specification.json": json.dumps(sem),
    })


def _wide(name: str, **sizes) -> Callable[[Path], Path]:
    return lambda tmp: write_zip(tmp / f"{name}.zip", wide_members(**sizes))


HOSTILE_CASES = [
    BadCase("spec-5000-digit-integer", "spec", "cannot be read", _zip("spec-bigint", **{"rkme.json": spec_with_raw("num_points", HUGE_INT)})),
    BadCase("spec-1e400-num-points", "spec", "num_points", _zip("spec-inf-count", **{"rkme.json": spec_with_raw("num_points", "1e400")})),
    BadCase("spec-400-digit-z", "spec", "too large", _zip("spec-long-z", **{"rkme.json": spec_with_z("1" + "0" * 400)})),
    BadCase("spec-z-1e39", "spec", "magnitude", _zip("spec-huge-z", **{"rkme.json": spec_with_z("1e39")})),
    BadCase("semantic-5000-digit-dimension", "semantic", "cannot be read", _zip("sem-bigint", **{"semantic_specification.json": semantic_with_dimension("Input", HUGE_INT)})),
    BadCase("semantic-5000-digit-string-dimension", "semantic", "positive integer", _zip("sem-bigstr", **{"semantic_specification.json": semantic_with_dimension("Input", json.dumps(HUGE_INT))})),
    BadCase("semantic-superscript-dimension", "semantic", "positive integer", _zip("sem-sup", **{"semantic_specification.json": semantic_with_dimension("Output", '"\\u00b2"')})),
    BadCase("semantic-1e400-dimension", "semantic", "positive integer", _zip("sem-inf", **{"semantic_specification.json": semantic_with_dimension("Output", "1e400")})),
    BadCase("yaml-5000-digit-kwarg", "manifest", "cannot be read", _zip("yaml-bigint", **{"learnware.yaml": LEARNWARE_YAML.replace("kwargs: {}", f"kwargs: {{seed: {HUGE_INT}}}", 1)})),
    BadCase("yaml-impossible-date", "manifest", "cannot be read", _zip("yaml-date", **{"learnware.yaml": LEARNWARE_YAML.replace("kwargs: {}", "kwargs: {since: 2001-13-45}", 1)})),
    BadCase("input-dimension-100000", "semantic", "max_input_dim", _wide("wide-input", input_dim=100_000)),
    BadCase("output-dimension-100000", "semantic", "max_output_dim", _wide("wide-output", output_dim=100_000)),
]
BAD_CASES += HOSTILE_CASES
