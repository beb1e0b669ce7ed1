"""Keras 3 .weights.h5/.keras and legacy Keras-2 .h5 readers against real Keras/tf_keras artifacts and h5py."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from ckpt_tools.errors import CorruptCheckpointError, MissingFileError, UnsafeInputError
from ckpt_tools.model import VariableMap
from ckpt_tools.readers import keras2_h5, keras_archive, keras_h5, magic

from .conftest import CORPUS, EXPECTED, FIXTURES, ROOT, child_env, corpus_entries

READERS = {"keras-weights-h5": keras_h5, "keras-archive": keras_archive, "keras2-h5": keras2_h5}
HAS_KERAS = all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "keras", "tf_keras"))
needs_keras = pytest.mark.skipif(not HAS_KERAS, reason="needs tensorflow, keras and tf_keras to write artifacts")

# Written in a subprocess so this test process never imports TensorFlow. Each artifact's truth comes from the
# live Keras objects: optimizer.iterations, the trainable variables and, per optimizer variable, the weight it
# belongs to (Keras 3 names slot variables `<optimizer>/<weight path with _>_<slot>`).
GENERATE = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
out = sys.argv[1]
x = np.random.RandomState(0).rand(16, 4).astype("float32")
y = np.random.RandomState(1).rand(16, 2).astype("float32")
truth = {}

import keras
def k3_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    h = keras.layers.Dense(3, name="d1")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    return keras.Model(inp, keras.layers.Dense(2, name="d2")(h))
SLOTS = ["momentum", "velocity", "velocity_hat", "average_gradient", "accumulator", "average", "gradient_accumulator"]
def k3_truth(m):
    opt = getattr(m, "optimizer", None)
    opt = getattr(opt, "inner_optimizer", opt)
    ties = {}
    if opt is not None and opt.built:
        for i, v in enumerate(opt.variables):
            for w in m.trainable_variables:
                for s in SLOTS:
                    if v.path.endswith(f"{opt.name}/{w.path.replace('/', '_')}_{s}"):
                        ties[str(i)] = [w.path, s]
    opt = getattr(m, "optimizer", None)
    return {"kind": "keras3", "step": None if opt is None else int(opt.iterations.numpy()),
            "trainable": [w.path for w in m.trainable_variables], "ties": ties,
            "has_optimizer": opt is not None}
K3 = {
    "adam": lambda: keras.optimizers.Adam(), "sgdm": lambda: keras.optimizers.SGD(momentum=0.9),
    "sgd": lambda: keras.optimizers.SGD(), "rms": lambda: keras.optimizers.RMSprop(momentum=0.5, centered=True),
    "adagrad": lambda: keras.optimizers.Adagrad(), "adamw": lambda: keras.optimizers.AdamW(amsgrad=True),
    "ema": lambda: keras.optimizers.Adam(use_ema=True, gradient_accumulation_steps=2),
}
NAMES = {"adam": "Adam", "sgdm": "SGD(momentum)", "sgd": "SGD", "rms": "RMSprop", "adagrad": "Adagrad",
         "adamw": "AdamW", "ema": "Adam"}
for name, make in K3.items():
    m = k3_model()
    m.compile(make(), "mse")
    m.fit(x, y, epochs=3, batch_size=4, verbose=0)
    t = {**k3_truth(m), "optimizer": NAMES[name]}
    for suffix in (".weights.h5", ".keras"):
        (m.save_weights if suffix == ".weights.h5" else m.save)(os.path.join(out, f"k3_{name}{suffix}"))
        truth[f"k3_{name}{suffix}"] = t
m = k3_model()
for suffix in (".weights.h5", ".keras"):
    (m.save_weights if suffix == ".weights.h5" else m.save)(os.path.join(out, f"k3_uncompiled{suffix}"))
    truth[f"k3_uncompiled{suffix}"] = {**k3_truth(m), "optimizer": None}
m = k3_model(); m.compile(keras.optimizers.Adam(), "mse"); m.save(os.path.join(out, "k3_unbuilt.keras"))
truth["k3_unbuilt.keras"] = {**k3_truth(m), "optimizer": "Adam", "step": 0}
for policy, tag in (("mixed_float16", "lso"), ("bfloat16", "bf16")):
    keras.config.set_dtype_policy(policy)
    m = k3_model(); m.compile(keras.optimizers.Adam(), "mse"); m.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for suffix in (".weights.h5", ".keras"):
        (m.save_weights if suffix == ".weights.h5" else m.save)(os.path.join(out, f"k3_{tag}{suffix}"))
        truth[f"k3_{tag}{suffix}"] = {**k3_truth(m), "optimizer": "Adam"}
keras.config.set_dtype_policy("float32")

import tf_keras
def k2_model():
    tf_keras.utils.set_random_seed(0)
    inp = tf_keras.Input((4,))
    h = tf_keras.layers.Dense(3, name="d1")(inp)
    h = tf_keras.layers.BatchNormalization(name="bn")(h)
    return tf_keras.Model(inp, tf_keras.layers.Dense(2, name="d2")(h))
L = tf_keras.optimizers.legacy
K2 = {"adam": (lambda: tf_keras.optimizers.Adam(), "Adam"),
      "sgdm": (lambda: tf_keras.optimizers.SGD(momentum=0.9), "SGD(momentum)"),
      "rms": (lambda: tf_keras.optimizers.RMSprop(momentum=0.5, centered=True), "RMSprop"),
      "legacy_adam": (lambda: L.Adam(), "Adam"), "legacy_rms": (lambda: L.RMSprop(centered=True), "RMSprop")}
def k2_truth(m, name, stored):
    return {"kind": "keras2", "step": int(m.optimizer.iterations.numpy()) if stored else None,
            "trainable": [w.name[:-2] for w in m.trainable_weights], "optimizer": name if stored else None,
            "has_optimizer": stored}
for name, (make, display) in K2.items():
    m = k2_model(); m.compile(make(), "mse"); m.fit(x, y, epochs=3, batch_size=4, verbose=0)
    m.save(os.path.join(out, f"k2_{name}.h5"))
    truth[f"k2_{name}.h5"] = k2_truth(m, display, True)
m.save(os.path.join(out, "k2_noopt.h5"), include_optimizer=False)
truth["k2_noopt.h5"] = k2_truth(m, None, False)
m.save_weights(os.path.join(out, "k2_weights.h5"))
truth["k2_weights.h5"] = k2_truth(m, None, False)
m = k2_model(); m.save(os.path.join(out, "k2_uncompiled.h5"))
truth["k2_uncompiled.h5"] = {**k2_truth(m, None, False), "has_optimizer": False}
with open(os.path.join(out, "truth.json"), "w") as fh:
    json.dump(truth, fh)
"""


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    if not HAS_KERAS:
        pytest.skip("needs tensorflow, keras and tf_keras")
    out = tmp_path_factory.mktemp("keras_artifacts")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    proc = subprocess.run(
        [sys.executable, "-c", GENERATE, str(out)], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, json.loads((out / "truth.json").read_text())


ARTIFACTS = [
    "k3_adam.weights.h5",
    "k3_adam.keras",
    "k3_sgdm.weights.h5",
    "k3_sgdm.keras",
    "k3_sgd.weights.h5",
    "k3_rms.weights.h5",
    "k3_rms.keras",
    "k3_adagrad.weights.h5",
    "k3_adamw.weights.h5",
    "k3_adamw.keras",
    "k3_ema.keras",
    "k3_ema.weights.h5",
    "k3_uncompiled.weights.h5",
    "k3_uncompiled.keras",
    "k3_unbuilt.keras",
    "k3_lso.weights.h5",
    "k3_lso.keras",
    "k3_bf16.weights.h5",
    "k3_bf16.keras",
    "k2_adam.h5",
    "k2_sgdm.h5",
    "k2_rms.h5",
    "k2_legacy_adam.h5",
    "k2_legacy_rms.h5",
    "k2_noopt.h5",
    "k2_weights.h5",
    "k2_uncompiled.h5",
]


def fmt_of(name: str) -> str:
    return (
        "keras-archive"
        if name.endswith(".keras")
        else "keras-weights-h5"
        if name.endswith(".weights.h5")
        else "keras2-h5"
    )


# ---------------------------------------------------------------------------------------------- h5py's truth


def h5_source(path: Path) -> Any:
    """h5py.File of an .h5, or of the model.weights.h5 member of a .keras archive (read into memory)."""
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as zf:
            return h5py.File(io.BytesIO(zf.read("model.weights.h5")), "r")
    return h5py.File(path, "r")


def h5_dtype(ds: h5py.Dataset) -> str:
    if ds.dtype.kind == "V":
        return str(ds.attrs.get("dtype", "bfloat16"))  # tf_keras writes bfloat16 as bare 2-byte opaque data
    return "string" if h5py.check_string_dtype(ds.dtype) else ds.dtype.name


def h5_listing(path: Path) -> dict[str, tuple[list[int], str]]:
    out: dict[str, tuple[list[int], str]] = {}
    with h5_source(path) as f:
        f.visititems(
            lambda n, o: out.__setitem__(n, (list(o.shape), h5_dtype(o))) if isinstance(o, h5py.Dataset) else None
        )
    return out


def h5_values(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5_source(path) as f:
        f.visititems(lambda n, o: out.__setitem__(n, np.asarray(o[()])) if isinstance(o, h5py.Dataset) else None)
    return out


def assert_matches_h5py(vmap: VariableMap, path: Path) -> None:
    listing = h5_listing(path)
    assert {k: (list(v.shape), v.dtype) for k, v in vmap.items()} == listing
    values = h5_values(path)
    for key, var in vmap.items():
        got = var.read()
        assert got.shape == tuple(listing[key][0])
        if var.dtype == "string":
            assert got.tolist() == [bytes(b) for b in values[key].reshape(-1)]
        else:
            assert got.tobytes() == values[key].tobytes(), key


# ------------------------------------------------------------------------------------- generated artifacts


@needs_keras
@pytest.mark.parametrize("name", ARTIFACTS)
def test_generated_artifact(artifacts: tuple[Path, dict[str, Any]], name: str) -> None:
    out, truth = artifacts
    path, fmt, want = out / name, fmt_of(name), truth[name]
    for other, module in READERS.items():
        assert (module.sniff(path) is None) == (other == fmt), (other, module.sniff(path))
    vmap = READERS[fmt].open(path)
    assert vmap.format == fmt
    assert_matches_h5py(vmap, path)
    assert len({v.name for v in vmap.values()}) == len(vmap), "canonical names must be unique"
    opt = vmap.optimizer
    assert opt.present == want["has_optimizer"]
    if name == "k3_ema.weights.h5":
        # The counter counts micro-batches; without config.json the accumulation factor is unknown.
        assert vmap.step is None and "step_note" in vmap.metadata
    else:
        assert vmap.step == want["step"]
    if want["step"] is not None:
        assert vmap.step_key is not None and vmap[vmap.step_key].role == "step"
    if not opt.present:
        assert vmap.step_key is None and not vmap.with_role("optimizer")
        return
    assert opt.name == want["optimizer"]
    by_name = vmap.by_name()
    for var in vmap.values():
        if var.slot_of is not None:
            assert by_name[var.slot_of].role == "weight"
            assert by_name[var.slot_of].shape == var.shape
    if want["kind"] == "keras3":
        main = "optimizer/inner_optimizer/vars/" if name.startswith("k3_lso") else "optimizer/vars/"
        got = {k[len(main) :]: [v.slot_of, v.slot] for k, v in vmap.items() if k.startswith(main) and v.slot_of}
        assert got == want["ties"]
        if want["ties"]:
            assert opt.trainable == len(want["trainable"]) == opt.covered
    else:
        for var in vmap.values():
            if var.slot_of is not None:
                assert f"/{var.slot_of}/" in f"/{var.key.rsplit(':', 1)[0]}/"
        assert sorted({v.slot_of for v in vmap.values() if v.slot_of}) == sorted(want["trainable"])
        assert opt.trainable == len(want["trainable"]) == opt.covered


@needs_keras
def test_layouts_keras3(artifacts: tuple[Path, dict[str, Any]]) -> None:
    """Facts the readers rely on: groups named after layer classes, bfloat16 as marked opaque data."""
    out, _ = artifacts
    with h5py.File(out / "k3_bf16.weights.h5", "r") as f:
        assert f["layers/dense/vars"].attrs["name"] == "d1"
        assert f["layers/dense_1/vars"].attrs["name"] == "d2"
        ds = f["layers/dense/vars/0"]
        assert ds.dtype.kind == "V" and ds.attrs["dtype"] == "bfloat16"
    vmap = keras_h5.open(out / "k3_bf16.weights.h5")
    assert vmap.by_name()["d1/kernel"].dtype == "bfloat16"
    assert vmap.by_name()["d1/kernel"].read().dtype.name == "bfloat16"
    lso = keras_h5.open(out / "k3_lso.weights.h5")
    assert lso.step_key == "optimizer/inner_optimizer/vars/0"
    assert lso.metadata["optimizer_wrapper"] == "LossScaleOptimizer"


@needs_keras
def test_keras_archive_metadata(artifacts: tuple[Path, dict[str, Any]]) -> None:
    out, truth = artifacts
    vmap = keras_archive.open(out / "k3_ema.keras")
    assert vmap.metadata["keras_version"].startswith("3.")
    assert vmap.metadata["model_class"] == "Functional"
    assert vmap.metadata["optimizer_config"]["config"]["gradient_accumulation_steps"] == 2
    assert vmap.step_key == "optimizer/vars/0"
    assert vmap.step == truth["k3_ema.keras"]["step"] == vmap["optimizer/vars/0"].read() // 2
    assert vmap.by_name()["bn/moving_mean"].role == "weight"
    bare = keras_h5.open(out / "k3_ema.weights.h5")
    assert bare.metadata["slot_mapping"] == "inferred"


@needs_keras
def test_no_tensorflow_import(artifacts: tuple[Path, dict[str, Any]]) -> None:
    out, _ = artifacts
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from ckpt_tools.readers import keras_h5, keras_archive, keras2_h5\n"
        f"out = Path({str(out)!r})\n"
        "for mod, name in ((keras_h5, 'k3_bf16.weights.h5'), (keras_archive, 'k3_adam.keras'),"
        " (keras2_h5, 'k2_adam.h5')):\n"
        "    assert mod.sniff(out / name) is None\n"
        "    vm = mod.open(out / name)\n"
        "    [v.read() for v in vm.values()]\n"
        "bad = [m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=child_env())
    assert proc.returncode == 0, proc.stderr[-3000:]


# ---------------------------------------------------------------------------------- committed fixtures


def keras_expected() -> list[dict[str, Any]]:
    out = []
    for file in sorted(EXPECTED.glob("keras[23]_*.json")) if EXPECTED.is_dir() else []:
        out.append(json.loads(file.read_text()))
    return out


@pytest.mark.parametrize("truth", keras_expected(), ids=lambda t: t["name"])
def test_fixture(truth: dict[str, Any]) -> None:
    path = FIXTURES / truth["path"]
    if not path.exists():
        pytest.skip(f"{path} not generated yet")
    module = READERS[truth["format"]]
    assert module.sniff(path) is None
    vmap = module.open(path)
    assert sorted([k, list(v.shape), v.dtype] for k, v in vmap.items()) == sorted(truth["tensors"])
    assert vmap.optimizer.present == truth["optimizer"]["present"]
    assert vmap.step == truth["step"] and vmap.step_key == truth["step_key"]
    if truth["optimizer"]["present"]:
        assert vmap.optimizer.name == truth["optimizer"]["name"]
        assert len(vmap.optimizer.slots) == truth["optimizer"]["slots_per_weight"]
        key_of = {v.name: k for k, v in vmap.items()}
        tied = sorted({key_of[v.slot_of] for v in vmap.values() if v.slot_of})
        if truth["optimizer"]["slots_per_weight"]:
            assert tied == sorted(truth["trainable"])
            assert vmap.optimizer.complete
    for key in truth.get("non_trainable", []):
        assert vmap[key].role == "weight"


# ------------------------------------------------------------------------------------ third-party corpus

H5_ENTRIES = [e for e in corpus_entries() if e["kind"] == "h5"]


@pytest.mark.skipif(not H5_ENTRIES, reason="../shared/corpus is absent")
@pytest.mark.parametrize("entry", H5_ENTRIES, ids=[e["path"] for e in H5_ENTRIES])
def test_corpus_h5(entry: dict[str, Any]) -> None:
    path = CORPUS / entry["path"]
    accepted = [fmt for fmt, module in READERS.items() if module.sniff(path) is None]
    assert accepted == ["keras2-h5"]
    vmap = keras2_h5.open(path)
    assert sorted([k, list(v.shape), v.dtype] for k, v in vmap.items()) == sorted(entry["tensors"])
    assert vmap.optimizer.present == entry["optimizer"]
    assert_matches_h5py(vmap, path)
    if entry["optimizer"]:
        assert vmap.step is not None and vmap.optimizer.complete


def test_corpus_qkeras_counter_is_not_the_step() -> None:
    path = CORPUS / "hls4ml_at_3834a8e/example-prjs/fashion/FashionMNIST.h5"
    if not path.is_file():
        pytest.skip("../shared/corpus is absent")
    vmap = keras2_h5.open(path)
    assert vmap.step_key == "optimizer_weights/Adam/iter:0"
    assert vmap["model_weights/q_conv2d_batchnorm/q_conv2d_batchnorm/iteration:0"].role == "weight"
    assert vmap.optimizer.name == "Adam" and vmap.optimizer.trainable == 4


# ------------------------------------------------------------------------------- hostile and broken inputs


def keras3_file(path: Path, extra: Any = None, **kwargs: Any) -> Path:
    """A minimal file with the Keras 3 layout written by h5py; `extra(f)` adds the hostile part."""
    with h5py.File(path, "w", **kwargs) as f:
        f.create_group("vars").attrs["name"] = "model"
        f.create_dataset("layers/dense/vars/0", data=np.arange(6, dtype="float32").reshape(2, 3))
        f["layers/dense/vars"].attrs["name"] = "d"
        if extra is not None:
            extra(f)
    return path


def test_external_link_refused(tmp_path: Path) -> None:
    path = keras3_file(tmp_path / "a.weights.h5", lambda f: f.__setitem__("layers/x", h5py.ExternalLink("o.h5", "/")))
    with pytest.raises(UnsafeInputError, match=re.escape(str(path))):
        keras_h5.open(path)


def test_external_storage_refused(tmp_path: Path) -> None:
    def extra(f: h5py.File) -> None:
        f.create_dataset("layers/y/vars/0", shape=(4,), dtype="f4", external=[("raw.bin", 0, 16)])

    with pytest.raises(UnsafeInputError, match="external"):
        keras_h5.open(keras3_file(tmp_path / "b.weights.h5", extra))


def test_virtual_dataset_refused(tmp_path: Path) -> None:
    def extra(f: h5py.File) -> None:
        layout = h5py.VirtualLayout(shape=(6,), dtype="f4")
        layout[:] = h5py.VirtualSource(str(tmp_path / "c.weights.h5"), "layers/dense/vars/0", shape=(6,))
        f.create_virtual_dataset("layers/z/vars/0", layout)

    with pytest.raises(UnsafeInputError, match="virtual"):
        keras_h5.open(keras3_file(tmp_path / "c.weights.h5", extra))


@pytest.mark.parametrize("chunked", [False, True])
def test_absurd_declared_shape_refused(tmp_path: Path, chunked: bool) -> None:
    def extra(f: h5py.File) -> None:
        kw: dict[str, Any] = {"chunks": (1000, 1000), "compression": "gzip"} if chunked else {}
        f.create_dataset("layers/h/vars/0", shape=(10**6, 10**6), dtype="f4", **kw)

    with pytest.raises(CorruptCheckpointError, match="more than the file can hold"):
        keras_h5.open(keras3_file(tmp_path / "d.weights.h5", extra))


def test_soft_link_and_non_utf8_names(tmp_path: Path) -> None:
    def extra(f: h5py.File) -> None:
        f["layers/soft"] = h5py.SoftLink("/layers/dense")
        f["layers"].create_group(b"b\xffd").create_dataset("vars/0", data=np.ones(2))

    vmap = keras_h5.open(keras3_file(tmp_path / "e.weights.h5", extra))
    assert sorted(vmap) == ["layers/b\\xffd/vars/0", "layers/dense/vars/0"]
    assert vmap["layers/b\\xffd/vars/0"].read().tolist() == [1.0, 1.0]
    assert vmap["layers/dense/vars/0"].name == "d/kernel"  # a Dense-class group with one rank-2 variable


def test_user_block_accepted(tmp_path: Path) -> None:
    path = keras3_file(tmp_path / "u.weights.h5", userblock_size=512)
    assert magic.hdf5_magic_offset(path) == 512
    assert keras_h5.sniff(path) is None
    assert keras_h5.open(path)["layers/dense/vars/0"].read().shape == (2, 3)


def test_truncated_files(tmp_path: Path) -> None:
    source = keras3_file(tmp_path / "full.weights.h5").read_bytes()
    cut = tmp_path / "cut.weights.h5"
    cut.write_bytes(source[: len(source) // 2])
    assert keras_h5.sniff(cut) is None  # accepted by name so that opening reports the corruption
    with pytest.raises(CorruptCheckpointError, match=re.escape(str(cut))):
        keras_h5.open(cut)
    archive = tmp_path / "cut.keras"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("model.weights.h5", source)
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(CorruptCheckpointError, match=re.escape(str(archive))):
        keras_archive.open(archive)


def write_archive(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_archive_refusals(tmp_path: Path) -> None:
    weights = keras3_file(tmp_path / "w.weights.h5").read_bytes()
    slip = write_archive(tmp_path / "slip.keras", {"../evil": b"x", "model.weights.h5": weights})
    with pytest.raises(UnsafeInputError, match="parent-relative"):
        keras_archive.open(slip)
    absolute = write_archive(tmp_path / "abs.keras", {"/etc/x": b"x", "model.weights.h5": weights})
    with pytest.raises(UnsafeInputError):
        keras_archive.open(absolute)
    missing = write_archive(tmp_path / "missing.keras", {"config.json": b"{}", "metadata.json": b"{}"})
    assert keras_archive.sniff(missing) is None
    with pytest.raises(MissingFileError, match=r"model\.weights\.h5"):
        keras_archive.open(missing)
    other = write_archive(tmp_path / "other.zip", {"a.txt": b"x"})
    assert keras_archive.sniff(other) is not None


def test_archive_absurd_ratio_refused(tmp_path: Path) -> None:
    weights = keras3_file(tmp_path / "w.weights.h5").read_bytes()
    path = write_archive(tmp_path / "bomb.keras", {"model.weights.h5": weights}, zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<L", data, central + 24, 0xFFFFFFF0)  # the declared uncompressed size
    path.write_bytes(bytes(data))
    with pytest.raises(UnsafeInputError, match="ratio"):
        keras_archive.open(path)


def test_archive_compressed_member_and_bad_config(tmp_path: Path) -> None:
    source = keras3_file(tmp_path / "w.weights.h5")
    weights = source.read_bytes()
    path = write_archive(
        tmp_path / "c.keras",
        {"config.json": b"[" * 100_000, "metadata.json": b"{}", "model.weights.h5": weights},
        zipfile.ZIP_DEFLATED,
    )
    vmap = keras_archive.open(path)
    assert any("config.json unreadable" in w for w in vmap.metadata["warnings"])
    assert vmap["layers/dense/vars/0"].read().tolist() == h5_values(source)["layers/dense/vars/0"].tolist()
    assert vmap.files == (path,)


def test_unzipped_keras_directory(tmp_path: Path) -> None:
    keras3_file(tmp_path / "model.weights.h5")
    (tmp_path / "config.json").write_text(json.dumps({"class_name": "Functional", "config": {"name": "m"}}))
    assert keras_archive.sniff(tmp_path) is None
    assert keras_archive.open(tmp_path).metadata["model_class"] == "Functional"


def test_keras2_split_weight_names(tmp_path: Path) -> None:
    """Long `weight_names` attributes are split into weight_names0, weight_names1, ... by Keras 2."""
    path = tmp_path / "split.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"dense"])
        g = f.create_group("dense")
        g.attrs["weight_names0"] = np.array([b"dense/kernel:0"])
        g.attrs["weight_names1"] = np.array([b"dense/bias:0"])
        g.create_dataset("dense/kernel:0", data=np.ones((2, 3), "float32"))
        g.create_dataset("dense/bias:0", data=np.zeros(3, "float32"))
    assert keras_h5.sniff(path) is not None and keras2_h5.sniff(path) is None
    vmap = keras2_h5.open(path)
    assert [v.name for v in vmap.values()] == ["dense/kernel", "dense/bias"]
    assert vmap.metadata["layout"] == "weights-only" and not vmap.optimizer.present


def test_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    path.write_bytes(b"not an hdf5 file at all" * 40)
    assert keras_h5.sniff(path) == "not an HDF5 file (magic bytes)"
    assert keras2_h5.sniff(path) == "not an HDF5 file (magic bytes)"
    assert keras_archive.sniff(path) == "not a zip file (magic bytes)"


def test_group_where_a_variable_belongs(tmp_path: Path) -> None:
    def extra(f: h5py.File) -> None:
        f.create_group("layers/dense/vars/1")

    with pytest.raises(CorruptCheckpointError, match=r"layers/dense/vars/1 is a group"):
        keras_h5.open(keras3_file(tmp_path / "g.weights.h5", extra))


def test_keras2_declared_weight_not_stored(tmp_path: Path) -> None:
    path = tmp_path / "lie.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"dense"])
        g = f.create_group("dense")
        g.attrs["weight_names"] = np.array([b"dense/kernel:0", b"dense/bias:0"])
        g.create_dataset("dense/kernel:0", data=np.ones((2, 3), "float32"))
    with pytest.raises(CorruptCheckpointError, match=r"dense/dense/bias:0 is named in weight_names"):
        keras2_h5.open(path)


def test_fifo_is_never_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "model.weights.h5"
    os.mkfifo(fifo)
    for module in READERS.values():
        assert module.sniff(fifo) == "not a regular file"
    with pytest.raises(CorruptCheckpointError, match="not a regular file"):
        keras_h5.open(fifo)
