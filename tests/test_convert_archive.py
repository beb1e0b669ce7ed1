"""convert reads tf_keras `.keras` archives: positional weights paired with the Keras 3 model's layers."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import needs_tf
from tests.test_convert_sources import (
    BOUNDS,
    MODELS,
    RESUMED,
    _one_line,
    assert_resumes,
    convert,
    deviation,
    name_of,
    out_path,
    slow,
    tf_keras_mlp,
    trained,
)

pytestmark = needs_tf


def saved_archive(tmp_path: Path, **kwargs: Any) -> tuple[Any, Path]:
    """A tf_keras Adam MLP (BatchNormalization unless told otherwise) trained 3 steps, saved as m.keras."""
    source_model = trained(tf_keras_mlp("adam", **({"batch_norm": True} | kwargs)))
    path = tmp_path / "m.keras"
    source_model.save(path)
    with zipfile.ZipFile(path) as zf:
        assert {"config.json", "metadata.json", "model.weights.h5"} <= set(zf.namelist())
    return source_model, path


CASES = [("keras", None), ("tf2", None), ("keras", "twin_adam_sequential")]


@slow
@pytest.mark.parametrize(("to", "factory"), CASES, ids=[f"{t}-{f or 'rebuilt'}" for t, f in CASES])
def test_tf_keras_archive_converts_exactly(tmp_path: Path, to: str, factory: str | None) -> None:
    """config.json rebuilds the model (or the factory gives it); weights pair by layer path and position."""
    import tf_keras

    _, source = saved_archive(tmp_path)
    source_model = tf_keras.models.load_model(source)  # the archive itself continues its own training
    assert int(source_model.optimizer.iterations.numpy()) == 3
    extra = ["--model", f"{MODELS}:{factory}"] if factory else []
    report = convert(source, out_path(tmp_path, to), to, *extra)
    assert report["source_format"] == "keras-archive"
    assert report["model"] == (f"{MODELS}:{factory}" if factory else "<rebuilt from model_config>")
    assert report["exactness"] == "exact" and report["approximations"] == [], report["approximations"]
    assert report["optimizer"]["hyperparameters_from"] == "config.json compile_config"
    pairs = {p["source"]: p["target"].split("/", 1)[-1] for p in report["mapping"]}
    assert pairs["layers/batch_normalization/vars/2"].endswith("bn/moving_mean"), pairs
    assert pairs["layers/dense_1/vars/0"].endswith("dense_1/kernel"), pairs
    found = assert_resumes(source_model, tf_keras.losses, out_path(tmp_path, to), to, "twin_adam_sequential", 3)
    print(f"{to}/{factory or 'rebuilt'}: max |diff| after 1 and 20 steps: {found}")
    if to == "keras" and factory is None:  # both fit with train_on_batch: the rebuilt loss included
        on_batches = (
            by_train_on_batch(tf_keras.models.load_model(source)),
            by_train_on_batch(load(out_path(tmp_path, to))),
        )
        found = [deviation(on_batches[0][n], on_batches[1][n]) for n in BOUNDS]
        assert all(d < BOUNDS[n] for d, n in zip(found, BOUNDS, strict=True)), found
        print(f"train_on_batch: max |diff| after 1 and 20 steps: {found}")


def load(path: Path) -> Any:
    import keras

    return keras.models.load_model(path)


def by_train_on_batch(model: Any) -> dict[int, dict[str, Any]]:
    """Every weight after 1 and 20 `train_on_batch` steps on the resumed batches, with the compiled loss."""
    import numpy as np

    out = {}
    for step, (x, y) in enumerate(RESUMED[:20], start=1):
        model.train_on_batch(x, y)
        if step in BOUNDS:
            out[step] = {name_of(v): np.array(v.numpy()) for v in model.weights}
    assert deviation(out[1], out[20]) > 1e-3  # the run moves
    return out


def test_layer_paths_are_keras3_saving_names(tmp_path: Path) -> None:
    """archive.layer_paths names each layer as Keras 3's own saving writes it (read back with h5py)."""
    import h5py
    import keras
    import numpy as np

    from ckpt_tools.conversion.archive import layer_paths, own_variables

    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(5), keras.layers.BatchNormalization(), keras.layers.Dense(3)]
    )
    for variable in model.weights:
        variable.assign(np.random.default_rng(len(variable.path)).normal(size=variable.shape))
    model.save(tmp_path / "k3.keras")
    with zipfile.ZipFile(tmp_path / "k3.keras") as zf:
        zf.extract("model.weights.h5", tmp_path)
    paths = layer_paths(model)
    assert sorted(paths) == ["layers/batch_normalization", "layers/dense", "layers/dense_1"]
    with h5py.File(tmp_path / "model.weights.h5") as f:
        saved = sorted(k for k in f["layers"])
        assert [f"layers/{k}" for k in saved] == sorted(paths)
        for path, layer in paths.items():
            stored = f[path]["vars"]
            variables = own_variables(layer)
            assert len(stored) == len(variables)
            for i, variable in enumerate(variables):
                np.testing.assert_array_equal(stored[str(i)][()], variable.numpy())


def test_archive_lambda_layer_needs_model(tmp_path: Path) -> None:
    _, source = saved_archive(tmp_path, batch_norm=False, lambda_layer=True)
    line = _one_line([source, "--out", tmp_path / "out.keras", "--to", "keras"])
    assert "Lambda" in line and "doubled" in line and "--model" in line


def test_archive_layer_the_model_lacks_is_refused(tmp_path: Path) -> None:
    """A factory with a BatchNormalization the archive does not store: refused, naming the layer path."""
    _, source = saved_archive(tmp_path, batch_norm=False)
    line = _one_line(
        [source, "--out", tmp_path / "out.keras", "--to", "keras", "--model", f"{MODELS}:twin_adam_sequential"]
    )
    assert "layers/batch_normalization stores 0 weight(s)" in line and "has 4" in line, line
    assert not (tmp_path / "out.keras").exists()
