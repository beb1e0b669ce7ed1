"""Layer translations: TF1 LSTMCell/BasicLSTMCell/GRUCell checkpoints convert into Keras 3 LSTM/GRU layers
(kernel split, gates reordered, forget_bias folded from the .meta graph, every slot translated alike), and
Keras 3 continuing from the output is TF1 continuing its own run; cells Keras 3 has no layer for are refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import needs_tf, run_cli, run_json

pytestmark = [needs_tf, pytest.mark.tensorflow]

MODELS = Path(__file__).resolve().parent / "rnn_models.py"
LR = 0.05
RNG = np.random.default_rng(7)
BATCHES = [(RNG.normal(size=(6, 5, 3)).astype(np.float32), RNG.integers(0, 3, 6).astype(np.int32)) for _ in range(23)]
SAVED_AT = 3  # steps trained before the checkpoint; the resumed runs take batches SAVED_AT, SAVED_AT + 1, ...


def factory(name: str) -> str:
    return f"{MODELS}:{name}"


def _cells() -> Any:
    from tf_keras.api._v1.keras.__internal__.legacy import rnn_cell

    return rnn_cell


CELLS: dict[str, Callable[[], Any]] = {
    "lstm": lambda: _cells().LSTMCell(4),
    "lstm_fb": lambda: _cells().LSTMCell(4, forget_bias=0.3),
    "basic": lambda: _cells().BasicLSTMCell(4, forget_bias=-0.5),
    "gru": lambda: _cells().GRUCell(4),
    "peepholes": lambda: _cells().LSTMCell(4, use_peepholes=True),
    "projection": lambda: _cells().LSTMCell(4, num_proj=2),
    "clipped": lambda: _cells().LSTMCell(4, cell_clip=0.5),
    "lengths": lambda: _cells().LSTMCell(4),  # run with a sequence_length
    "relu": lambda: _cells().LSTMCell(4, activation="relu"),
    "stacked": lambda: _cells().MultiRNNCell([_cells().LSTMCell(4, forget_bias=0.5), _cells().LSTMCell(4)]),
}


def _optimizer(name: str) -> Any:
    import tensorflow as tf

    if name == "adam":
        return tf.compat.v1.train.AdamOptimizer(LR, epsilon=1e-8)
    return tf.compat.v1.train.MomentumOptimizer(LR, 0.9)


class Graph:
    """One tf.compat.v1 training graph: a cell over 5 steps (dynamic_rnn or static_rnn), Dense(3), a Saver."""

    def __init__(self, cell: str, optimizer: str, static: bool = False) -> None:
        import tensorflow as tf
        from tf_keras.api._v1.keras.__internal__.legacy.layers import dense

        tf1 = tf.compat.v1
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf1.set_random_seed(3)
            self.x = tf1.placeholder(tf.float32, [None, 5, 3])
            self.y = tf1.placeholder(tf.int32, [None])
            step = tf1.train.get_or_create_global_step()
            rnn_cell = CELLS[cell]()
            if static:
                outputs, _ = tf1.nn.static_rnn(rnn_cell, tf.unstack(self.x, axis=1), dtype=tf.float32)
                last = outputs[-1]
            else:
                lengths = tf.fill([tf.shape(self.x)[0]], 5) if cell == "lengths" else None
                outputs, _ = tf1.nn.dynamic_rnn(rnn_cell, self.x, sequence_length=lengths, dtype=tf.float32)
                last = outputs[:, -1]
            loss = tf1.losses.sparse_softmax_cross_entropy(self.y, dense(last, 3, name="dense"))
            self.train = _optimizer(optimizer).minimize(loss, global_step=step)
            self.saver = tf1.train.Saver()
            self.init = tf1.global_variables_initializer()
            self.weights = {v.op.name: v for v in tf1.trainable_variables()}

    def save(self, directory: Path) -> Path:
        import tensorflow as tf

        with tf.compat.v1.Session(graph=self.graph) as sess:
            sess.run(self.init)
            for x, y in BATCHES[:SAVED_AT]:
                sess.run(self.train, {self.x: x, self.y: y})
            self.saver.save(sess, str(directory / "model.ckpt"), global_step=SAVED_AT)
        return directory

    def resume(self, directory: Path, steps: int) -> dict[str, np.ndarray]:
        import tensorflow as tf

        with tf.compat.v1.Session(graph=self.graph) as sess:
            self.saver.restore(sess, tf.train.latest_checkpoint(str(directory)))
            for x, y in BATCHES[SAVED_AT : SAVED_AT + steps]:
                sess.run(self.train, {self.x: x, self.y: y})
            return {name: sess.run(v) for name, v in self.weights.items()}


def in_keras_layout(weights: dict[str, np.ndarray], forget_bias: float | tuple[float, ...]) -> dict[str, np.ndarray]:
    """TF1 weights rearranged by hand the way Keras 3 keeps them (an independent statement of the layout),
    named like the factory's variables without the model's name; `forget_bias` per LSTM layer, in order."""
    biases = forget_bias if isinstance(forget_bias, tuple) else (forget_bias,)
    out = {k: v for k, v in weights.items() if k.startswith("dense/")}
    for name, value in weights.items():
        layer = "lstm_1" if "/cell_1/" in name else "lstm"  # MultiRNNCell's second layer
        if name.endswith("lstm_cell/kernel"):
            units = value.shape[1] // 4
            i, j, f, o = (value[:, g * units : (g + 1) * units] for g in range(4))
            fused = np.concatenate([i, f, j, o], axis=1)
            kernel, recurrent = fused[:-units], fused[-units:]
            out[f"{layer}/lstm_cell/kernel"], out[f"{layer}/lstm_cell/recurrent_kernel"] = kernel, recurrent
            bi, bj, bf, bo = np.split(weights[name[: -len("kernel")] + "bias"], 4)
            folded = bf + np.float32(biases[1 if layer == "lstm_1" else 0])
            out[f"{layer}/lstm_cell/bias"] = np.concatenate([bi, folded, bj, bo])
        if name.endswith("gru_cell/gates/kernel"):
            units = value.shape[1] // 2
            scope = name[: -len("gates/kernel")]
            candidate = weights[scope + "candidate/kernel"]
            r, u = value[:, :units], value[:, units:]
            fused = np.concatenate([u, r, candidate], axis=1)
            out["gru/gru_cell/kernel"], out["gru/gru_cell/recurrent_kernel"] = fused[:-units], fused[-units:]
            br, bu = np.split(weights[scope + "gates/bias"], 2)
            out["gru/gru_cell/bias"] = np.concatenate([bu, br, weights[scope + "candidate/bias"]])
    return out


def keras_resume(out: Path, to: str, factory_name: str, steps: int) -> dict[str, np.ndarray]:
    """Keras 3 continuing from the converted output with train_on_batch; weights by their last two names."""
    import keras
    import tensorflow as tf

    from ckpt_tools.conversion.factory import load_factory

    if to == "keras":
        model = keras.models.load_model(out)
    else:
        model = load_factory(factory(factory_name))()
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        checkpoint.restore(tf.train.latest_checkpoint(str(out))).assert_existing_objects_matched()
    for x, y in BATCHES[SAVED_AT : SAVED_AT + steps]:
        model.train_on_batch(x, y)
    out = {}
    for layer in model.layers:  # named by layer (and cell), as paths differ once load_model renames things
        scope = f"{layer.name}/{layer.cell.name}" if hasattr(layer, "cell") else layer.name
        out.update((f"{scope}/{v.name}", keras.ops.convert_to_numpy(v)) for v in layer.weights)
    return out


def deviation(tf1: dict[str, np.ndarray], keras: dict[str, np.ndarray]) -> float:
    assert set(tf1) == {k for k in keras if "seed_generator" not in k}, (sorted(tf1), sorted(keras))
    return max(float(np.max(np.abs(tf1[n] - keras[n]))) for n in tf1)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str, bool], tuple[Path, Graph]]:
    """Each (cell, optimizer, static) graph trained SAVED_AT steps and saved with its .meta, made once."""
    made: dict[tuple[str, str, bool], tuple[Path, Graph]] = {}

    def get(cell: str, optimizer: str, static: bool = False) -> tuple[Path, Graph]:
        if (cell, optimizer, static) not in made:
            graph = Graph(cell, optimizer, static)
            made[(cell, optimizer, static)] = (graph.save(tmp_path_factory.mktemp(cell)), graph)
        return made[(cell, optimizer, static)]

    return get


RESUMED = [
    # (cell, TF1 optimizer, static_rnn, factory, forget_bias, target)
    ("lstm", "adam", False, "lstm_adam", 1.0, "tf2"),
    ("lstm", "adam", False, "lstm_adam", 1.0, "keras"),
    ("gru", "momentum", False, "gru_momentum", 0.0, "tf2"),
    ("gru", "momentum", False, "gru_momentum", 0.0, "keras"),
    ("basic", "adam", True, "lstm_adam", -0.5, "tf2"),
    ("lstm_fb", "momentum", False, "lstm_momentum", 0.3, "keras"),
    ("gru", "adam", True, "gru_adam", 0.0, "tf2"),
    ("stacked", "adam", False, "stacked_lstm_adam", (0.5, 1.0), "tf2"),
]
STACKED_RULES = (
    '{"rules": [{"from": "^rnn/multi_rnn_cell/cell_0/", "to": "lstm/", "side": "a"},'
    ' {"from": "^rnn/multi_rnn_cell/cell_1/", "to": "lstm_1/", "side": "a"}]}'
)


def _resumed(
    sources: Callable[..., tuple[Path, Graph]],
    tmp_path: Path,
    case: tuple[str, str, bool, str, Any, str],
    bounds: tuple[tuple[int, float], ...] = ((1, 1e-5), (20, 1e-4)),
) -> list[float]:
    cell, optimizer, static, factory_name, forget_bias, to = case
    source, graph = sources(cell, optimizer, static)
    out = tmp_path / ("out.keras" if to == "keras" else "out")
    args = ["convert", source, "--model", factory(factory_name), "--out", out, "--to", to]
    if cell == "stacked":  # two layers end alike (lstm_cell/kernel): rules say which is which
        (tmp_path / "rules.json").write_text(STACKED_RULES)
        args += ["--map", tmp_path / "rules.json"]
    report = run_json(args)
    assert report["exactness"] == "exact" and report["written"], report["approximations"]
    translated = [p for p in report["mapping"] if "lstm_cell" in p["target"] or "gru_cell" in p["target"]]
    assert all(p["translated_from"] for p in translated), translated
    assert not [p for p in report["mapping"] if p["translated_from"] and p not in translated]
    assert {p["target"].rpartition("/")[2] for p in translated} == {"kernel", "recurrent_kernel", "bias"}
    assert all(len(p["slots"]) == (2 if optimizer == "adam" else 1) for p in translated), translated
    assert report["checkpoints"][0]["verification"]["slots_equal"] == len(report["mapping"]) * (
        2 if optimizer == "adam" else 1
    )
    converted = keras_resume(out, to, factory_name, 0)
    measured = [deviation(in_keras_layout(graph.resume(source, 0), forget_bias), converted)]
    assert measured[0] == 0.0  # the converted weights are TF1's, rearranged (and the forget bias folded) exactly
    for steps, bound in bounds:
        tf1_after = in_keras_layout(graph.resume(source, steps), forget_bias)
        measured.append(deviation(tf1_after, keras_resume(out, to, factory_name, steps)))
        assert measured[-1] < bound, (case, steps, measured)
    return measured


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", RESUMED, ids=[f"{c}-{o}-{'static' if s else 'dynamic'}-{t}" for c, o, s, *_, t in RESUMED]
)
def test_a_tf1_cell_resumes_as_a_keras_layer(
    sources: Callable[..., tuple[Path, Graph]], tmp_path: Path, case: tuple[str, str, bool, str, Any, str]
) -> None:
    """TF1 continuing its own training 1 and 20 steps vs Keras 3 continuing from convert's output."""
    print(case, _resumed(sources, tmp_path, case))


@pytest.mark.slow
def test_lstm_adam_resumes_one_step(sources: Callable[..., tuple[Path, Graph]], tmp_path: Path) -> None:
    """The representative fast case: TF1 LSTMCell + Adam (dynamic_rnn) into a TF2 checkpoint, one step."""
    _resumed(sources, tmp_path, RESUMED[0], ((1, 1e-5),))


def test_the_forget_bias_matters(sources: Callable[..., tuple[Path, Graph]], tmp_path: Path) -> None:
    """Folding is needed: the written bias is TF1's plus the forget bias the graph adds (0.3 here), and the
    layout check above would fail without it."""
    source, graph = sources("lstm_fb", "momentum")
    out = tmp_path / "out"
    run_cli(["convert", source, "--model", factory("lstm_momentum"), "--out", out])
    converted = keras_resume(out, "tf2", "lstm_momentum", 0)
    unfolded = in_keras_layout(graph.resume(source, 0), 0.0)
    difference = converted["lstm/lstm_cell/bias"] - unfolded["lstm/lstm_cell/bias"]
    np.testing.assert_allclose(difference, np.repeat([0.0, 0.3, 0.0, 0.0], 4).astype(np.float32), atol=1e-7)


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        ("peepholes", "rnn/lstm_cell/w_f_diag: an LSTM cell with peepholes"),
        ("projection", "rnn/lstm_cell/projection/kernel: an LSTM cell with a projection"),
        ("clipped", "a cell clip or another activation"),
        ("relu", "the cell's graph uses Relu"),
    ],
)
def test_cells_keras_has_no_layer_for_are_refused(
    sources: Callable[..., tuple[Path, Graph]], tmp_path: Path, cell: str, reason: str
) -> None:
    source, _ = sources(cell, "adam")
    result = run_cli(["convert", source, "--model", factory("lstm_adam"), "--out", tmp_path / "o", "--dry-run"], 2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0] and "Traceback" not in result.stderr, result.stderr


def test_without_the_graph_the_forget_bias_is_unknown(
    sources: Callable[..., tuple[Path, Graph]], tmp_path: Path
) -> None:
    """No .meta: the forget bias is nowhere in the artifact, so convert refuses rather than assume 1.0."""
    import shutil

    source, _ = sources("lstm", "adam")
    bare = tmp_path / "bare"
    shutil.copytree(source, bare, ignore=shutil.ignore_patterns("*.meta"))
    result = run_cli(["convert", bare, "--model", factory("lstm_adam"), "--out", tmp_path / "o"], 2)
    assert "forget_bias is not stored in the checkpoint" in result.stderr and "does not guess" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("cell", "factory_name", "reason"),
    [
        ("gru", "gru_reset_after", "the factory's GRUCell has reset_after=True"),
        ("lstm", "lstm_relu", "the factory's LSTMCell has activation='relu'"),
        ("lstm", "gru_adam", "no match in the source: seq/gru/gru_cell/bias"),
    ],
)
def test_a_factory_layer_that_computes_otherwise_is_refused(
    sources: Callable[..., tuple[Path, Graph]], tmp_path: Path, cell: str, factory_name: str, reason: str
) -> None:
    source, _ = sources(cell, "momentum" if cell == "gru" else "adam")
    report = run_json(["convert", source, "--model", factory(factory_name), "--out", tmp_path / "o", "--dry-run"], 2)
    assert any(reason in p for p in report["problems"]), report["problems"]


def test_sequence_lengths_are_named_approximate(sources: Callable[..., tuple[Path, Graph]], tmp_path: Path) -> None:
    """dynamic_rnn(sequence_length=...) stops each sequence at its length; the factory's masking is unknown."""
    source, _ = sources("lengths", "adam")
    args = ["convert", source, "--model", factory("lstm_adam"), "--out", tmp_path / "o", "--dry-run"]
    report = run_json(args, 2)
    assert any("with sequence_length" in a for a in report["approximations"]), report["approximations"]
    assert run_json([*args, "--allow-approximate"])["exactness"] == "approximate"


def test_inspect_still_shows_the_checkpoint_as_stored(sources: Callable[..., tuple[Path, Graph]]) -> None:
    source, _ = sources("lstm", "adam")
    names = {v["name"]: v["shape"] for v in run_json(["inspect", source])["variables"]}
    assert names["rnn/lstm_cell/kernel"] == [7, 16] and "rnn/lstm_cell/recurrent_kernel" not in names


@pytest.mark.parametrize("layout", ["two_loops", "stacked"])
def test_each_cell_takes_its_own_forget_bias(tmp_path: Path, layout: str) -> None:
    """Two LSTMs with forget biases 0.5 and 2.0 (two dynamic_rnn loops, or a MultiRNNCell): each folded bias
    is its own TF1 bias plus its own constant, found in its own while-loop body."""
    import tensorflow as tf

    from ckpt_tools.conversion.rnn import cell_view
    from ckpt_tools.readers.registry import open_checkpoint

    tf1, cells = tf.compat.v1, _cells()
    with tf.Graph().as_default():
        x = tf1.placeholder(tf.float32, [None, 5, 3])
        if layout == "two_loops":
            tf1.nn.dynamic_rnn(cells.LSTMCell(4, forget_bias=0.5), x, dtype=tf.float32, scope="enc")
            tf1.nn.dynamic_rnn(cells.LSTMCell(4, forget_bias=2.0), x, dtype=tf.float32, scope="dec")
            scopes = ["enc/lstm_cell", "dec/lstm_cell"]
        else:
            stacked = cells.MultiRNNCell([cells.LSTMCell(4, forget_bias=0.5), cells.LSTMCell(4, forget_bias=2.0)])
            tf1.nn.dynamic_rnn(stacked, x, dtype=tf.float32)
            scopes = [f"rnn/multi_rnn_cell/cell_{i}/lstm_cell" for i in (0, 1)]
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            variables = {v.op.name: v for v in tf1.global_variables()}
            stored = {s: sess.run(variables[f"{s}/bias"]) for s in scopes}
            tf1.train.Saver().save(sess, str(tmp_path / "model.ckpt"))
    view = cell_view(open_checkpoint(tmp_path))
    for scope, forget_bias in zip(scopes, (0.5, 2.0), strict=True):
        i, j, f, o = np.split(stored[scope], 4)
        want = np.concatenate([i, f + np.float32(forget_bias), j, o])
        np.testing.assert_array_equal(view[f"{scope}/bias"].read(), want)


def test_a_keras_layout_lstm_in_a_tf1_graph_is_left_alone(tmp_path: Path) -> None:
    """A tf_keras LSTM layer run in a TF1 graph already stores kernel/recurrent_kernel (here 6 inputs > 2 units,
    which a fused kernel's shape could also be): it is matched as stored, not translated."""
    import tensorflow as tf
    import tf_keras

    from ckpt_tools.conversion.rnn import cell_view
    from ckpt_tools.readers.registry import open_checkpoint

    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        tf_keras.layers.LSTM(2, name="lstm")(tf1.placeholder(tf.float32, [None, 5, 6]))
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            tf1.train.Saver().save(sess, str(tmp_path / "model.ckpt"))
    source = open_checkpoint(tmp_path)
    view = cell_view(source)
    assert view is source and tuple(view["lstm/lstm_cell/kernel"].shape) == (6, 8)
