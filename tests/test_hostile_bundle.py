"""Hostile bundles, state files, object graphs, V1 files and symlinks (issue #14, round 2): what the malformed
corpus cannot check by exit codes alone — the right names and values, the check validate names, limits' messages,
and that the refusals are fast."""

from __future__ import annotations

import contextvars
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ckpt_tools
from ckpt_tools.bundle.reader import MAX_SHARDS, regions_disjoint
from ckpt_tools.bundle.table import SNAPPY_TOTAL_FACTOR
from ckpt_tools.errors import CkptToolsError, CorruptCheckpointError, UnsafeInputError
from ckpt_tools.readers.confine import following_symlinks
from ckpt_tools.readers.paths import MAX_STATE_BYTES, read_state, resolve_state_entry, unescape

from .conftest import FIXTURES, child_env, load_malformed_generator, needs_tf, run_cli, run_json

mm = load_malformed_generator()
import malformed_bundle as mb  # noqa: E402  (fixtures/ is on sys.path once the generator is loaded)


def _values(path: Path) -> dict[str, Any]:
    """name -> value of every variable of an artifact, through the library."""
    with ckpt_tools.open(path) as vmap:
        return {v.name: v.read() for v in vmap.values()}


def _same_values(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _followed(args: list[Any]) -> int:
    """Exit code of `ckpt ARGS --follow-symlinks`, run in a copy of the context: the flag sets a context
    variable for the rest of the process, which must not leak into the next in-process invocation."""
    return int(contextvars.copy_context().run(lambda: run_cli([*args, "--follow-symlinks"], expect=None)).exit_code)


def _one_error_line(result: Any) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckpt: error: "), result.stderr
    assert "internal error" not in lines[0] and "Traceback" not in result.output
    return str(lines[0])


# ------------------------------------------------------------------------------------------------ non-ASCII names
@pytest.mark.parametrize(
    ("fixture", "renames"), [("tf1_adam", {"model.ckpt": "模型.ckpt"}), ("tf2_keras3_adam", {"ckpt": "модель"})]
)
def test_non_ascii_checkpoint_names_read_like_the_original(
    tmp_path: Path, fixture: str, renames: dict[str, str]
) -> None:
    d = tmp_path / "run"
    shutil.copytree(FIXTURES / fixture, d)
    old, new = next(iter(renames.items()))
    for file in sorted(d.iterdir()):
        if file.name.startswith(old + "-"):
            file.rename(d / (new + file.name[len(old) :]))
    state = (d / "checkpoint").read_text(encoding="utf-8").replace(f'"{old}-', f'"{new}-')
    (d / "checkpoint").write_text(state, encoding="utf-8")
    report = run_json(["inspect", d])
    assert report["path"] == str(d) and new in report["metadata"]["prefix"]
    _same_values(_values(d), _values(FIXTURES / fixture))
    assert run_cli(["validate", d], expect=None).exit_code == run_cli(["validate", FIXTURES / fixture], None).exit_code


def test_octal_escaped_utf8_state_entries(tmp_path: Path) -> None:
    """Older protobuf text format escapes every non-ASCII byte as octal: the bytes are UTF-8, not Latin-1."""
    d = tmp_path / "run"
    shutil.copytree(FIXTURES / "tf1_adam", d)
    for file in d.glob("model.ckpt-*"):
        file.rename(d / file.name.replace("model", "модель"))
    octal = "".join(f"\\{b:03o}" for b in "модель".encode())
    (d / "checkpoint").write_text(f'model_checkpoint_path: "{octal}.ckpt-6"\n')
    state = read_state(d)
    assert state is not None and state.latest == "модель.ckpt-6"
    assert run_json(["inspect", d])["metadata"]["prefix"].endswith("модель.ckpt-6")


@needs_tf
def test_non_ascii_names_written_by_tensorflow_match_tensorflow(tmp_path: Path) -> None:
    """Checkpoints TensorFlow writes under UTF-8 names (state file in raw UTF-8): names and values as TF reads them."""
    import tensorflow as tf

    kernel = tf.Variable(np.arange(12, dtype="f4").reshape(3, 4), name="kernel")
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(层=kernel), str(tmp_path / "tf2"), 3, checkpoint_name="модель"
    )
    manager.save()
    kernel.assign_add(tf.ones((3, 4)))
    manager.save()
    with tf.Graph().as_default():
        weight = tf.compat.v1.get_variable("weight", initializer=np.arange(6, dtype="f4"))
        tf.compat.v1.train.get_or_create_global_step()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(tmp_path / "tf1" / "模型.ckpt"), global_step=3)
            sess.run(weight.assign_add(np.ones(6, "f4")))
            saver.save(sess, str(tmp_path / "tf1" / "模型.ckpt"), global_step=5)
    for d in (tmp_path / "tf1", tmp_path / "tf2"):
        latest = tf.train.latest_checkpoint(str(d))
        expected = {k: tf.train.load_variable(latest, k) for k, _ in tf.train.list_variables(latest)}
        with ckpt_tools.open(d) as vmap:
            assert str(vmap.prefix) == latest
            got = {v.key: v.read() for v in vmap.values()}
        expected.pop("_CHECKPOINTABLE_OBJECT_GRAPH", None)
        _same_values(got, expected)
        assert run_cli(["validate", d, "--allow-weights-only"], expect=None).exit_code == 0, d


# ------------------------------------------------------------------------------------------------ state files
def _state_dir(tmp_path: Path, text: str, fixture: str = "tf1_adam") -> Path:
    d = tmp_path / "run"
    shutil.copytree(FIXTURES / fixture, d)
    (d / "checkpoint").write_text(text, encoding="utf-8")
    return d


@pytest.mark.parametrize(
    ("latest", "every", "reason"),
    [
        ("model.ckpt-3", ["model.ckpt-6", "model.ckpt-3"], "not in ascending step order ('model.ckpt-6' before"),
        (
            "model.ckpt-3",
            ["model.ckpt-3", "model.ckpt-6"],
            "latest checkpoint 'model.ckpt-3' (model_checkpoint_path) is not the last",
        ),
        ("model.ckpt-3", ["model.ckpt-6"], "(model_checkpoint_path) is not one of all_model_checkpoint_paths"),
    ],
)
def test_validate_fails_state_files_tensorflow_never_writes(
    tmp_path: Path, latest: str, every: list[str], reason: str
) -> None:
    lines = [f'model_checkpoint_path: "{latest}"', *(f'all_model_checkpoint_paths: "{e}"' for e in every)]
    d = _state_dir(tmp_path, "\n".join(lines) + "\n")
    report = ckpt_tools.validate(d)
    assert report.exit_code == 1 and [c.name for c in report.failed] == ["state"], report.problems()
    assert report.check("state").reason.startswith("state order: ") and reason in report.check("state").reason
    out = json.loads(run_cli(["validate", d, "--json"], expect=1).stdout)
    state = next(c for c in out["artifacts"][0]["checks"] if c["name"] == "state")
    assert state["status"] == "fail" and reason in state["reason"]
    junit = tmp_path / "report.xml"
    run_cli(["validate", d, "--junit", junit], expect=1)
    assert 'message="failed checks: state"' in junit.read_text()


def test_the_fixture_state_files_are_in_order() -> None:
    for d in (FIXTURES / "tf1_adam", FIXTURES / "tf2_keras3_adam"):
        assert ckpt_tools.validate(d).check("state").status == "pass"


def test_thirty_thousand_retained_checkpoints(tmp_path: Path, no_hang: None) -> None:
    """30 000 entries (2.7 MB with CheckpointManager's timestamps) are read; validate names what is wrong."""
    steps = [*range(10, 30_009), 6]
    entries = "".join(
        f'all_model_checkpoint_paths: "model.ckpt-{i}"\nall_model_checkpoint_timestamps: {i}.5\n' for i in steps
    )
    d = _state_dir(tmp_path, 'model_checkpoint_path: "model.ckpt-6"\n' + entries)
    state = read_state(d)
    assert state is not None and len(state.all) == 30_000 and state.latest == "model.ckpt-6"
    assert run_json(["inspect", d])["metadata"]["prefix"].endswith("model.ckpt-6")
    reason = ckpt_tools.validate(d).check("state").reason
    assert "29,999 checkpoints that do not exist: model.ckpt-10 (no .index)" in reason, reason
    assert "not in ascending step order ('model.ckpt-30008' before 'model.ckpt-6')" in reason, reason


def test_state_file_limit_and_linear_parse(tmp_path: Path, no_hang: None) -> None:
    d = _state_dir(tmp_path, "")
    for body in (
        "a" * (MAX_STATE_BYTES - 100),
        "\\\\a" * ((MAX_STATE_BYTES - 100) // 3),
        "\\" * (MAX_STATE_BYTES - 100),
    ):
        (d / "checkpoint").write_text(f'model_checkpoint_path: "{body}\n')  # never terminated
        with pytest.raises(CorruptCheckpointError, match="unreadable line"):
            read_state(d)
    escaped = "\\\\" * ((MAX_STATE_BYTES - 100) // 2)  # the densest valid line: escaped backslashes
    (d / "checkpoint").write_text(f'model_checkpoint_path: "{escaped}"\n')
    state = read_state(d)
    assert state is not None and state.latest == "\\" * (len(escaped) // 2)
    (d / "checkpoint").write_text('model_checkpoint_path: "x"\n' + "#" * MAX_STATE_BYTES)
    with pytest.raises(CorruptCheckpointError, match=f"larger than {MAX_STATE_BYTES >> 20} MiB"):
        read_state(d)


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ("plain", "plain"),
        ("a\\\\b", "a\\b"),
        ('q\\"q', 'q"q'),
        ("\\320\\274", "м"),
        ("\\xd0\\xbc", "м"),
        ("tab\\t", "tab\t"),
    ],
)
def test_unescape(body: str, text: str) -> None:
    assert unescape(body) == text


@pytest.mark.parametrize("body", ["\\x", "\\N{BULLET}", "\\u12", "\\q", 'a"b', "a\\", "\\377", "\\\\\\"])
def test_unescape_refuses(body: str) -> None:
    with pytest.raises(ValueError):
        unescape(body)


@pytest.mark.parametrize(
    ("entry", "outcome"),
    [
        ("model.ckpt-6", "model.ckpt-6"),
        ("sub/../model.ckpt-6", "model.ckpt-6"),
        ("/elsewhere/model.ckpt-6", "model.ckpt-6"),  # a moved folder: the base name, looked up inside
        ("/etc/passwd", "passwd"),
        ("../model.ckpt-6", UnsafeInputError),
        (".", UnsafeInputError),
        ("/..", UnsafeInputError),
        ("model.ckpt-6\x00", UnsafeInputError),
    ],
)
def test_state_entries_stay_inside(tmp_path: Path, entry: str, outcome: Any) -> None:
    if isinstance(outcome, str):
        assert resolve_state_entry(tmp_path, entry) == Path(os.path.realpath(tmp_path)) / outcome
    else:
        with pytest.raises(outcome):
            resolve_state_entry(tmp_path, entry)


def test_nul_in_an_older_entry_fails_only_the_state_check(tmp_path: Path) -> None:
    d = _state_dir(tmp_path, 'model_checkpoint_path: "model.ckpt-6"\nall_model_checkpoint_paths: "a\\000b"\n')
    run_cli(["inspect", d])
    report = ckpt_tools.validate(d)
    assert [c.name for c in report.failed] == ["state"] and "NUL byte" in report.check("state").reason


# ------------------------------------------------------------------------------------------------ limits
def test_a_million_shards_is_refused_without_probing(tmp_path: Path, no_hang: None) -> None:
    d = tmp_path / "run"
    shutil.copytree(FIXTURES / "tf1_adam", d)
    idx = mm.Index(d / "model.ckpt-6.index")
    idx.header.num_shards = MAX_SHARDS + 1
    idx.write(d / "model.ckpt-6.index")
    line = _one_error_line(run_cli(["inspect", d], expect=2))
    assert f"implausible shard count {MAX_SHARDS + 1}" in line and "model.ckpt-6.index" in line


def test_snappy_bomb_is_refused_before_inflating(tmp_path: Path, no_hang: None) -> None:
    """12 MB of snappy copy runs that would inflate to 256 MiB (seconds of pure-Python decoding per parse)."""
    index = tmp_path / "model.ckpt.index"
    index.write_bytes(mb._snappy_bomb(blocks=256, value_bytes=1 << 20))
    assert 11 << 20 < index.stat().st_size < 13 << 20
    line = _one_error_line(run_cli(["inspect", tmp_path], expect=2))
    assert "snappy blocks inflate to more than" in line and f"({SNAPPY_TOTAL_FACTOR} x the file size + " in line


def test_small_snappy_tables_still_read(tmp_path: Path) -> None:
    d = tmp_path / "run"
    shutil.copytree(FIXTURES / "tf1_adam", d)
    rows = mm.read_table(d / "model.ckpt-6.index")
    (d / "model.ckpt-6.index").write_bytes(mm.write_table(rows, snappy=True))
    _same_values(_values(d), _values(FIXTURES / "tf1_adam"))


def test_partitions_aliasing_4_gib_are_refused(tmp_path: Path) -> None:
    rows = 1 << 18
    mb._partitioned(tmp_path, [4096 * rows, 1], [[(i * rows, rows), (0, 1)] for i in range(4096)], alias=True)
    line = _one_error_line(run_cli(["inspect", "--stats", tmp_path], expect=2))
    assert "model.ckpt-7.data-00000-of-00001: tensor 'part/kernel slice [[0, 262144], [0, 1]]' shares bytes" in line
    assert "(bytes 8..1048584 and 8..1048584; entries never overlap in a real bundle)" in line


def test_thousands_of_slices(tmp_path: Path, no_hang: None) -> None:
    n = 10_000  # pairwise overlap checks took minutes; the grid takes well under a second
    (tmp_path / "ok").mkdir()
    (tmp_path / "bad").mkdir()
    mb._partitioned(tmp_path / "ok", [n, 4], [[(i, 1), (0, 4)] for i in range(n)])
    mb._partitioned(tmp_path / "bad", [n, 4], [[(i, 1), (0, 4)] for i in range(2, n)] + [[(n - 2, 2), (0, 4)]])
    with ckpt_tools.open(tmp_path / "ok") as vmap:
        assert vmap["part/kernel"].read().shape == (n, 4)
    line = _one_error_line(run_cli(["inspect", "--stats", tmp_path / "bad"], expect=2))
    assert "slices of 'part/kernel' overlap" in line


def test_regions_disjoint() -> None:
    def box(*bounds: tuple[int, int]) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in bounds)

    assert regions_disjoint([box((0, 2), (0, 4)), box((2, 4), (0, 4)), box((4, 4), (0, 4))])
    assert not regions_disjoint([box((0, 3), (0, 4)), box((2, 4), (1, 2))])
    assert not regions_disjoint([(), ()])
    diagonal = [box((i * 7, i * 7 + 5), (i * 11, i * 11 + 3), (i, i + 1)) for i in range(300)]  # a sparse grid
    assert regions_disjoint(diagonal) and not regions_disjoint([*diagonal, box((3, 9), (0, 1 << 40), (0, 2))])
    with pytest.raises(ValueError, match="irregular layout"):
        regions_disjoint([box((i * 7, i * 7 + 5), (i * 11, i * 11 + 3), (i, i + 1)) for i in range(5000)])


def test_thousands_of_optimizer_objects_are_refused(tmp_path: Path) -> None:
    g = mb._real_graph()
    for i in range(100):
        node = g.nodes.add()
        node.slot_variables.add(original_variable_node_id=0, slot_name="m", slot_variable_node_id=0)
        g.nodes[0].children.add(node_id=len(g.nodes) - 1, local_name=f"opt{i}")
    builder = mm.Builder(tmp_path)
    builder.cases_dir.mkdir()
    mb._graph_case(builder, "many", g, "many optimizers")
    line = _one_error_line(run_cli(["inspect", tmp_path / "cases" / "many"], expect=2))
    assert "object graph holds 101 optimizer-like objects (more than 64; refused)" in line and "/many" in line


def test_bundle_key_with_5000_digits(tmp_path: Path) -> None:
    d = tmp_path / "run"
    shutil.copytree(FIXTURES / "tf1_adam", d)
    idx = mm.Index(d / "model.ckpt-6.index")
    idx.entries[b"dense/kernel_" + b"7" * 5000] = idx.entries.pop(b"dense/kernel")
    idx.write(d / "model.ckpt-6.index")
    assert "internal error" not in run_cli(["inspect", d], expect=None).stderr


# ------------------------------------------------------------------------------------------------ V1 (TensorFlow)
def _v1(tmp_path: Path) -> Path:
    d = tmp_path / "v1"
    shutil.copytree(FIXTURES / "tf1_v1format", d)
    return d


@needs_tf
def test_v1_huge_declared_shape_is_refused_before_tensorflow_allocates(tmp_path: Path) -> None:
    d = _v1(tmp_path)
    mb.v1_huge_shape(d)
    assert run_json(["inspect", d])["format"] == "tf1-checkpoint"
    line = _one_error_line(run_cli(["inspect", "--stats", d], expect=2))
    assert "tensor 'dense/kernel' declares shape [1048576, 1048576], more elements than a file of" in line
    assert run_cli(["validate", d], expect=None).exit_code == 1


@needs_tf
def test_v1_tensorflow_errors_are_one_line(tmp_path: Path) -> None:
    d = _v1(tmp_path)
    mb.v1_without_data(d)
    line = _one_error_line(run_cli(["inspect", "--stats", d], expect=2))
    assert "model.ckpt-2: tensor 'dense/kernel' unreadable (" in line


@needs_tf
def test_v1_glob_names_never_reach_tensorflow(tmp_path: Path) -> None:
    d = _v1(tmp_path)
    (d / "model.ckpt-2").rename(d / "model.ckpt-[2]")
    os.mkfifo(d / "model.ckpt-2")
    (d / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-[2]"\n')
    code = (
        "import sys\nfrom ckpt_tools.cli import main\n"
        "try:\n    main([sys.argv[1], sys.argv[2]], prog_name='ckpt')\n"
        "except SystemExit as exc:\n    print('exit', exc.code, 'tf' if 'tensorflow' in sys.modules else 'no-tf')\n"
    )
    for command in ("inspect", "validate"):
        done = subprocess.run(
            [sys.executable, "-c", code, command, str(d)], capture_output=True, text=True, timeout=60, env=child_env()
        )
        assert done.stdout.split()[-3:] == ["exit", "2", "no-tf"], done
    assert "would expand this path as a glob pattern" in done.stdout + done.stderr


# ------------------------------------------------------------------------------------------------ symlinks
@pytest.fixture
def linked(tmp_path: Path) -> dict[str, Path]:
    """One copy per symlink case, each pointing into tmp_path/outside (a valid twin of what it replaces)."""
    builder = mm.Builder(tmp_path)
    builder.cases_dir.mkdir()
    mm.make_outside(builder)
    mb.symlink_cases(builder)
    return {c.name: tmp_path / c.path for c in builder.cases}


ESCAPING = [
    "symlink_data_shard",
    "symlink_index",
    "symlink_state_file",
    "symlink_state_entry_dir",
    "symlink_sm_variables",
    "symlink_sm_pb",
]


@pytest.mark.parametrize("name", ESCAPING)
def test_symlinks_out_of_the_artifact_are_refused_unless_followed(linked: dict[str, Path], name: str) -> None:
    line = _one_error_line(run_cli(["inspect", linked[name]], expect=2))
    assert "outside" in line and "--follow-symlinks" in line and f"/{name}/" in line
    assert (
        _followed(["inspect", linked[name]]) == 0 and _followed(["validate", "--require", "files", linked[name]]) == 0
    )
    with following_symlinks():
        _values(linked[name])
    with pytest.raises(UnsafeInputError):
        _values(linked[name])


@pytest.mark.parametrize("name", ["symlink_inside", "symlink_to_artifact"])
def test_symlinks_inside_the_artifact_are_read(linked: dict[str, Path], name: str) -> None:
    _same_values(_values(linked[name]), _values(FIXTURES / "tf1_adam"))
    assert run_cli(["validate", linked[name]], expect=None).exit_code == 0


def test_validate_reports_the_refusal(linked: dict[str, Path]) -> None:
    for name in ESCAPING:
        report = ckpt_tools.validate(linked[name])
        assert report.exit_code == 2 and report.error is not None and "--follow-symlinks" in report.error, name
        with pytest.raises(CkptToolsError, match="outside"):
            ckpt_tools.open(linked[name])


def test_a_state_file_naming_a_missing_checkpoint_is_one_exact_error(tmp_path: Path) -> None:
    """A `checkpoint` state file whose latest checkpoint is gone (the rest of the directory deleted): the directory
    is a checkpoint directory, so every command names the missing checkpoint instead of "not a recognized
    checkpoint" with a reason per reader (one of which read "unreadable (None)")."""
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "gone-1"\n')
    expected = f"{tmp_path / 'checkpoint'}: latest checkpoint 'gone-1' does not exist"
    result = run_cli(["inspect", str(tmp_path)], expect=2)
    assert result.stderr == f"ckpt: error: {expected}\n" and not result.stdout
    report = run_json(["validate", str(tmp_path)], expect=2)
    assert report["artifacts"][0]["verdict"] == "unreadable" and report["artifacts"][0]["error"] == expected


def test_a_megabytes_long_state_entry_is_not_echoed_whole(tmp_path: Path) -> None:
    """A state file may be 8 MiB, its one entry as long: the error line, validate's report (text and JSON) and
    ls's error line each quote a bounded part of it (validate and ls had echoed all 8 MB)."""
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "' + "a" * 8_000_000 + '"\n')
    assert len(run_cli(["inspect", str(tmp_path)], expect=2).stderr) < 2200
    for args in (["validate"], ["validate", "--json"], ["ls"], ["ls", "--json"]):
        result = run_cli([*args, str(tmp_path)], expect=None)
        assert result.exit_code in (1, 2) and 0 < len(result.stdout + result.stderr) < 5000, args


def _resolution_cases(base: Path) -> list[Path]:
    """Paths of every kind a hostile artifact can hold, for the resolver to agree with os.path.realpath on."""
    (base / "dir" / "sub").mkdir(parents=True)
    (base / "dir" / "file").write_bytes(b"x")
    os.mkfifo(base / "fifo")
    links = {"to_file": "dir/file", "to_dir": "dir", "chain": "to_dir", "dangling": "gone", "loop": "loop"}
    for name, target in links.items():
        (base / name).symlink_to(target)
    (base / "dir" / "up").symlink_to("../dir/sub")
    names = ["dir", "dir/file", "fifo", "to_file", "to_dir/file", "chain/sub", "dangling", "dangling/x", "loop"]
    names += ["loop/x", "dir/up/..", "to_dir/../dir/file", "missing/x", "dir/file/x", "dir/sub/"]
    return [base / name for name in names]


def test_real_path_agrees_with_os_realpath_on_every_kind_of_path(tmp_path: Path) -> None:
    from ckpt_tools.readers.confine import real_path

    for path in _resolution_cases(tmp_path):
        assert real_path(path) == os.path.realpath(path), path
    relative = os.path.relpath(tmp_path / "chain" / "sub")
    assert real_path(relative) == os.path.realpath(relative)


def test_validating_a_deep_checkpoint_costs_a_few_lstat_calls_per_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolving a path component by component walks it again per component: 63 resolutions of a checkpoint
    300 folders deep were about 19,000 lstat calls (2.65 s at 1,500 deep). Counted, not timed."""
    deep = tmp_path.joinpath(*["d"] * 300)
    deep.mkdir(parents=True)
    for file in (FIXTURES / "tf1_adam").iterdir():
        shutil.copy(file, deep / file.name)
    calls = 0
    real_lstat = os.lstat

    def counting_lstat(*args: Any, **kwargs: Any) -> os.stat_result:
        nonlocal calls
        calls += 1
        return real_lstat(*args, **kwargs)

    monkeypatch.setattr(os, "lstat", counting_lstat)
    run_cli(["validate", str(deep)], expect=0)
    assert calls < 10 * 300, calls
