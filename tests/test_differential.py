"""Differential check: on every bundle fixture and corpus bundle, ckpt-tools reads exactly what TensorFlow reads.

Keys, shapes and dtypes against `tf.train.load_checkpoint` (variable-to-shape and -dtype maps), and every
tensor's value bit for bit against `get_tensor`, through the public `open_checkpoint` API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ckpt_tools.readers.registry import open_checkpoint

from .conftest import CORPUS, corpus_entries, expected_fixtures, fixture_path, needs_tf

BUNDLE_FORMATS = ("tf1-checkpoint", "tf2-checkpoint", "saved-model")
FIXTURE_CASES = [t for t in expected_fixtures() if t["format"] in BUNDLE_FORMATS and t["id"] != "tf1_v1format"]
CORPUS_CASES = [e for e in corpus_entries() if e["kind"] in ("ckpt_v2", "savedmodel")]

pytestmark = needs_tf


@pytest.fixture(scope="module")
def tf() -> Any:
    from ckpt_tools.tfimport import import_tensorflow

    return import_tensorflow("differential tests")


def same_bits(ours: np.ndarray, theirs: Any) -> bool:
    """Bit-identical values; strings compared as bytes (TF returns a scalar string as bytes)."""
    if ours.dtype == object:
        theirs = np.array(theirs, dtype=object)
        return ours.shape == theirs.shape and all(
            a == b for a, b in zip(ours.reshape(-1), theirs.reshape(-1), strict=True)
        )
    theirs = np.asarray(theirs)
    if ours.shape != theirs.shape or ours.dtype.itemsize != theirs.dtype.itemsize:
        return False
    return ours.tobytes() == theirs.tobytes()


def check_against_tensorflow(tf: Any, path: Path) -> int:
    vmap = open_checkpoint(path)
    prefix = str(vmap.prefix)
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    shapes.pop("_CHECKPOINTABLE_OBJECT_GRAPH", None)
    assert sorted(vmap) == sorted(shapes)
    for key, var in vmap.items():
        assert list(var.shape) == list(shapes[key]), key
        tf_dtype = {"half": "float16", "float": "float32", "double": "float64"}.get(dtypes[key].name, dtypes[key].name)
        assert var.dtype == tf_dtype, key
        assert same_bits(var.read(), reader.get_tensor(key)), f"{path}: {key} differs from TensorFlow's value"
    return len(vmap)


@pytest.mark.parametrize("truth", FIXTURE_CASES, ids=[t["id"] for t in FIXTURE_CASES])
def test_fixture_reads_like_tensorflow(tf: Any, truth: dict[str, Any]) -> None:
    assert check_against_tensorflow(tf, fixture_path(truth)) == len(truth["tensors"])


@pytest.mark.skipif(not CORPUS_CASES, reason="../shared/corpus is absent")
@pytest.mark.parametrize("entry", CORPUS_CASES, ids=[e["path"] for e in CORPUS_CASES])
def test_corpus_bundle_reads_like_tensorflow(tf: Any, entry: dict[str, Any]) -> None:
    path = CORPUS / entry["path"]
    if entry["kind"] == "savedmodel" and not (path / "variables" / "variables.index").is_file():
        pytest.skip("SavedModel without variables")
    assert check_against_tensorflow(tf, path) == len(entry["tensors"])
