"""Property-based: any damage to a bundle on disk ends in a BundleError naming it, or a bundle that loads intact."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lse_panel.cohort.bundle import Cohort, open_bundle
from lse_panel.cohort.schema import BundleError
from lse_panel.testing import tiny_cohort, write_cohort_bundle

EXAMPLES = settings.default.max_examples

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
NAMES = st.text(min_size=1, max_size=40) | st.sampled_from(["x" * 5000, "<img src=x onerror=alert(1)>", "名前", "a\u200bb"])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cohort_bundle(tiny_cohort(120, latent_dim=4), tmp_path_factory.mktemp("pristine") / "b")


@pytest.fixture
def fresh(pristine: Path, tmp_path_factory: pytest.TempPathFactory):
    """A function returning a new copy of the pristine bundle (one per hypothesis example)."""

    def copy() -> Path:
        target = tmp_path_factory.mktemp("damaged") / "b"
        shutil.copytree(pristine, target)
        return target

    return copy


def _files(bundle: Path) -> list[Path]:
    return sorted(p for p in bundle.rglob("*") if p.is_file())


def _manifest(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "manifest.json").read_text())


def _write_manifest(bundle: Path, manifest: Any) -> None:
    (bundle / "manifest.json").write_text(json.dumps(manifest, allow_nan=True))


def _key_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path of keys (and list indices) into a JSON document."""
    paths = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        paths.append(prefix + (key,))
        paths += _key_paths(child, prefix + (key,))
    return paths


def _parent(doc: Any, path: tuple) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


def assert_refused_clearly_or_intact(bundle: Path) -> Cohort | None:
    """The outcome every damaged bundle must have: a BundleError naming where, or a cohort that validates."""
    try:
        cohort = open_bundle(bundle)
    except BundleError as exc:
        message = str(exc)
        assert str(bundle) in message, message  # names the bundle (file or manifest)
        assert "\n" not in message.strip() or "Traceback" not in message
        return None
    cohort.validate()
    n = cohort.n_subjects
    assert len(cohort.ids) == n
    for name in cohort.phenotype_specs:
        assert cohort.phenotype(name).shape == (n,)
    for key, coords in cohort.projections.items():
        assert coords.shape == (n, 2) and np.isfinite(coords).all(), key
    return cohort


@settings(max_examples=EXAMPLES // 4)
@given(data=st.data())
def test_truncated_file(fresh, data) -> None:
    bundle = fresh()
    target = data.draw(st.sampled_from(_files(bundle)), label="file")
    content = target.read_bytes()
    keep = data.draw(st.integers(0, max(0, len(content) - 1)), label="bytes kept")
    target.write_bytes(content[:keep])
    assert_refused_clearly_or_intact(bundle)


DTYPES = ["float64", "float16", "int32", "int64", "int8", "uint8", "bool", "<U4", "complex64", "datetime64[s]"]


@settings(max_examples=EXAMPLES // 4)
@given(data=st.data())
def test_column_rewritten_with_another_dtype_or_shape(fresh, data) -> None:
    bundle = fresh()
    target = data.draw(st.sampled_from([p for p in _files(bundle) if p.suffix == ".npy"]), label="column")
    values = original = np.load(target)
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    reshape = data.draw(st.sampled_from(["same", "flat", "short", "long", "2d"]), label="shape")
    try:
        with warnings.catch_warnings():  # overflowing casts are the point here
            warnings.simplefilter("ignore")
            values = values.astype(dtype)
    except (TypeError, ValueError):
        values = np.zeros(values.shape, dtype=dtype)
    values = {"same": values, "flat": values.ravel(), "short": values[:-1], "long": np.concatenate([values, values[:1]]),
              "2d": values.reshape(len(values), -1)}[reshape]
    np.save(target, values)
    cohort = assert_refused_clearly_or_intact(bundle)
    if cohort is not None:  # accepted only if the column still is what the manifest promises (ids: any int or text)
        written = np.load(target)
        assert target.name == "ids.npy" or (written.dtype == original.dtype and written.shape == original.shape)


@settings(max_examples=EXAMPLES // 4)
@given(data=st.data())
def test_non_finite_values(fresh, data) -> None:
    bundle = fresh()
    floats = [p for p in _files(bundle) if p.suffix == ".npy" and np.load(p).dtype.kind == "f"]
    target = data.draw(st.sampled_from(floats), label="column")
    values = np.load(target)
    bad = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]), label="value")
    rows = data.draw(st.lists(st.integers(0, len(values) - 1), min_size=1, max_size=5), label="rows")
    values[rows] = bad
    np.save(target, values)
    cohort = assert_refused_clearly_or_intact(bundle)
    if target.parent.name == "projections":
        assert cohort is None  # every subject needs a finite position
    if cohort is not None and target.parent.name == "phenotypes" and not np.isnan(bad):
        pytest.fail(f"an infinite phenotype value in {target.name} was accepted")


@settings(max_examples=EXAMPLES // 5)
@given(kind=st.sampled_from(["duplicate", "missing", "extra", "float", "negative-size"]), data=st.data())
def test_damaged_ids(fresh, kind: str, data) -> None:
    bundle = fresh()
    ids = np.load(bundle / "ids.npy")
    i, j = data.draw(st.lists(st.integers(0, len(ids) - 1), min_size=2, max_size=2, unique=True), label="rows")
    if kind == "duplicate":
        ids[j] = ids[i]
    elif kind == "missing":
        ids = np.delete(ids, i)
    elif kind == "extra":
        ids = np.append(ids, ids.max() + 1)
    elif kind == "float":
        ids = ids.astype(np.float64)
    np.save(bundle / "ids.npy", ids)
    if kind == "negative-size":
        manifest = _manifest(bundle)
        manifest["n_subjects"] = -1
        _write_manifest(bundle, manifest)
    assert assert_refused_clearly_or_intact(bundle) is None


@settings(max_examples=EXAMPLES // 2)
@given(data=st.data())
def test_manifest_field_removed(fresh, data) -> None:
    bundle = fresh()
    manifest = _manifest(bundle)
    path = data.draw(st.sampled_from(_key_paths(manifest)), label="field")
    del _parent(manifest, path)[path[-1]]
    _write_manifest(bundle, manifest)
    assert_refused_clearly_or_intact(bundle)


@settings(max_examples=EXAMPLES // 2)
@given(data=st.data(), value=JSON_VALUES)
def test_manifest_field_replaced(fresh, data, value) -> None:
    bundle = fresh()
    manifest = _manifest(bundle)
    path = data.draw(st.sampled_from(_key_paths(manifest)), label="field")
    _parent(manifest, path)[path[-1]] = value
    _write_manifest(bundle, manifest)
    assert_refused_clearly_or_intact(bundle)


@settings(max_examples=EXAMPLES // 5)
@given(document=JSON_VALUES)
def test_manifest_replaced_by_any_json(fresh, document) -> None:
    bundle = fresh()
    _write_manifest(bundle, document)
    assert assert_refused_clearly_or_intact(bundle) is None


@settings(max_examples=EXAMPLES // 5)
@given(name=NAMES, data=st.data())
def test_phenotype_renamed(fresh, name: str, data) -> None:
    bundle = fresh()
    manifest = _manifest(bundle)
    old = data.draw(st.sampled_from(sorted(manifest["phenotypes"])), label="phenotype")
    entry = manifest["phenotypes"].pop(old)
    manifest["phenotypes"][name] = {**entry, "name": name}
    _write_manifest(bundle, manifest)
    cohort = assert_refused_clearly_or_intact(bundle)
    if cohort is not None:
        np.testing.assert_array_equal(cohort.phenotype(name), np.load(bundle / entry["file"]))


@pytest.mark.parametrize("file", ["../outside.npy", "/etc/hostname", "phenotypes/../../outside.npy"])
def test_manifest_may_not_name_files_outside_the_bundle(fresh, file: str) -> None:
    bundle = fresh()
    np.save(bundle.parent / "outside.npy", np.load(bundle / "phenotypes" / "age.npy"))
    manifest = _manifest(bundle)
    manifest["phenotypes"]["age"]["file"] = file
    _write_manifest(bundle, manifest)
    with pytest.raises(BundleError, match="outside the bundle"):
        open_bundle(bundle)


def test_build_temporaries_are_removed_but_not_the_subgroup_store_s(fresh) -> None:
    """What a SIGKILL leaves (tests/benchmarks/faults_build.py found 30 such files in 40 kills on 941f057)."""
    from lse_panel.cohort.bundle_writer import remove_build_temporaries

    bundle = fresh()
    stale = [bundle / "latents" / ".ecg.1a2b3c4d.npy", bundle / "projections" / ".fused__pca.npy.99.tmp",
             bundle / ".manifest.json.77.tmp"]
    saving = bundle / ".subgroups.json.55.tmp"  # an app may be saving a subgroup right now
    for path in [*stale, saving]:
        path.write_bytes(b"partial")
    assert sorted(remove_build_temporaries(bundle)) == sorted(stale)
    assert not any(p.exists() for p in stale) and saving.exists()
    assert assert_refused_clearly_or_intact(bundle) is not None
