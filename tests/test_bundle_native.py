"""The native tensor-bundle reader against TensorFlow's own reader, on bundles real TensorFlow writes."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckpt_tools.bundle import BundleReader, has_object_graph, is_bundle_index, protos
from ckpt_tools.bundle.orderedcode import (
    decode_tensor_name_slice,
    encode_tensor_name_slice,
    read_signed_num_increasing,
    write_signed_num_increasing,
)
from ckpt_tools.bundle.table import TableFormatError, crc32c, mask_crc, snappy_decompress, unmask_crc
from ckpt_tools.bundle.values import SCALAR_CODES
from ckpt_tools.errors import ChecksumError, CkptToolsError, CorruptCheckpointError, MissingFileError
from ckpt_tools.model import COUNTER_DTYPES

from .conftest import child_env

SHARED = Path(__file__).resolve().parents[2] / "shared"
CORPUS = SHARED / "corpus"
FUZZ_EXAMPLES = int(os.environ.get("CKPT_FUZZ_EXAMPLES", "120"))
STRINGS = [b"h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93", b"", b"\x00\xff binary", "日本語".encode()]


# --------------------------------------------------------------------------------------------- TF side
def _write_tf1(tf: Any, root: Path) -> Path:
    """A TF1 Saver bundle with every plain dtype, scalars, empty shapes, strings and a partitioned variable."""
    tf1 = tf.compat.v1
    rng = np.random.default_rng(0)
    values: dict[str, Any] = {
        "float16": rng.standard_normal((3, 4)).astype(np.float16),
        "float32": rng.standard_normal((2, 3, 4)).astype(np.float32),
        "float64": rng.standard_normal((5,)),
        "int8": np.array([-128, 0, 127], np.int8),
        "int16": np.array([-32768, 7, 32767], np.int16),
        "int32": np.array([[-(2**31), 1], [2, 2**31 - 1]], np.int32),
        "int64": np.array([-(2**63), 2**63 - 1], np.int64),
        "uint8": np.array([0, 200, 255], np.uint8),
        "uint16": np.array([1, 65535], np.uint16),
        "bool": np.array([True, False, True]),
        "complex64": (rng.standard_normal(3) + 2j).astype(np.complex64),
        "complex128": rng.standard_normal(2) - 1j,
        "scalar": np.float32(3.5),
        "empty": np.zeros((0,), np.float32),
        "empty_2d": np.zeros((3, 0), np.int64),
        "scope/nested/name": np.arange(6, dtype=np.float32).reshape(2, 3),
    }
    graph = tf.Graph()
    with graph.as_default():
        for name, value in values.items():
            tf1.Variable(value, name=name)
        tf1.Variable(tf.cast(rng.standard_normal((4, 3)), tf.bfloat16), name="bfloat16")
        tf1.Variable(np.array(STRINGS, dtype=object), name="strings")
        tf1.Variable(np.array([], dtype=object), name="strings_empty")
        tf1.Variable(b"caf\xc3\xa9", name="string_scalar")
        tf1.get_variable(
            "partitioned",
            shape=[7, 3],
            partitioner=tf1.fixed_size_partitioner(3),
            initializer=tf1.random_normal_initializer(seed=1),
        )
        tf1.get_variable(
            "partitioned_cols",
            shape=[2, 9],
            dtype=tf.float64,
            partitioner=tf1.fixed_size_partitioner(2, axis=1),
            initializer=tf1.random_normal_initializer(seed=2),
        )
        saver = tf1.train.Saver()
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            (root / "tf1").mkdir()
            saver.save(sess, str(root / "tf1" / "model.ckpt"), global_step=3)
    return root / "tf1" / "model.ckpt-3"


def _write_sharded(tf: Any, root: Path) -> Path:
    """Saver(sharded=True) over two CPU devices, with a partitioned variable whose parts land on both."""
    tf1 = tf.compat.v1
    graph = tf.Graph()

    def device(op: Any) -> str:
        return "/cpu:1" if "part_1" in op.name or op.name.startswith("on_cpu1") else "/cpu:0"

    with graph.as_default():
        with tf1.device(device):
            tf1.get_variable("spread", shape=[7, 2], partitioner=tf1.fixed_size_partitioner(3))
        with tf1.device("/cpu:0"):
            tf1.Variable(np.arange(4, dtype=np.float32), name="on_cpu0")
        with tf1.device("/cpu:1"):
            tf1.Variable(np.array([5, 6, 7], np.int64), name="on_cpu1")
            tf1.Variable(np.array([b"x", b""], dtype=object), name="on_cpu1_str")
        saver = tf1.train.Saver(sharded=True)
        config = tf1.ConfigProto(device_count={"CPU": 2})
        with tf1.Session(config=config) as sess:
            sess.run(tf1.global_variables_initializer())
            (root / "sharded").mkdir()
            saver.save(sess, str(root / "sharded" / "model"))
    return root / "sharded" / "model"


def _write_tf2(tf: Any, root: Path) -> Path:
    """A tf.train.Checkpoint of nested modules plus a TF1 Adam optimizer (which records slot variables)."""
    net = tf.Module()
    net.dense = tf.Module()
    net.dense.kernel = tf.Variable(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4))
    net.dense.bias = tf.Variable(np.zeros(4, np.float32))
    net.names = tf.Variable(np.array(STRINGS, dtype=object))
    net.half = tf.Variable(tf.constant([1.5, -2.25, 1e-3], tf.bfloat16))
    opt = tf.compat.v1.train.AdamOptimizer(0.1)
    trainables = [net.dense.kernel, net.dense.bias]
    opt.minimize(lambda: tf.reduce_sum(tf.square(net.dense.kernel) + net.dense.bias), var_list=trainables)
    ckpt = tf.train.Checkpoint(net=net, opt=opt, step=tf.Variable(42, dtype=tf.int64))
    return Path(ckpt.write(str(root / "tf2" / "ckpt")))


def _tf_view(tf: Any, prefix: Path) -> dict[str, tuple[tuple[int, ...], str, np.ndarray]]:
    """Key -> (shape, dtype name, value) as TensorFlow's own checkpoint reader reports them."""
    reader = tf.train.load_checkpoint(str(prefix))
    dtypes = reader.get_variable_to_dtype_map()
    out = {}
    for key, shape in tf.train.list_variables(str(prefix)):
        value = reader.get_tensor(key)
        # a scalar string comes back as `bytes`; np.asarray would make it dtype "S" and drop trailing NULs
        array = np.array(value, dtype=object) if isinstance(value, bytes) else np.asarray(value)
        out[key] = (tuple(shape), dtypes[key].name, array)
    return out


def _tf_object_graph(tf: Any, prefix: Path) -> Any:
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    raw = tf.train.load_checkpoint(str(prefix)).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
    return trackable_object_graph_pb2.TrackableObjectGraph.FromString(raw)


def _corpus_prefixes() -> list[tuple[str, Path, list[Any]]]:
    truth_file = CORPUS / "ground_truth.json"
    if not truth_file.is_file():
        return []
    out = []
    for item in json.loads(truth_file.read_text()):
        if item["kind"] == "ckpt_v2":
            prefix = CORPUS / item["path"]
        elif item["kind"] == "savedmodel":
            prefix = CORPUS / item["path"] / "variables" / "variables"
        else:
            continue
        if Path(f"{prefix}.index").is_file():
            out.append((item["path"], prefix, item["tensors"]))
    return out


@pytest.fixture(scope="module")
def tf_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Everything TensorFlow is needed for, done once: written bundles and TF's view of them (and the corpus)."""
    tf = pytest.importorskip("tensorflow")
    root = tmp_path_factory.mktemp("bundles")
    prefixes = {"tf1": _write_tf1(tf, root), "sharded": _write_sharded(tf, root), "tf2": _write_tf2(tf, root)}
    views = {name: _tf_view(tf, prefix) for name, prefix in prefixes.items()}
    corpus = {label: _tf_view(tf, prefix) for label, prefix, _ in _corpus_prefixes()}
    graph = _tf_object_graph(tf, prefixes["tf2"])
    return {"prefixes": prefixes, "views": views, "corpus": corpus, "tf2_graph": graph}


def _copy_bundle(prefix: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for file in prefix.parent.glob(prefix.name + ".*"):
        shutil.copy(file, dest / file.name)
    return dest / prefix.name


def _assert_matches_tf(reader: BundleReader, view: dict[str, tuple[tuple[int, ...], str, np.ndarray]]) -> None:
    assert list(reader.entries) == list(view)  # same keys, same (sorted) order
    for key, (shape, dtype, value) in view.items():
        entry = reader.entries[key]
        assert (entry.shape, entry.dtype) == (shape, dtype), key
        ours = reader.read(key)
        assert ours.shape == value.shape == shape, key
        if dtype == "string":
            assert ours.dtype == object
            assert ours.tolist() == value.astype(object).tolist(), key
        else:
            assert str(ours.dtype) == str(value.dtype), key
            assert ours.tobytes() == np.ascontiguousarray(value).tobytes(), key


# --------------------------------------------------------------------------------------------- differential
@pytest.mark.tensorflow
@pytest.mark.parametrize("name", ["tf1", "sharded", "tf2"])
def test_matches_tensorflow(tf_world: dict[str, Any], name: str) -> None:
    reader = BundleReader(tf_world["prefixes"][name])
    _assert_matches_tf(reader, tf_world["views"][name])
    assert reader.verify_all() == []
    assert reader.missing_shards() == []


@pytest.mark.tensorflow
def test_tf1_details(tf_world: dict[str, Any]) -> None:
    reader = BundleReader(tf_world["prefixes"]["tf1"])
    dtypes = {e.dtype for e in reader.entries.values()}
    assert {"bfloat16", "float16", "bool", "string", "complex128", "uint16"} <= dtypes
    part = reader.entries["partitioned"]
    assert part.partitioned and part.shape == (7, 3)
    assert [s[0] for s in part.slices] == [(0, 3), (3, 2), (5, 2)]
    # the hidden per-slice keys are OrderedCode keys; none of them is listed
    hidden = [encode_tensor_name_slice("partitioned", s) for s in part.slices]
    assert all(h.decode("utf-8", "surrogateescape") not in reader.entries for h in hidden)
    assert decode_tensor_name_slice(hidden[1]) == (b"partitioned", ((3, 2), (0, 3)))
    assert reader.read("strings").tolist() == STRINGS
    assert reader.read("string_scalar").shape == () and reader.read("string_scalar")[()] == b"caf\xc3\xa9"
    assert reader.header.num_shards == 1 and reader.header.endianness == "little"
    assert reader.header.version.producer == 1
    assert reader.index_compression == {0}
    assert reader.object_graph() is None
    assert not has_object_graph(reader.prefix)


@pytest.mark.tensorflow
def test_sharded_layout(tf_world: dict[str, Any]) -> None:
    reader = BundleReader(tf_world["prefixes"]["sharded"])
    assert reader.header.num_shards == 2
    assert [p.name for p in reader.data_files] == ["model.data-00000-of-00002", "model.data-00001-of-00002"]
    assert {reader.entries["on_cpu0"].shard_id, reader.entries["on_cpu1"].shard_id} == {0, 1}
    spread = reader.entries["spread"]
    shard_of_slices = {reader._slice_entries[encode_tensor_name_slice("spread", s)].shard_id for s in spread.slices}
    assert shard_of_slices == {0, 1}  # one partitioned tensor assembled from two data files


@pytest.mark.tensorflow
def test_tf2_object_graph(tf_world: dict[str, Any]) -> None:
    prefix = tf_world["prefixes"]["tf2"]
    reader = BundleReader(prefix)
    ours = reader.object_graph()
    assert ours is not None
    theirs = tf_world["tf2_graph"]
    assert has_object_graph(prefix)
    assert len(ours.nodes) == len(theirs.nodes) > 5

    def summary(graph: Any) -> list[Any]:
        return [
            (
                [(c.node_id, c.local_name) for c in node.children],
                [(a.name, a.full_name, a.checkpoint_key) for a in node.attributes],
                [(s.original_variable_node_id, s.slot_name, s.slot_variable_node_id) for s in node.slot_variables],
                node.HasField("has_checkpoint_values") and node.has_checkpoint_values.value,
            )
            for node in graph.nodes
        ]

    assert summary(ours) == summary(theirs)
    slots = {s.slot_name for node in ours.nodes for s in node.slot_variables}
    assert slots == {"m", "v"}
    keys = {a.checkpoint_key for node in ours.nodes for a in node.attributes}
    assert keys == set(reader.entries) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}


# --------------------------------------------------------------------------------------------- corpus
@pytest.mark.tensorflow
@pytest.mark.skipif(not (CORPUS / "ground_truth.json").is_file(), reason="shared corpus not present")
def test_corpus_matches_ground_truth_and_tf(tf_world: dict[str, Any]) -> None:
    items = _corpus_prefixes()
    assert len(items) >= 30
    compressions: set[int] = set()
    for label, prefix, tensors in items:
        reader = BundleReader(prefix)
        compressions |= reader.index_compression
        stored = [(k, e) for k, e in reader.entries.items() if k != "_CHECKPOINTABLE_OBJECT_GRAPH"]
        listed = sorted([k, list(e.shape), e.dtype] for k, e in stored)
        assert listed == sorted(tensors), label
        _assert_matches_tf(reader, tf_world["corpus"][label])
        assert reader.verify_all() == [], label
        if "_CHECKPOINTABLE_OBJECT_GRAPH" in reader.entries:
            graph = reader.object_graph()
            assert graph is not None, label
            keys = {a.checkpoint_key for node in graph.nodes for a in node.attributes}
            assert set(reader.entries) - {"_CHECKPOINTABLE_OBJECT_GRAPH"} <= keys, label
    assert compressions == {0, 1}  # some published indexes use snappy-compressed blocks


@pytest.mark.tensorflow
@pytest.mark.skipif(not (CORPUS / "ground_truth.json").is_file(), reason="shared corpus not present")
def test_saved_model_subset_matches_tf_on_corpus(tf_world: dict[str, Any]) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    def summary(message: Any) -> list[Any]:
        out = []
        for meta in message.meta_graphs:
            signatures = {
                name: (
                    sig.method_name,
                    sorted(
                        (
                            io,
                            key,
                            info.name,
                            info.dtype,
                            info.tensor_shape.unknown_rank,
                            [d.size for d in info.tensor_shape.dim],
                        )
                        for io, tensors in (("in", sig.inputs), ("out", sig.outputs))
                        for key, info in tensors.items()
                    ),
                )
                for name, sig in meta.signature_def.items()
            }
            info = meta.meta_info_def
            out.append((list(info.tags), info.tensorflow_version, signatures, meta.HasField("object_graph_def")))
        return out

    files = sorted(CORPUS.rglob("saved_model.pb"))
    assert len(files) >= 20
    for file in files:
        raw = file.read_bytes()
        ours = summary(protos.SavedModel.FromString(raw))
        assert ours == summary(saved_model_pb2.SavedModel.FromString(raw)), file
        assert ours, file


# --------------------------------------------------------------------------------------------- corruption
@pytest.mark.tensorflow
def test_flipped_data_byte_is_a_checksum_error(tf_world: dict[str, Any], tmp_path: Path) -> None:
    prefix = _copy_bundle(tf_world["prefixes"]["tf1"], tmp_path)
    reader = BundleReader(prefix)
    data = reader.data_path(0)
    for key in ("float32", "strings", "partitioned"):
        entry = reader.entries[key]
        target = reader._slice_entries[encode_tensor_name_slice(key, entry.slices[1])] if entry.slices else entry
        blob = bytearray(data.read_bytes())
        original = bytes(blob)
        blob[target.offset + target.size - 1] ^= 0x40
        data.write_bytes(bytes(blob))
        with pytest.raises(ChecksumError, match=re.escape(str(data))):
            reader.read(key)
        problems = reader.verify_all()
        assert len(problems) == 1 and key in problems[0] and problems[0].startswith(str(data))
        unchecked = reader.read(key, verify=False)  # verify=False returns the damaged value
        assert unchecked.tolist() != BundleReader(tf_world["prefixes"]["tf1"]).read(key).tolist()
        data.write_bytes(original)
    assert reader.verify_all() == []


@pytest.mark.tensorflow
@pytest.mark.parametrize("cut", [0, 1, 20, 47, -1, -8, -48, -49, None])
def test_truncated_index_is_corrupt(tf_world: dict[str, Any], tmp_path: Path, cut: int | None) -> None:
    prefix = _copy_bundle(tf_world["prefixes"]["tf1"], tmp_path)
    index = Path(f"{prefix}.index")
    raw = index.read_bytes()
    index.write_bytes(raw[: len(raw) // 2 if cut is None else cut])  # None: cut in half
    with pytest.raises(CorruptCheckpointError, match=re.escape(str(index))):
        BundleReader(prefix)


@pytest.mark.tensorflow
def test_missing_and_truncated_shards(tf_world: dict[str, Any], tmp_path: Path) -> None:
    prefix = _copy_bundle(tf_world["prefixes"]["sharded"], tmp_path)
    reader = BundleReader(prefix)
    gone = reader.data_path(1)
    gone.unlink()
    assert reader.missing_shards() == [gone]
    key_on_1 = next(k for k, e in reader.entries.items() if not e.slices and e.shard_id == 1)
    key_on_0 = next(k for k, e in reader.entries.items() if not e.slices and e.shard_id == 0)
    with pytest.raises(MissingFileError, match=re.escape(str(gone))):
        reader.read(key_on_1)
    with pytest.raises(MissingFileError, match=re.escape(str(gone))):
        reader.read("spread")  # one of its slices lives in the missing shard
    reader.read(key_on_0)
    assert reader.verify_all() == [f"{gone}: data shard missing"]

    reader = BundleReader(_copy_bundle(tf_world["prefixes"]["sharded"], tmp_path / "again"))
    first = reader.data_path(0)
    first.write_bytes(first.read_bytes()[:-3])  # cuts into the last tensor of shard 0
    problems = reader.verify_all()
    assert len(problems) == 1 and problems[0].startswith(str(first)) and "shard has" in problems[0]


@pytest.mark.tensorflow
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_index_never_escapes(tf_world: dict[str, Any], tmp_path: Path, data: st.DataObject) -> None:
    source = tf_world["prefixes"]["tf1"]
    prefix = tmp_path / "fuzz" / source.name
    if not prefix.parent.exists():
        _copy_bundle(source, prefix.parent)
    pristine = Path(f"{source}.index").read_bytes()
    expected = BundleReader(source).entries
    blob = bytearray(pristine)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(blob) - 1))
        blob[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    Path(f"{prefix}.index").write_bytes(bytes(blob))
    try:
        reader = BundleReader(prefix)
        reader.verify_all()
        for key in reader.entries:
            reader.read(key)
    except CkptToolsError:
        return
    # a mutation that left the table readable touched only bytes that carry nothing (footer padding)
    assert reader.entries == expected


# --------------------------------------------------------------------------------------------- crafted bundles
def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _block(rows: list[tuple[bytes, bytes]]) -> bytes:
    body = bytearray()
    restarts = []
    for key, value in rows:
        restarts.append(len(body))
        body += _varint(0) + _varint(len(key)) + _varint(len(value)) + key + value
    restarts = restarts or [0]
    return bytes(body) + struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts))


def _snappy_literal(data: bytes) -> bytes:
    return _varint(len(data)) + bytes([63 << 2]) + struct.pack("<I", len(data) - 1) + data


def _write_table(path: Path, rows: list[tuple[bytes, bytes]], snappy: bool = False) -> None:
    """A minimal table writer (one data block, no prefix sharing) for bundles TF would never write."""
    out = bytearray()

    def put(block: bytes) -> bytes:
        kind = 0
        if snappy:
            block, kind = _snappy_literal(block), 1
        handle = _varint(len(out)) + _varint(len(block))
        out.extend(block + bytes([kind]) + struct.pack("<I", mask_crc(crc32c(block + bytes([kind])))))
        return handle

    data_handle = put(_block(rows))
    meta_handle = put(_block([]))
    index_handle = put(_block([(rows[-1][0], data_handle)]))
    out += (meta_handle + index_handle).ljust(40, b"\0") + (0xDB4775248B80FB57).to_bytes(8, "little")
    path.write_bytes(bytes(out))


def _entry(dtype: str, shape: tuple[int, ...], offset: int, payload: bytes, **extra: Any) -> bytes:
    proto = protos.BundleEntryProto(
        dtype=protos.DTYPE_NUMBERS[dtype], offset=offset, size=len(payload), crc32c=mask_crc(crc32c(payload)), **extra
    )
    for dim in shape:
        proto.shape.dim.add(size=dim)
    return proto.SerializeToString()


def _craft(
    tmp_path: Path,
    entries: list[tuple[str, bytes]],
    data: bytes,
    *,
    big: bool = False,
    shards: int = 1,
    snappy: bool = False,
) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    prefix = tmp_path / "crafted"
    header = protos.BundleHeaderProto(num_shards=shards, endianness=1 if big else 0)
    header.version.producer = 1
    rows = [(b"", header.SerializeToString()), *sorted((k.encode("utf-8", "surrogateescape"), v) for k, v in entries)]
    _write_table(Path(f"{prefix}.index"), rows, snappy=snappy)
    Path(f"{prefix}.data-00000-of-{shards:05d}").write_bytes(data)
    return prefix


def test_big_endian_bundle_and_snappy_index(tmp_path: Path) -> None:
    import ml_dtypes

    values = {
        "bf16": np.array([1.5, -2.0, 3.25], ml_dtypes.bfloat16),
        "c64": np.array([1 + 2j, -3.5j], np.complex64),
        "i64": np.array([[1, -2], [3, 2**62]], np.int64),
        "u8": np.array([1, 2, 255], np.uint8),
    }
    data = bytearray()
    entries = []
    for key, value in values.items():
        swapped = value.view(f"u{value.itemsize // 2 if value.dtype.kind == 'c' else value.itemsize}").byteswap()
        entries.append((key, _entry(str(value.dtype), value.shape, len(data), swapped.tobytes())))
        data += swapped.tobytes()
    lengths = [3, 0]
    length_words = struct.pack(">2I", *lengths)
    string_payload = b"\x03\x00" + struct.pack(">I", mask_crc(crc32c(length_words))) + b"abc"
    string_crc = crc32c(b"abc", crc32c(string_payload[2:6], crc32c(length_words)))
    proto = protos.BundleEntryProto(dtype=7, offset=len(data), size=len(string_payload), crc32c=mask_crc(string_crc))
    proto.shape.dim.add(size=2)
    entries.append(("s", proto.SerializeToString()))
    data += string_payload
    reader = BundleReader(_craft(tmp_path, entries, bytes(data), big=True, snappy=True))
    assert reader.header.endianness == "big" and reader.index_compression == {1}
    for key, value in values.items():
        got = reader.read(key)
        assert got.dtype == value.dtype and got.tobytes() == value.tobytes(), key
    assert reader.read("s").tolist() == [b"abc", b""]
    assert reader.verify_all() == []


@pytest.mark.tensorflow
@pytest.mark.parametrize("name", ["tf1", "tf2"])
def test_scalar_reads_match_read_on_tensorflow_bundles(tf_world: dict[str, Any], name: str) -> None:
    """`scalar()` (the numpy-free read listing uses for steps and epochs) gives what `read()` gives."""
    reader = BundleReader(tf_world["prefixes"][name])
    scalars = [e for e in reader.entries.values() if e.num_elements == 1 and e.dtype in SCALAR_CODES]
    assert scalars, "the TensorFlow-written bundle has one-element counters"
    for entry in scalars:
        expected = reader.read(entry.key).reshape(-1)[0].item()
        got = reader.scalar(entry.key)
        assert (type(got), got) == (type(expected), expected), entry.key


@pytest.mark.parametrize("big", [False, True])
def test_scalar_reads_every_counter_dtype_in_both_byte_orders(tmp_path: Path, big: bool) -> None:
    assert set(SCALAR_CODES) == COUNTER_DTYPES
    data = bytearray()
    entries = []
    for dtype in sorted(COUNTER_DTYPES):
        kind = np.dtype(dtype)
        extreme = (
            np.finfo(kind).min if kind.kind == "f" else np.iinfo(kind).min if kind.kind == "i" else np.iinfo(kind).max
        )
        raw = np.array([extreme], kind).astype(kind.newbyteorder(">" if big else "<")).tobytes()
        entries.append((dtype, _entry(dtype, (), len(data), raw)))
        data += raw
    prefix = _craft(tmp_path, entries, bytes(data), big=big)
    reader = BundleReader(prefix)
    for dtype in COUNTER_DTYPES:
        expected = reader.read(dtype).reshape(-1)[0].item()
        assert reader.scalar(dtype) == expected and type(reader.scalar(dtype)) is type(expected), dtype
    entry = reader.entries["int64"]
    blob = bytearray(data)
    blob[entry.offset] ^= 0x01
    prefix.with_name(prefix.name + ".data-00000-of-00001").write_bytes(bytes(blob))
    damaged = BundleReader(prefix)
    with pytest.raises(ChecksumError) as by_read:
        damaged.read("int64")
    with pytest.raises(ChecksumError) as by_scalar:
        damaged.scalar("int64")
    assert str(by_scalar.value) == str(by_read.value)
    assert damaged.scalar("int64", verify=False) == damaged.read("int64", verify=False).item()
    vector = BundleReader(_craft(tmp_path / "vector", [("v", _entry("int32", (2,), 0, bytes(8)))], bytes(8)))
    with pytest.raises(CkptToolsError, match="not a one-element"):
        vector.scalar("v")


def test_a_counter_declared_unlike_its_entry_is_read_like_any_tensor(tmp_path: Path) -> None:
    """read_scalar through a bundle loader whose variable declares a one-element counter that its entry is not
    (two int32 values): read as any tensor is, never a usage error from the numpy-free counter read."""
    from ckpt_tools.readers.bundles import BundleLoader, read_scalar
    from ckpt_tools.readers.naming import new_variable

    raw = np.array([7, 8], np.int32).tobytes()
    reader = BundleReader(_craft(tmp_path, [("pair", _entry("int32", (2,), 0, raw))], raw))
    var = new_variable("pair", "pair", (), "int64", "step", loader=BundleLoader(reader, "pair"))
    assert read_scalar(var) == 7


def test_fixed_itemsize_agrees_with_numpy() -> None:
    """The sizes listing checks entries against, without numpy, are numpy's."""
    from ckpt_tools.bundle.values import fixed_dtype, fixed_itemsize
    from ckpt_tools.model import DTYPE_SIZES

    for name in (*DTYPE_SIZES, "string", "variant", "resource", "unknown_99", "int4", "float8_e4m3fnuz"):
        dtype = fixed_dtype(name)
        assert fixed_itemsize(name) == (None if dtype is None else dtype.itemsize), name


def test_huge_declared_shapes_are_refused_before_allocating(tmp_path: Path) -> None:
    payload = b"\0" * 16
    entries = [
        ("huge_float", _entry("float32", (1 << 20, 1 << 20), 0, payload[:4])),
        ("huge_exact", _entry("uint8", (1 << 40,), 0, payload[:4])),
        ("huge_string", _entry("string", (1 << 40,), 0, payload)),
        ("huge_bool", _entry("bool", (1 << 30, 1 << 30, 1 << 30), 0, b"")),
    ]
    # a size that matches the declared shape but not the file
    proto = protos.BundleEntryProto.FromString(_entry("uint8", (1 << 40,), 0, b""))
    proto.size = 1 << 40
    entries.append(("huge_sized", proto.SerializeToString()))
    reader = BundleReader(_craft(tmp_path, entries, payload))
    for key in reader.entries:
        with pytest.raises(CorruptCheckpointError, match=re.escape(str(reader.data_path(0)))):
            reader.read(key)
    assert len(reader.verify_all()) == len(entries)


def test_bad_slices_and_bad_entries(tmp_path: Path) -> None:
    part = np.arange(6, dtype=np.float32).reshape(2, 3)
    full = protos.BundleEntryProto(dtype=1)
    for dim in (4, 3):
        full.shape.dim.add(size=dim)
    for start in (0, 1):  # overlapping rows 1..2
        extent = full.slices.add().extent
        extent.add(start=start, length=2)
        extent.add()
    slice_keys = [
        (
            encode_tensor_name_slice("p", ((start, 2), (0, -1))).decode("utf-8", "surrogateescape"),
            _entry("float32", (2, 3), 0, part.tobytes()),
        )
        for start in (0, 1)
    ]
    entries = [("p", full.SerializeToString()), *slice_keys, ("resource", _entry("resource", (), 0, b""))]
    reader = BundleReader(_craft(tmp_path, entries, part.tobytes()))
    assert list(reader.entries) == ["p", "resource"]  # the slice keys are hidden
    with pytest.raises(CorruptCheckpointError, match="overlap"):
        reader.read("p")
    with pytest.raises(CorruptCheckpointError, match="unsupported dtype"):
        reader.read("resource")
    bad_proto = [("x", b"\xff\xff\xff")]
    with pytest.raises(CorruptCheckpointError, match="not parsable"):
        BundleReader(_craft(tmp_path / "b", bad_proto, b""))
    wrong_shard = [("x", _entry("float32", (1,), 0, b"\0" * 4, shard_id=3))]
    with pytest.raises(CorruptCheckpointError, match="shard 3"):
        BundleReader(_craft(tmp_path / "c", wrong_shard, b"\0" * 4))
    negative = [("x", _entry("float32", (-4,), 0, b""))]
    with pytest.raises(CorruptCheckpointError, match="negative"):
        BundleReader(_craft(tmp_path / "d", negative, b""))


def test_missing_index_and_not_a_table(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"nothing\.index"):
        BundleReader(tmp_path / "nothing")
    Path(tmp_path / "junk.index").write_bytes(b"x" * 100)
    assert not is_bundle_index(tmp_path / "junk.index")
    with pytest.raises(CorruptCheckpointError, match="bad magic"):
        BundleReader(tmp_path / "junk")


# --------------------------------------------------------------------------------------------- units
def test_snappy_copies_and_crc_mask() -> None:
    # literal "abcd", then copy-1 (len 4, offset 4), copy-2 (len 6, offset 2, overlapping), literal "Z"
    stream = _varint(15) + bytes([3 << 2]) + b"abcd" + bytes([0b000_000_01, 4]) + bytes([(5 << 2) | 2, 2, 0])
    stream += bytes([0]) + b"Z"
    assert snappy_decompress(stream) == b"abcdabcdcdcdcdZ"
    for bad in (stream[:-1], _varint(3) + bytes([1, 9]), _varint(99) + bytes([0]) + b"a"):
        with pytest.raises(TableFormatError, match="snappy"):
            snappy_decompress(bad)
    for crc in (0, 1, 0xFFFFFFFF, 0x12345678):
        assert unmask_crc(mask_crc(crc)) == crc
    assert mask_crc(0) == 0xA282EAD8


@given(st.integers(-(2**63), 2**63 - 1))
def test_signed_ordered_code_round_trips_and_orders(value: int) -> None:
    encoded = write_signed_num_increasing(value)
    assert read_signed_num_increasing(encoded) == (value, len(encoded))
    assert (write_signed_num_increasing(value - 1) < encoded) if value > -(2**63) else True


def test_ordered_code_documented_examples() -> None:
    assert write_signed_num_increasing(0x424242).hex() == "f0424242"
    assert write_signed_num_increasing(-0x800).hex() == "3800"
    assert encode_tensor_name_slice("a\0b", ((1, 2),)) == b"\x00a\x00\xffb\x00\x01\x01\x01\x81\x82"


@pytest.mark.tensorflow
def test_declared_fields_match_tensorflow_descriptors() -> None:
    pytest.importorskip("tensorflow")
    from google.protobuf import descriptor_pool
    from tensorflow.core.protobuf import (  # noqa: F401  (importing registers TF's descriptors)
        saved_model_pb2,
        tensor_bundle_pb2,
        trackable_object_graph_pb2,
    )

    theirs = descriptor_pool.Default()
    checked = 0
    seen: set[str] = set()

    def compare(ours: Any) -> None:
        nonlocal checked
        reference = theirs.FindMessageTypeByName(ours.full_name)
        for field in ours.fields:
            other = reference.fields_by_name[field.name]
            assert other.number == field.number, field.full_name
            same_wire = other.type == field.type or (other.type == other.TYPE_ENUM and field.type == field.TYPE_INT32)
            assert same_wire, field.full_name
            assert other.is_repeated == field.is_repeated, field.full_name
            checked += 1
            nested = field.message_type
            if nested is not None and nested.fields and nested.full_name not in seen:
                seen.add(nested.full_name)
                compare(nested)

    for cls in (protos.BundleHeaderProto, protos.BundleEntryProto, protos.TrackableObjectGraph, protos.SavedModel):
        compare(cls.DESCRIPTOR)
    assert checked > 40


def test_import_does_not_load_tensorflow() -> None:
    code = (
        "import sys, ckpt_tools.bundle, ckpt_tools.bundle.protos; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1], env=child_env()
    )
    assert result.returncode == 0, result.stderr
