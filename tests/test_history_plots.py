"""`history()` against TensorFlow's own reading of the tensors, its text/JSON forms, and the diff/history plots."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ckpt_tools.cli.history_render import render_history_text
from ckpt_tools.diffing import diff
from ckpt_tools.elementwise import aligned_blocks
from ckpt_tools.errors import CkptToolsError, MissingDependencyError, MissingFileError, UsageError
from ckpt_tools.history import JSON_SCHEMA, HistoryResult, history, layer_of
from ckpt_tools.model import Variable

from .conftest import FIXTURES, run_cli

RUN = FIXTURES / "tf1_adam"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _independent(prefix: Path) -> tuple[int, dict[str, list[np.ndarray]]]:
    """The step and each layer's weight tensors of one checkpoint, as TensorFlow reads them."""
    tf = pytest.importorskip("tensorflow")
    reader = tf.train.load_checkpoint(str(prefix))
    shapes = reader.get_variable_to_shape_map()
    layers: dict[str, list[np.ndarray]] = {}
    for key in sorted(shapes):
        if key.rsplit("/", 1)[-1] in ("kernel", "bias"):  # the weights of fixtures/tf1_adam (no slots, no step)
            layers.setdefault(key.rsplit("/", 1)[0], []).append(np.asarray(reader.get_tensor(key), np.float64))
    return int(reader.get_tensor("global_step")), layers


def _norm(arrays: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum(a * a) for a in arrays)))


def _close(got: float | None, want: float) -> bool:
    return got is not None and math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12)


def test_history_matches_tensorflow_layer_by_layer() -> None:
    result = history(RUN)
    truth = [_independent(RUN / name) for name in ("model.ckpt-3", "model.ckpt-6")]
    assert [row.step for row in result.checkpoints] == [step for step, _ in truth] == [3, 6]
    previous: dict[str, list[np.ndarray]] | None = None
    for row, (_, layers) in zip(result.checkpoints, truth, strict=True):
        assert [s.layer for s in row.layers] == sorted(layers)
        for stats in row.layers:
            arrays = layers[stats.layer]
            assert _close(stats.weight_norm, _norm(arrays)), stats
            assert stats.size == sum(a.size for a in arrays) and stats.nan == stats.inf == 0
            if previous is None:
                assert stats.update_norm is None
            else:
                updates = [a - b for a, b in zip(arrays, previous[stats.layer], strict=True)]
                assert _close(stats.update_norm, _norm(updates)), stats
        previous = layers
    assert result.exit_code == 0


def test_history_follows_the_state_file_order(tmp_path: Path) -> None:
    """Checkpoints come in the order the state file lists them, the latest appended when it is not listed."""
    for file in RUN.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "model.ckpt-3"\nall_model_checkpoint_paths: "model.ckpt-6"\n'
    )
    result = history(tmp_path / "checkpoint")
    assert result.steps == (6, 3)
    assert [Path(row.path).name for row in result.checkpoints] == ["model.ckpt-6", "model.ckpt-3"]
    assert result.checkpoints[1].layers[0].update_norm is not None


def test_history_json_is_strict_and_complete() -> None:
    document = history(RUN).to_json()
    text = json.dumps(document, allow_nan=False)
    assert json.loads(text)["schema"] == JSON_SCHEMA
    assert document["exit_code"] == 0
    assert document["layers"] == ["dense", "dense_1"]
    assert [c["step"] for c in document["checkpoints"]] == [3, 6]
    first, second = document["checkpoints"]
    assert first["path"].endswith("model.ckpt-3") and first["format"] == "tf1-checkpoint"
    layer = first["layers"][0]
    assert set(layer) == {"layer", "weights", "size", "weight_norm", "update_norm", "nan", "inf"}
    assert layer["update_norm"] is None and isinstance(second["layers"][0]["update_norm"], float)


@pytest.mark.parametrize("run", ["tf1_adam", "tf2_keras3_adam", "tf2_keras3_sgd_momentum", "ident/tf1", "tf1_sgd"])
def test_history_of_every_run_with_a_state_file(run: str) -> None:
    result = history(FIXTURES / run)
    assert result.checkpoints and all(row.layers for row in result.checkpoints)
    steps = [s for s in result.steps if s is not None]
    assert steps == sorted(steps)
    json.dumps(result.to_json(), allow_nan=False)


def test_a_directory_without_a_state_file_is_one_checkpoint(tmp_path: Path) -> None:
    for file in RUN.glob("model.ckpt-6.*"):
        (tmp_path / file.name).write_bytes(file.read_bytes())
    result = history(tmp_path)
    assert result.steps == (6,)
    assert all(layer.update_norm is None for layer in result.checkpoints[0].layers)


def test_errors_are_one_clear_message(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a checkpoint directory"):
        history(FIXTURES / "keras3_adam")
    with pytest.raises(UsageError, match="not a checkpoint directory"):
        history(FIXTURES / "keras3_adam" / "model.keras")
    with pytest.raises(MissingFileError, match="no such file"):
        history(tmp_path / "absent")
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-9"\n')
    with pytest.raises(MissingFileError, match=r"model\.ckpt-9"):
        history(tmp_path)


def test_history_streams_and_never_reads_a_tensor_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Variable.read

    def refuse(self: Variable) -> np.ndarray:
        assert self.role != "weight", f"{self.key} read whole"
        return original(self)  # the reader itself reads the one-element step

    monkeypatch.setattr(Variable, "read", refuse)
    monkeypatch.setattr("ckpt_tools.history.STREAM_ELEMENTS", 5)  # many blocks per tensor
    streamed = history(RUN)
    monkeypatch.undo()
    whole = history(RUN)
    for row_s, row_w in zip(streamed.checkpoints, whole.checkpoints, strict=True):
        for a, b in zip(row_s.layers, row_w.layers, strict=True):
            assert a.weight_norm is not None and b.weight_norm is not None
            assert math.isclose(a.weight_norm, b.weight_norm, rel_tol=1e-12)


def test_aligned_blocks_recut_and_detect_length_mismatch() -> None:
    left = [np.arange(3), np.arange(3, 10), np.empty(0), np.arange(10, 11)]
    right = [np.arange(5), np.arange(5, 11)]
    pairs = list(aligned_blocks(iter(left), iter(right)))
    assert all(np.array_equal(a, b) for a, b in pairs)
    assert sum(a.size for a, _ in pairs) == 11
    with pytest.raises(CkptToolsError, match="different numbers"):
        list(aligned_blocks(iter(left), iter(right[:1])))


def test_layer_of() -> None:
    assert layer_of("enc/kernel") == "enc"
    assert layer_of("block_1/conv/bias") == "block_1/conv"
    assert layer_of("w") == "w"


def test_text_table() -> None:
    text = render_history_text(history(RUN))
    header, _rule, *rows = text.splitlines()[:6]
    assert header.split() == ["step", "layer", "weight", "norm", "update", "norm", "nan", "inf"]
    assert rows[0].split()[:2] == ["3", "dense"] and rows[0].split()[3] == "-"
    assert rows[2].split()[:2] == ["6", "dense"] and float(rows[2].split()[3]) > 0
    assert text.splitlines()[-1].endswith("no NaN/Inf in the weights")


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TF1 run of three checkpoints (steps 10, 20, 30), the last with one NaN and one Inf in `dense/kernel`."""
    tf = pytest.importorskip("tensorflow")
    directory = tmp_path_factory.mktemp("nan_run")
    kernels = [np.full((3, 2), value, np.float32) for value in (1.0, 2.0, 2.0)]
    kernels[2][0, 0], kernels[2][1, 1] = np.nan, np.inf
    with tf.Graph().as_default():
        kernel = tf.compat.v1.get_variable("dense/kernel", initializer=kernels[0])
        tf.compat.v1.get_variable("dense/bias", initializer=np.zeros(2, np.float32))
        step = tf.compat.v1.train.get_or_create_global_step()
        saver = tf.compat.v1.train.Saver(max_to_keep=5)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for number, value in enumerate(kernels, 1):
                session.run([kernel.assign(value), step.assign(10 * number)])
                saver.save(session, str(directory / "model.ckpt"), global_step=step)
    return directory


def test_nan_and_inf_are_counted_and_json_stays_strict(nan_run: Path) -> None:
    result = history(nan_run)
    assert result.steps == (10, 20, 30)
    last = result.checkpoints[-1]
    assert (last.nan, last.inf) == (1, 1)
    dense = last.layers[0]
    assert _close(dense.weight_norm, 4.0)  # the four finite elements equal 2
    assert _close(dense.update_norm, 0.0)  # where both checkpoints are finite, nothing moved
    assert _close(result.checkpoints[1].layers[0].update_norm, math.sqrt(6.0))
    json.dumps(result.to_json(), allow_nan=False)
    assert render_history_text(result).splitlines()[-1].endswith("NaN/Inf in the weights at step 30")


# ---- plots ---------------------------------------------------------------------------------------------------


def _check_picture(path: Path) -> None:
    data = path.read_bytes()
    if path.suffix == ".png":
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) > 5 * 1024
    else:
        root = ET.fromstring(data)
        assert root.tag in ("svg", "{http://www.w3.org/2000/svg}svg")
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")], "temporary file left"


@pytest.fixture(scope="module")
def adam_diff() -> Any:
    return diff(RUN / "model.ckpt-3", RUN / "model.ckpt-6")


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_diff(tmp_path: Path, suffix: str, adam_diff: Any) -> None:
    pytest.importorskip("matplotlib")
    from ckpt_tools.plotting import diff_bars, plot_diff

    out = tmp_path / f"diff{suffix}"
    plot_diff(adam_diff, out)
    _check_picture(out)
    bars = diff_bars(adam_diff)
    assert [bar.layer for bar in bars] == ["dense"] * 6 + ["dense_1"] * 6
    assert [bar.slot for bar in bars[:3]] == [None, "momentum", "velocity"]
    a, b = (_independent(RUN / name)[1]["dense"][1] for name in ("model.ckpt-3", "model.ckpt-6"))
    kernel = next(bar for bar in bars if bar.name == "dense/kernel")
    assert _close(kernel.change, float(np.linalg.norm(a - b) / np.linalg.norm(b)))


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_history(tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("matplotlib")
    from ckpt_tools.plotting import plot_history

    out = tmp_path / f"history{suffix}"
    plot_history(history(RUN), out)
    _check_picture(out)


def test_plots_mark_nan_and_replace_atomically(tmp_path: Path, nan_run: Path) -> None:
    pytest.importorskip("matplotlib")
    from ckpt_tools.plotting import diff_bars, plot_diff, plot_history

    out = tmp_path / "history.svg"
    out.write_text("old")
    plot_history(history(nan_run), out)
    _check_picture(out)
    assert "NaN 1 / Inf 1" in out.read_text()
    result = diff(nan_run / "model.ckpt-20", nan_run / "model.ckpt-30")
    kernel = next(bar for bar in diff_bars(result) if bar.name == "dense/kernel")
    assert kernel.nonfinite == 2 and not kernel.identical
    plot_diff(result, tmp_path / "diff.png")
    _check_picture(tmp_path / "diff.png")


def test_plot_of_one_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from ckpt_tools.plotting import plot_history

    plot_history(history(FIXTURES / "ident" / "tf1"), tmp_path / "one.png")
    _check_picture(tmp_path / "one.png")


def test_plot_format_comes_from_the_suffix(tmp_path: Path, adam_diff: Any) -> None:
    from ckpt_tools.plotting import plot_diff, plot_history

    with pytest.raises(UsageError, match=r"\.png or \.svg"):
        plot_diff(adam_diff, tmp_path / "diff.pdf")
    with pytest.raises(UsageError, match=r"\.png or \.svg"):
        plot_history(HistoryResult("x", ()), tmp_path / "history")
    assert not list(tmp_path.iterdir())


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, adam_diff: Any) -> None:
    import sys

    from ckpt_tools.plotting import plot_diff

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'ckpt-tools\[plot\]'"):
        plot_diff(adam_diff, tmp_path / "diff.png")
    result = run_cli(["diff", RUN / "model.ckpt-3", RUN / "model.ckpt-6", "--plot", tmp_path / "d.png"], expect=2)
    assert "ckpt-tools[plot]" in result.stderr and not result.stdout


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (RUN / "model.ckpt-3", RUN / "model.ckpt-6"),
        (FIXTURES / "ident" / "tf1", FIXTURES / "ident" / "model.keras"),
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_cli_diff_plot_keeps_output_and_exit_code(tmp_path: Path, a: Path, b: Path, as_json: bool) -> None:
    pytest.importorskip("matplotlib")
    extra = ["--json"] if as_json else []
    plain = run_cli(["diff", a, b, *extra], expect=None)
    out = tmp_path / "out.png"
    plotted = run_cli(["diff", a, b, *extra, "--plot", out], expect=None)
    assert plotted.exit_code == plain.exit_code in (0, 1)
    assert plotted.stdout == plain.stdout
    _check_picture(out)


def test_cli_diff_plot_usage_errors(tmp_path: Path) -> None:
    a, b = RUN / "model.ckpt-3", RUN / "model.ckpt-6"
    bad = run_cli(["diff", a, b, "--plot", tmp_path / "out.jpg"], expect=2)
    assert "--plot" in bad.stderr and ".png or .svg" in bad.stderr and not bad.stdout
    names = run_cli(["diff", a, b, "--names-only", "--plot", tmp_path / "out.png"], expect=2)
    assert "--names-only" in names.stderr
    assert not list(tmp_path.iterdir())
