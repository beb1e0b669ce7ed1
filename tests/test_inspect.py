"""`ckpt inspect` against the truth that TensorFlow and h5py reported when the fixtures were written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ckpt_tools.readers.registry import detect, formats, reader

from .conftest import FIXTURES, HAS_TF, ROOT, child_env, expected_fixtures, fixture_path, run_cli, run_json

ALL_TRUTHS = expected_fixtures()
# V1-format checkpoints are read through TensorFlow; without it they give exit 2 (tests/test_no_tensorflow.py).
TRUTHS = [t for t in ALL_TRUTHS if HAS_TF or t["id"] != "tf1_v1format"]
IDS = [t["id"] for t in TRUTHS]


def test_fixtures_exist() -> None:
    assert len(ALL_TRUTHS) >= 20, "run fixtures/make_fixtures.py"
    assert {t["format"] for t in ALL_TRUTHS} == set(formats())


def test_every_reader_module_is_registered() -> None:
    """Every module under ckpt_tools/readers that declares a READER is in the registry under its own name."""
    import importlib
    import pkgutil

    import ckpt_tools.readers as package

    declared = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"ckpt_tools.readers.{info.name}")
        if hasattr(module, "READER"):
            declared[module.READER.name] = module.READER
    assert set(declared) == set(formats())
    assert all(reader(name) is spec for name, spec in declared.items())


@pytest.mark.parametrize("truth", TRUTHS, ids=IDS)
def test_inspect_json_matches_truth(truth: dict) -> None:
    report = run_json(["inspect", fixture_path(truth)])
    assert report["format"] == truth["format"]
    got = sorted([v["key"], v["shape"], v["dtype"]] for v in report["variables"])
    assert got == sorted([k, list(s), d] for k, s, d in truth["tensors"])
    assert report["optimizer"]["present"] == truth["optimizer"]["present"]
    assert report["step"] == truth["step"]
    roles = {v["role"] for v in report["variables"]}
    assert roles <= {"weight", "optimizer", "step", "other"}
    assert report["resume"]["resumable"] == truth["resumable"], report["resume"]


@pytest.mark.parametrize("truth", TRUTHS, ids=IDS)
def test_detected_by_exactly_one_reader(truth: dict) -> None:
    path = fixture_path(truth)
    accepted = [fmt for fmt in formats() if reader(fmt).sniff(path) is None]
    assert accepted == [truth["format"]]
    assert detect(path) == truth["format"]


@pytest.mark.parametrize("truth", TRUTHS, ids=IDS)
def test_table_output_has_summary(truth: dict) -> None:
    out = run_cli(["inspect", fixture_path(truth)]).stdout
    assert f"format:     {truth['format']}" in out
    present = truth["optimizer"]["present"]
    assert "optimizer:  " + ("unknown" if present is None else "present" if present else "absent") in out


@pytest.mark.parametrize("truth", [t for t in TRUTHS if t["tensors"]][:6], ids=lambda t: t["id"])
def test_stats_read_every_listed_tensor(truth: dict) -> None:
    report = run_json(["inspect", fixture_path(truth), "--stats"])
    assert all("stats" in v for v in report["variables"])


def test_filter_glob() -> None:
    truth = next(t for t in TRUTHS if t["id"] == "tf1_adam")
    report = run_json(["inspect", fixture_path(truth), "--filter", "dense/*"])
    keys = {v["key"] for v in report["variables"]}
    assert keys and all(k.startswith("dense/") for k in keys)
    assert report["summary"]["tensors"] > len(keys)


def test_unknown_file_lists_every_reader(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    result = run_cli(["inspect", junk], expect=2)
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in result.output
    for fmt in formats():
        assert fmt in line


def test_missing_path_is_one_line(tmp_path: Path) -> None:
    result = run_cli(["inspect", tmp_path / "nope"], expect=2)
    assert result.stderr.count("\n") == 1 and "no such file" in result.stderr


@pytest.mark.parametrize("suffix", ["keras_archive", "keras_h5", "keras2_h5"])
def test_hdf5_inspect_does_not_import_tensorflow(suffix: str) -> None:
    fmt = {"keras_archive": "keras-archive", "keras_h5": "keras-weights-h5", "keras2_h5": "keras2-h5"}[suffix]
    truth = next(t for t in TRUTHS if t["format"] == fmt and t["tensors"])
    code = (
        "import sys, json\n"
        "from ckpt_tools.cli import main\n"
        "try:\n"
        f"    main(['inspect', {str(fixture_path(truth))!r}, '--json', '--stats'])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "bad = [m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_bundle_inspect_does_not_import_tensorflow() -> None:
    paths = [
        str(fixture_path(t))
        for t in TRUTHS
        if t["format"] in ("tf1-checkpoint", "tf2-checkpoint", "saved-model") and t["id"] != "tf1_v1format"
    ]
    code = (
        "import sys\n"
        "from ckpt_tools.inspection import inspect\n"
        f"for p in {paths!r}:\n"
        "    inspect(p, stats=True)\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_json_is_one_object() -> None:
    truth = TRUTHS[0]
    out = run_cli(["inspect", fixture_path(truth), "--json"]).stdout
    obj = json.loads(out)
    assert set(obj) >= {"path", "format", "variables", "optimizer", "step", "summary"}
    assert FIXTURES.exists()


def test_damaged_index_is_reported_as_damaged_not_unrecognized(tmp_path: Path) -> None:
    import shutil

    ckpt = tmp_path / "tf1_adam"
    shutil.copytree(FIXTURES / "tf1_adam", ckpt)
    index = ckpt / "model.ckpt-6.index"
    index.write_bytes(index.read_bytes()[:100])
    line = run_cli(["inspect", ckpt], expect=2).stderr.strip()
    assert "model.ckpt-6.index" in line and "not a recognized checkpoint" not in line


@pytest.mark.parametrize("truth", TRUTHS, ids=IDS)
def test_text_is_what_tabulate_and_json_write(truth: dict) -> None:
    """The table is tabulate's "simple" layout of the listed rows and `--json` is `json.dumps(indent=2)` of the
    object it holds, byte for byte (ckpt lays out plain tables and writes JSON itself, for speed at scale)."""
    from tabulate import tabulate

    path = fixture_path(truth)
    text = run_cli(["inspect", path]).stdout
    out = run_cli(["inspect", path, "--json"]).stdout
    report = json.loads(out)
    assert out == json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    variables = report["variables"]
    show_key = any(v["key"] != v["name"] for v in variables)
    rows = [
        [
            v["name"],
            "[" + ", ".join(map(str, v["shape"])) + "]",
            v["dtype"],
            "alias" if "alias_of" in v else v["role"],
            *([v["key"] if v["key"] != v["name"] else ""] if show_key else []),
        ]
        for v in variables
    ]
    headers = ["name", "shape", "dtype", "role", *(["key"] if show_key else [])]
    expected = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
    assert text.split("\n\npath:", 1)[0] == expected


def test_an_index_changed_in_place_is_parsed_again(tmp_path: Path) -> None:
    """Detection and the reader share one parse of an index; an index whose bytes changed since (same size, same
    second) is parsed again, so the damage is reported rather than the remembered entries used."""
    import shutil

    from ckpt_tools.errors import CorruptCheckpointError
    from ckpt_tools.inspection import inspect

    ckpt = tmp_path / "tf1_adam"
    shutil.copytree(FIXTURES / "tf1_adam", ckpt)
    index = ckpt / "model.ckpt-6.index"
    expected = len(inspect(FIXTURES / "tf1_adam").variables)
    assert len(inspect(ckpt).variables) == expected  # the last index parsed: ckpt's
    data = bytearray(index.read_bytes())
    data[10] ^= 0xFF  # inside the first data block: its CRC no longer matches
    stat = index.stat()
    index.write_bytes(bytes(data))
    os.utime(index, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(CorruptCheckpointError, match="checksum"):
        inspect(ckpt)
