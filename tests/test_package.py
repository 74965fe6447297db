"""Package archives (package.py), semantic specs (semantic.py) and packing (pack.py).

Nothing here runs model code: model checks live in test_checks.py.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import badpackages as bp
from learnware_cli.errors import InputError, RejectedError
from learnware_cli.market.package import PackageLimits, extract_package, inspect_package, load_manifest_yaml
from learnware_cli.market.semantic import VOCABULARY, build_semantic, validate_semantic

ARCHIVE_CASES = [case for case in bp.BAD_CASES if case.archive_level]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corpus")


@pytest.fixture(scope="module")
def good_zip(corpus) -> Path:
    return bp.good_sklearn_zip(corpus / "good")


@pytest.fixture(scope="module")
def beimingwu_zip(corpus) -> Path:
    return bp.beimingwu_zip(corpus / "beimingwu")


# --------------------------------------------------------------------------- good packages


def test_packed_sklearn_package_is_complete(good_zip):
    info = inspect_package(good_zip)
    assert set(info.scan.files) == {
        "learnware.yaml",
        "__init__.py",
        "model.joblib",
        "rkme.json",
        "semantic_specification.json",
        "requirements.txt",
    }
    assert info.scan.root == ""
    assert info.manifest.class_name == "SklearnLearnware"
    assert info.manifest.kwargs["input_shape"] == [bp.DIM]
    assert info.manifest.kwargs["output_shape"] == [1]  # a classifier predicts class indices
    assert info.spec.dim == bp.DIM and info.spec.size == bp.K
    assert info.semantic["Output"] == {"Dimension": 2, "Description": {"0": "0", "1": "1"}}
    assert "scikit-learn==" in info.requirements
    assert info.warnings == []


def test_reference_format_package_under_top_folder(beimingwu_zip):
    info = inspect_package(beimingwu_zip)
    assert info.scan.root == "my_learnware/"
    assert "model.pkl" in info.scan.files
    assert info.manifest.class_name == "MyModel"
    assert info.manifest.kwargs == {"input_shape": (bp.DIM,), "output_shape": (1,)}
    assert info.requirements_file == "environment.yaml"
    assert info.semantic["Task"]["Values"] == ["Regression"]


def test_extract_strips_top_folder_and_writes_plain_files(beimingwu_zip, tmp_path):
    dest = extract_package(beimingwu_zip, tmp_path / "pkg")
    names = sorted(p.name for p in dest.iterdir())
    assert names == sorted(["learnware.yaml", "__init__.py", "model.pkl", "rkme.json", "semantic_specification.json", "environment.yaml"])
    assert all(p.is_file() and not p.is_symlink() for p in dest.iterdir())


def test_extract_refuses_a_non_empty_destination(good_zip, tmp_path):
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(RejectedError) as err:
        extract_package(good_zip, dest)
    assert err.value.check == "archive" and "not an empty folder" in err.value.reason
    assert (dest / "keep.txt").read_text() == "mine"


# --------------------------------------------------------------------------- bad archives and manifests


@pytest.mark.parametrize("case", ARCHIVE_CASES, ids=lambda c: c.name)
def test_inspect_rejects(case, corpus):
    zip_path = case.build(_case_dir(corpus, case.name))
    with pytest.raises(RejectedError) as err:
        inspect_package(zip_path, case.limits)
    assert err.value.check == case.check, err.value.message
    assert case.needle in err.value.reason, err.value.message
    assert "\n" not in err.value.message


@pytest.mark.parametrize("case", [c for c in ARCHIVE_CASES if c.check == "archive"], ids=lambda c: c.name)
def test_extract_rejects_and_leaves_nothing(case, corpus, tmp_path):
    zip_path = case.build(_case_dir(corpus, "x-" + case.name))
    dest = tmp_path / "sandbox" / "pkg"
    with pytest.raises(RejectedError) as err:
        extract_package(zip_path, dest, case.limits)
    assert err.value.check == "archive"
    assert not dest.exists()
    assert not list((tmp_path / "sandbox").iterdir())
    assert not (tmp_path / "evil.py").exists()


def test_semantic_and_spec_defects_found_by_inspect(corpus):
    by_name = {c.name: c for c in bp.BAD_CASES}
    for name, check in (("bad-semantic-value", "semantic"), ("nan-spec", "spec")):
        case = by_name[name]
        with pytest.raises(RejectedError) as err:
            inspect_package(case.build(_case_dir(corpus, "i-" + name)))
        assert err.value.check == check and case.needle in err.value.reason


def test_stream_cap_holds_even_if_header_checks_are_fooled(corpus, monkeypatch):
    """Caps are enforced on the streamed bytes, not only on the sizes the headers declare."""
    from learnware_cli.market import package

    monkeypatch.setattr(package, "_check_declared_size", lambda *a: None)  # as if every header lied
    path = bp.write_zip(_case_dir(corpus, "cap") / "big.zip", bp.members(**{"weights.bin": bytes(5 * bp.MiB)}))
    limits = PackageLimits(max_file_bytes=bp.MiB, max_total_bytes=8 * bp.MiB)
    for run in (lambda: inspect_package(path, limits), lambda: extract_package(path, corpus / "cap" / "out", limits)):
        with pytest.raises(RejectedError) as err:
            run()
        assert err.value.check == "archive" and "more than 1048576 bytes" in err.value.reason
    assert not (corpus / "cap" / "out").exists()


def test_oversized_directory_refused_before_parsing(corpus):
    """The central directory is sized from the end record before zipfile builds its entry list."""
    files = bp.members(**{f"{'n' * 3000}{i}.txt": "x" for i in range(8)})
    path = bp.write_zip(_case_dir(corpus, "cd") / "long-names.zip", files)
    with pytest.raises(RejectedError, match="archive directory is .* too large for 15 entries"):
        inspect_package(path, PackageLimits(max_entries=15))
    with pytest.raises(RejectedError, match="archive has 13 entries, the limit is 10"):
        inspect_package(path, PackageLimits(max_entries=10))


def _case_dir(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- YAML


def test_yaml_tuple_tag_becomes_a_tuple():
    obj = load_manifest_yaml("a: !!python/tuple [7]\nb: !!python/tuple\n- 1\n- 2\n")
    assert obj == {"a": (7,), "b": (1, 2)}


@pytest.mark.parametrize(
    "text, needle",
    [
        ("x: !!python/object/apply:os.system ['id']", "!!python/object/apply:os.system"),
        ("x: !!python/name:os.system ''", "!!python/name:os.system"),
        ("x: !!python/object:collections.OrderedDict {}", "!!python/object:collections.OrderedDict"),
        ("x: !!python/module:os ''", "!!python/module:os"),
        ("x: !custom 1", "disallowed construct"),
        ("a: &a [1, 2]\nb: *a", "aliases"),
        ("model: [unclosed", "not valid YAML"),
    ],
)
def test_yaml_refuses_everything_else(text, needle):
    with pytest.raises(RejectedError) as err:
        load_manifest_yaml(text)
    assert err.value.check == "manifest"
    assert needle in err.value.reason
    assert "\n" not in err.value.message


@pytest.mark.parametrize(
    "yaml_text, needle",
    [
        ("- 1\n", "must be a mapping"),
        ("stat_specifications: []\n", "no 'model' section"),
        ("model: {class_name: 'os.system'}\nstat_specifications: []\n", "class_name"),
        ("model: {class_name: M, kwargs: [1]}\nstat_specifications: []\n", "kwargs"),
        ("model: {class_name: M}\nstat_specifications: []\n", "stat_specifications"),
        ("model: {class_name: M}\nstat_specifications: [{class_name: Other, file_name: a.json}]\n", "RKMETableSpecification"),
        ("model: {class_name: M}\nstat_specifications: [{class_name: RKMETableSpecification, file_name: ../x.json}]\n", "'..'"),
    ],
)
def test_manifest_structure_errors(yaml_text, needle, corpus):
    path = bp.write_zip(_case_dir(corpus, "manifest") / f"m{abs(hash(yaml_text))}.zip", bp.members(**{"learnware.yaml": yaml_text}))
    with pytest.raises(RejectedError) as err:
        inspect_package(path)
    assert err.value.check == "manifest" and needle in err.value.reason, err.value.message


# --------------------------------------------------------------------------- semantic


def test_semantic_normalises_spelling_and_tags():
    sem = bp.semantic()
    sem["Task"] = {"Values": ["classification"], "Type": "class"}
    sem["Scenario"] = {"Values": ["health", "Business", "Health"], "Type": "Tag"}
    sem["Input"]["Dimension"] = 5.0
    out = validate_semantic(sem)
    assert out["Task"] == {"Values": ["Classification"], "Type": "Class"}
    assert out["Scenario"]["Values"] == ["Health", "Business"]
    assert out["Input"]["Dimension"] == 5


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"Task": {"Values": ["Clasification"], "Type": "Class"}}, "Task value 'Clasification' is not one of"),
        ({"License": {"Values": ["MIT", "GPL-3.0"], "Type": "Class"}}, "License takes exactly one value"),
        ({"Scenario": {"Values": [], "Type": "Tag"}}, "Scenario needs at least one value"),
        ({"Scenario": {"Values": ["Space"], "Type": "Tag"}}, "Scenario value 'Space'"),
        ({"Data": {"Values": ["Table"], "Type": "Tag"}}, "Data Type must be 'Class'"),
        ({"Name": {"Values": "  ", "Type": "String"}}, "Name must not be empty"),
        ({"Senario": {"Values": ["Business"], "Type": "Tag"}}, "unknown field 'Senario'"),
        ({"Output": {"Dimension": 1, "Description": {}}}, "at least 2"),
        ({"Output": {"Dimension": 0}}, "Output Dimension must be a positive integer"),
        ({"Input": {"Dimension": 5, "Description": {"7": "x"}}}, "outside [0, 5)"),
        ({"Input": None}, "Input (with Dimension) is required"),
    ],
)
def test_semantic_rejections_name_field_and_value(change, needle):
    sem = bp.semantic()
    sem.update(change)
    sem = {k: v for k, v in sem.items() if v is not None}
    with pytest.raises(RejectedError) as err:
        validate_semantic(sem)
    assert err.value.check == "semantic"
    assert needle in err.value.reason, err.value.reason
    assert "\n" not in err.value.message


def test_semantic_suggests_the_close_value():
    sem = bp.semantic()
    sem["Task"]["Values"] = ["Regresion"]
    with pytest.raises(RejectedError, match="did you mean 'Regression'"):
        validate_semantic(sem)


def test_build_semantic_from_flags():
    sem = build_semantic(
        "churn", "", "table", "Regression", "scikit-learn", "Business, Financial", "Apache-2.0", 3, 1,
        input_desc=["age", "income", "tenure"],
    )
    assert sem["Scenario"]["Values"] == ["Business", "Financial"]
    assert sem["Input"]["Description"] == {"0": "age", "1": "income", "2": "tenure"}
    assert sem["Output"] == {"Dimension": 1, "Description": {}}
    # what learnware 0.4's EasySemanticChecker demands: a non-empty Description, Model = Others
    assert sem["Description"]["Values"] == "churn"
    assert sem["Model"] == {"Values": ["Others"], "Type": "Optional"}
    assert set(VOCABULARY) == {"Data", "Task", "Library", "Scenario", "License"}


# --------------------------------------------------------------------------- pack


def test_pack_string_labels_are_described(tmp_path):
    import joblib
    from sklearn.linear_model import LogisticRegression

    from learnware_cli.market.pack import pack_sklearn

    x, y, _ = bp.data()
    labels = np.array(["no", "yes"])[y]
    joblib.dump(LogisticRegression().fit(x, labels), tmp_path / "m.joblib")
    (tmp_path / "rkme.json").write_text(bp.spec_json())
    out = pack_sklearn(tmp_path / "m.joblib", tmp_path / "rkme.json", bp.semantic(), tmp_path / "out.zip", requirements=["scikit-learn"])
    with zipfile.ZipFile(out) as zf:
        sem = json.loads(zf.read("semantic_specification.json"))
        assert zf.read("requirements.txt") == b"scikit-learn\n"
    assert sem["Output"]["Description"] == {"0": "no", "1": "yes"}


def test_pack_refuses_mismatched_dimensions(tmp_path):
    import joblib
    from sklearn.linear_model import Ridge

    from learnware_cli.market.pack import pack_sklearn

    x, _, y = bp.data()
    joblib.dump(Ridge().fit(x[:, :3], y), tmp_path / "m.joblib")
    (tmp_path / "rkme.json").write_text(bp.spec_json())
    with pytest.raises(InputError, match="takes 3 features but the specification has dimension 5"):
        pack_sklearn(tmp_path / "m.joblib", tmp_path / "rkme.json", bp.semantic("Regression", 1), tmp_path / "out.zip")
    assert not (tmp_path / "out.zip").exists()
