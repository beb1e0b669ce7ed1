"""Reading an artifact never runs code from it: Lambda layers, modules named in config.json, SavedModel functions.

Real TensorFlow/Keras (in a subprocess) writes three booby-trapped artifacts whose code leaves a marker file when
it runs: a `.keras` with a Lambda layer, a `.keras` whose config.json names modules (`keras_cv.ckpt_evil`, which
Keras 3 would import, and `ckpt_evil_module`), both importable from a PYTHONPATH directory, and a SavedModel whose
resource initializer (run by tf.saved_model.load) and signature write files through tf.io.write_file.
`ckpt inspect/validate/diff` on them must leave no marker, import none of those modules, and import neither Keras
nor TensorFlow. Afterwards the same artifacts are loaded the unsafe way to prove the traps are live.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

HAS_TF = importlib.util.find_spec("tensorflow") is not None and importlib.util.find_spec("keras") is not None
EVIL_MODULES = ("keras_cv", "keras_cv.ckpt_evil", "ckpt_evil_module")

pytestmark = [pytest.mark.tensorflow, pytest.mark.skipif(not HAS_TF, reason="needs TensorFlow and Keras 3")]


# ------------------------------------------------------------------------------------------------ builder
def build(out: Path) -> None:
    """Runs in a subprocess with TensorFlow: writes the trapped artifacts and the importable evil modules."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    markers = out / "markers"
    markers.mkdir(parents=True)
    _write_evil_modules(out / "pkgs", markers)
    _build_lambda_archives(out, markers)
    _build_trapped_savedmodel(out, markers)
    for marker in markers.iterdir():  # building ran the traps once; start clean
        marker.unlink()


def _write_evil_modules(pkgs: Path, markers: Path) -> None:
    """Modules that leave an `imported-NAME` marker when imported."""
    (pkgs / "keras_cv").mkdir(parents=True)
    for module, file in (
        ("keras_cv", pkgs / "keras_cv" / "__init__.py"),
        ("keras_cv.ckpt_evil", pkgs / "keras_cv" / "ckpt_evil.py"),
        ("ckpt_evil_module", pkgs / "ckpt_evil_module.py"),
    ):
        file.write_text(
            f"open({str(markers / ('imported-' + module))!r}, 'w').write('imported')\nclass Evil:\n    pass\n"
        )


def _build_lambda_archives(out: Path, markers: Path) -> None:
    """1. a Lambda layer whose (marshalled) code writes a marker when it runs; 2. the same archive, its
    config.json naming modules to import."""
    import keras
    import numpy as np

    lam_marker = str(markers / "lambda-ran")
    fn = eval(f"lambda x: (open({lam_marker!r}, 'a').write('ran'), x)[1]")  # the trap itself
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Lambda(fn, output_shape=(4,), name="trap"),
            keras.layers.Dense(3, name="dense"),
        ],
        name="trapped",
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.fit(np.ones((8, 4), "f4"), np.zeros((8, 3), "f4"), epochs=1, verbose=0)
    model.save(out / "lambda.keras")
    model.save_weights(out / "lambda.weights.h5")

    # 2. the same archive, its config.json naming modules to import
    with zipfile.ZipFile(out / "lambda.keras") as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    config = json.loads(members["config.json"])
    config["compile_config"]["loss"] = {
        "module": "ckpt_evil_module",
        "class_name": "Evil",
        "config": {},
        "registered_name": "ckpt_evil_module>Evil",
    }
    for layer in config["config"]["layers"]:
        if layer.get("class_name") == "Dense":
            layer.update({"module": "keras_cv.ckpt_evil", "class_name": "Evil", "registered_name": None})
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(out / "evil_module.keras", "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _build_trapped_savedmodel(out: Path, markers: Path) -> None:
    """3. a SavedModel: a resource initializer that writes at load time, a signature that writes when called."""
    import tensorflow as tf

    load_marker, call_marker = str(markers / "savedmodel-loaded"), str(markers / "savedmodel-called")

    class Touch(tf.saved_model.experimental.TrackableResource):
        def _create_resource(self) -> Any:
            return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="")

        def _initialize(self) -> Any:
            tf.io.write_file(load_marker, "loaded")
            return tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=1.0)

    class Trapped(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.kernel = tf.Variable(tf.ones([4, 3]), name="kernel")
            self.step = tf.Variable(7, dtype=tf.int64, name="step")
            self.touch_resource = Touch()

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x: Any) -> Any:
            tf.io.write_file(call_marker, "called")
            return tf.matmul(x, self.kernel)

    trapped = Trapped()
    tf.saved_model.save(trapped, str(out / "savedmodel"), signatures={"serving_default": trapped.__call__})


def spring_traps(out: Path) -> None:
    """Runs in a subprocess: load the artifacts the unsafe way, so the traps fire (proof they are live)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import numpy as np
    import tensorflow as tf

    model = keras.saving.load_model(out / "lambda.keras", safe_mode=False)
    model(np.ones((1, 4), "f4"))
    with contextlib.suppress(Exception):  # the class is not a Keras layer; importing its module is what counts
        keras.saving.load_model(out / "evil_module.keras", safe_mode=False)
    loaded = tf.saved_model.load(str(out / "savedmodel"))
    loaded.signatures["serving_default"](tf.ones([1, 4]))


# ------------------------------------------------------------------------------------------------ tests
@pytest.fixture(scope="module")
def trapped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trapped")
    run_helper("--build", out)
    return out


def run_helper(flag: str, out: Path) -> None:
    # The helper imports the installed ckpt_tools (PYTHONSAFEPATH: not the checkout beside this file).
    env = {**os.environ, "PYTHONPATH": str(out / "pkgs"), "PYTHONSAFEPATH": "1"}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"})
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), flag, str(out)],
        env=env,
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]


def artifacts(out: Path) -> dict[str, Path]:
    return {
        "lambda": out / "lambda.keras",
        "evil_module": out / "evil_module.keras",
        "weights": out / "lambda.weights.h5",
        "savedmodel": out / "savedmodel",
    }


def commands(paths: dict[str, Path]) -> list[list[str]]:
    out = []
    for path in paths.values():
        out += [
            ["inspect", str(path)],
            ["inspect", "--stats", "--json", str(path)],
            ["validate", str(path)],
            ["diff", str(path), str(path)],
        ]
    out.append(["diff", str(paths["lambda"]), str(paths["evil_module"])])
    out.append(["diff", str(paths["weights"]), str(paths["lambda"])])
    return out


CHILD = r"""
import json, sys
from ckpt_tools.cli import main
codes = []
for args in json.loads(sys.argv[1]):
    try:
        main(args, prog_name="ckpt", standalone_mode=True)
    except SystemExit as exc:
        codes.append(exc.code)
evil = [m for m in ("keras_cv", "keras_cv.ckpt_evil", "ckpt_evil_module") if m in sys.modules]
heavy = [m for m in ("keras", "tensorflow", "tf_keras") if m in sys.modules]
print("\nRESULT " + json.dumps({"codes": codes, "evil": evil, "heavy": heavy}))
"""


def test_reading_trapped_artifacts_runs_none_of_their_code(trapped: Path) -> None:
    paths = artifacts(trapped)
    markers = trapped / "markers"
    assert not list(markers.iterdir())
    # importable evil modules first on the path, as an attacker sharing a checkpoint with its code would hope
    env = {**os.environ, "PYTHONPATH": str(trapped / "pkgs"), "PYTHONSAFEPATH": "1"}
    env.pop("CKPT_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(commands(paths))],
        env=env,
        cwd=trapped,
        capture_output=True,
        timeout=300,
        check=False,
    )
    stdout = proc.stdout.decode()
    assert "RESULT " in stdout, proc.stderr.decode()[-3000:]
    result = json.loads(stdout.rsplit("RESULT ", 1)[1])
    assert sorted(p.name for p in markers.iterdir()) == [], "artifact code ran while reading it"
    assert result["evil"] == [], f"modules named by the artifact were imported: {result['evil']}"
    assert result["heavy"] == [], f"reading imported {result['heavy']} (deserialization needs them)"
    assert "Traceback" not in proc.stderr.decode() and "internal error" not in proc.stderr.decode()
    inspect_codes = result["codes"][0::4][: len(paths)]
    assert inspect_codes == [0] * len(paths), (result["codes"], proc.stderr.decode()[-2000:])
    assert all(code in (0, 1) for code in result["codes"]), (result["codes"], proc.stderr.decode()[-2000:])


def test_in_process_nothing_is_imported(trapped: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ckpt_tools.cli import main

    monkeypatch.syspath_prepend(str(trapped / "pkgs"))
    before = set(sys.modules)
    for args in commands(artifacts(trapped)):
        result = CliRunner().invoke(main, args)
        assert result.exit_code in (0, 1), (args, result.output)
    assert not [m for m in EVIL_MODULES if m in sys.modules]
    assert not list((trapped / "markers").iterdir())
    assert not {m for m in set(sys.modules) - before if m.split(".")[0] in ("keras", "tf_keras")}


def test_the_traps_are_live(trapped: Path) -> None:
    """Loading the same files the unsafe way does run their code: the checks above can fail."""
    run_helper("--spring", trapped)
    fired = sorted(p.name for p in (trapped / "markers").iterdir())
    assert "lambda-ran" in fired
    assert "imported-keras_cv" in fired
    assert "savedmodel-called" in fired
    assert "savedmodel-loaded" in fired
    for marker in (trapped / "markers").iterdir():
        marker.unlink()


if __name__ == "__main__" and len(sys.argv) == 3:
    {"--build": build, "--spring": spring_traps}[sys.argv[1]](Path(sys.argv[2]))
