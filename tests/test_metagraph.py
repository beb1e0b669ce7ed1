"""ckpt_tools.bundle.graph against TensorFlow's own protos on every .meta / saved_model.pb, plus hostile inputs."""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ckpt_tools.bundle import graph as G
from ckpt_tools.bundle import protos
from ckpt_tools.errors import CkptToolsError, CorruptCheckpointError, MissingFileError, UnsafeInputError

from .conftest import CORPUS, EXPECTED, FIXTURES

tf = pytest.importorskip("tensorflow")
from google.protobuf import descriptor_pool  # noqa: E402
from tensorflow.core.framework import attr_value_pb2, tensor_pb2, variable_pb2  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2  # noqa: E402

pytestmark = pytest.mark.tensorflow


def _files(pattern: str) -> list[Path]:
    roots = [FIXTURES, *([CORPUS] if CORPUS.is_dir() else [])]
    return sorted(path for root in roots for path in root.rglob(pattern) if path.is_file())


def _id(path: Path) -> str:
    for root in (FIXTURES, CORPUS):
        if path.is_relative_to(root):
            return f"{root.name}/{path.relative_to(root)}"
    return str(path)


META_FILES = _files("*.meta")
SAVED_MODELS = _files("saved_model.pb")
ADAM_META = FIXTURES / "tf1_adam" / "model.ckpt-3.meta"


# ------------------------------------------------------------------------------------ TF-side truth
def _tf_dtype(number: int) -> str:
    try:
        return str(tf.dtypes.as_dtype(number).base_dtype.name)
    except TypeError:  # a number TF itself does not know
        return protos.dtype_name(number)


def _tf_inputs(proto: Any) -> tuple[list[tuple[str, int]], list[str]]:
    data, control = [], []
    for text in proto.input:
        if text.startswith("^"):
            control.append(text[1:])
            continue
        parts = text.split(":")
        data.append((parts[0], int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 0))
    return data, control


def _assert_tensor(ours: Any, theirs: Any, where: str) -> None:
    assert isinstance(ours, G.ConstTensor), where
    assert ours.dtype == _tf_dtype(theirs.dtype), where
    shape = None if theirs.tensor_shape.unknown_rank else tuple(d.size for d in theirs.tensor_shape.dim)
    assert ours.shape == shape, where
    if ours.value is None:
        assert ours.note, where
        assert ours.dtype in ("resource", "variant") or shape is None or math.prod(shape) > G.MAX_TENSOR_ELEMENTS, where
        return
    expected = tf.make_ndarray(theirs)
    assert ours.value.dtype == expected.dtype, where
    assert ours.value.shape == expected.shape, where
    np.testing.assert_array_equal(ours.value, expected, err_msg=where)


def _assert_attr(ours: Any, theirs: Any, where: str) -> None:
    kind = theirs.WhichOneof("value")
    if kind is None:
        assert ours is None, where
    elif kind == "s":
        assert ours == theirs.s.decode("utf-8", "surrogateescape"), where
    elif kind in ("i", "f", "b"):
        assert ours == getattr(theirs, kind) and type(ours) is type(getattr(theirs, kind)), where
    elif kind == "type":
        assert isinstance(ours, G.DType) and ours == _tf_dtype(theirs.type), where
    elif kind == "shape":
        assert ours == _tf_shape(theirs.shape), where
    elif kind == "tensor":
        _assert_tensor(ours, theirs.tensor, where)
    elif kind == "list":
        _assert_list(ours, theirs.list, where)
    elif kind == "func":
        _assert_func(ours, theirs.func, where)
    else:
        assert ours == G.Placeholder(theirs.placeholder), where


def _tf_shape(proto: Any) -> G.Shape:
    dims = tf.TensorShape(proto).as_list() if not proto.unknown_rank else None
    return G.Shape(None if dims is None else tuple(-1 if d is None else d for d in dims))


def _assert_list(ours: Any, theirs: Any, where: str) -> None:
    assert isinstance(ours, tuple), where
    flat: list[tuple[str, Any]] = [("s", v) for v in theirs.s] + [("i", v) for v in theirs.i]
    flat += [("f", v) for v in theirs.f] + [("b", v) for v in theirs.b] + [("type", v) for v in theirs.type]
    flat += [("shape", v) for v in theirs.shape] + [("tensor", v) for v in theirs.tensor]
    flat += [("func", v) for v in theirs.func]
    assert len(ours) == len(flat), where
    for item, (kind, value) in zip(ours, flat, strict=True):
        single = attr_value_pb2.AttrValue()
        if kind in ("shape", "tensor", "func"):
            getattr(single, kind).CopyFrom(value)
        else:
            setattr(single, kind, value)
        _assert_attr(item, single, where)


def _assert_func(ours: Any, theirs: Any, where: str) -> None:
    assert isinstance(ours, G.FuncRef) and ours.name == theirs.name, where
    assert sorted(ours.attrs) == sorted(theirs.attr), where
    for key in theirs.attr:
        _assert_attr(ours.attrs[key], theirs.attr[key], f"{where}.{key}")


def _assert_nodes(owner: G.MetaGraph | G.Function, theirs: Any, where: str) -> int:
    ours = owner.node_list
    assert [n.name for n in ours] == [n.name for n in theirs], where
    scalars = 0
    for node, proto in zip(ours, theirs, strict=True):
        at = f"{where}:{proto.name}"
        data, control = _tf_inputs(proto)
        assert (node.op, node.device) == (proto.op, proto.device), at
        assert [(r.node, r.output) for r in node.input_refs] == data, at
        assert node.inputs == tuple(name for name, _ in data), at
        assert list(node.control_inputs) == control, at
        assert sorted(node.attrs) == sorted(proto.attr), at
        for key in proto.attr:
            _assert_attr(node.attrs[key], proto.attr[key], f"{at}.{key}")
        if owner.nodes[node.name] is node:  # the first of a duplicated name is the one looked up
            scalars += _check_scalar_const(owner, node, proto, at)
    return scalars


def _check_scalar_const(owner: G.MetaGraph | G.Function, node: G.Node, proto: Any, where: str) -> int:
    """scalar_constant of a numeric single-element Const equals make_ndarray's value, with the same type."""
    if proto.op != "Const" or "value" not in proto.attr:
        return 0
    tensor = proto.attr["value"].tensor
    dtype = _tf_dtype(tensor.dtype)
    shape = [d.size for d in tensor.tensor_shape.dim]
    if tensor.tensor_shape.unknown_rank or math.prod(shape) != 1:
        return 0
    if dtype in ("string", "resource", "variant") or dtype.startswith("complex"):
        assert G.scalar_constant(owner, node.name) is None, where
        return 0
    expected = tf.make_ndarray(tensor).reshape(-1)[0]
    expected = bool(expected) if dtype == "bool" else float(expected) if "float" in dtype else int(expected)
    got = G.scalar_constant(owner, node.name)
    assert got == expected or (got != got and expected != expected), where
    assert type(got) is type(expected), where
    return 1


def _expected_variables(theirs: Any) -> list[tuple[Any, ...]]:
    found: dict[str, list[Any]] = {}
    for key in ("variables", "trainable_variables"):
        if key not in theirs.collection_def:
            continue
        for raw in theirs.collection_def[key].bytes_list.value:
            var = variable_pb2.VariableDef.FromString(raw)
            name = var.variable_name.split(":")[0]
            info = var.save_slice_info_def
            part = (
                (info.full_name, tuple(info.full_shape), tuple(info.var_offset), tuple(info.var_shape))
                if var.HasField("save_slice_info_def")
                else None
            )
            entry = found.setdefault(name, [name, var.trainable, var.is_resource, part])
            entry[1] = entry[1] or key == "trainable_variables"
    return [tuple(v) for v in found.values()]


def _assert_meta_graph(ours: G.MetaGraph, theirs: Any, where: str) -> int:
    scalars = _assert_nodes(ours, theirs.graph_def.node, where)
    library = theirs.graph_def.library
    assert [f.name for f in ours.function_list] == [f.signature.name for f in library.function], where
    for function, proto in zip(ours.function_list, library.function, strict=True):
        at = f"{where}#{function.name}"
        assert function.input_args == tuple(a.name for a in proto.signature.input_arg), at
        assert function.output_args == tuple(a.name for a in proto.signature.output_arg), at
        assert dict(function.returns) == dict(proto.ret), at
        for key in proto.attr:
            _assert_attr(function.attrs[key], proto.attr[key], f"{at}.{key}")
        scalars += _assert_nodes(function, proto.node_def, at)
    assert dict(ours.gradients) == {g.function_name: g.gradient_func for g in library.gradient}, where
    variables = [(v.name, v.trainable, v.is_resource, _partition(v)) for v in ours.variables]
    assert variables == _expected_variables(theirs), where
    _assert_collections(ours, theirs, where)
    info = theirs.meta_info_def
    assert (ours.tags, ours.tensorflow_version) == (tuple(info.tags), info.tensorflow_version), where
    if theirs.HasField("saver_def"):
        saver = theirs.saver_def
        assert ours.saver_def is not None, where
        assert (ours.saver_def.filename_tensor, ours.saver_def.restore_op, ours.saver_def.sharded) == (
            saver.filename_tensor_name,
            saver.restore_op_name,
            saver.sharded,
        ), where
    else:
        assert ours.saver_def is None, where
    return scalars


def _partition(variable: G.VariableInfo) -> tuple[Any, ...] | None:
    p = variable.partition
    return None if p is None else (p.full_name, p.full_shape, p.var_offset, p.var_shape)


def _assert_collections(ours: G.MetaGraph, theirs: Any, where: str) -> None:
    assert sorted(ours.collections) == sorted(theirs.collection_def), where
    for key, proto in theirs.collection_def.items():
        kind = proto.WhichOneof("kind")
        collection = ours.collections[key]
        assert collection.kind == (kind or "empty"), f"{where} collection {key}"
        if kind == "any_list":
            values: tuple[Any, ...] = tuple(a.type_url for a in proto.any_list.value)
        else:
            values = () if kind is None else tuple(getattr(proto, kind).value)
        assert collection.values == values, f"{where} collection {key}"


# ----------------------------------------------------------------------------------- differential
@pytest.mark.parametrize("path", META_FILES, ids=_id)
def test_meta_file_matches_tensorflow(path: Path) -> None:
    ours = G.read_meta_graph(path)
    theirs = meta_graph_pb2.MetaGraphDef.FromString(path.read_bytes())
    _assert_meta_graph(ours, theirs, _id(path))
    assert ours.source == str(path)


@pytest.mark.parametrize("path", SAVED_MODELS, ids=_id)
def test_saved_model_graphs_match_tensorflow(path: Path) -> None:
    ours = G.saved_model_graphs(path)
    theirs = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    assert len(ours) == len(theirs.meta_graphs)
    for index, (graph, meta) in enumerate(zip(ours, theirs.meta_graphs, strict=True)):
        _assert_meta_graph(graph, meta, f"{_id(path)}[{index}]")
        walked = [(path_[-1], node.name) for path_, node in G.walk_functions(graph)]
        every = [(f.signature.name, n.name) for f in meta.graph_def.library.function for n in f.node_def]
        assert sorted(walked) == sorted(every), path  # every function's nodes, each exactly once
    again = G.saved_model_graphs(path.parent)[0].node_list  # the directory works too
    assert [(n.name, n.op, n.input_refs) for n in again] == [(n.name, n.op, n.input_refs) for n in ours[0].node_list]


def test_the_files_were_found() -> None:
    assert {p.parent.name for p in META_FILES} >= {"tf1_adam", "tf1_partitioned", "tf1_v1format", "tf1_dtypes"}
    assert any(p.parent.name == "saved_model_tfkeras" for p in SAVED_MODELS)


def test_scalar_constants_are_checked_somewhere() -> None:
    total = 0
    for path in (p for p in META_FILES if p.is_relative_to(FIXTURES)):
        theirs = meta_graph_pb2.MetaGraphDef.FromString(path.read_bytes())
        total += _assert_meta_graph(G.read_meta_graph(path), theirs, _id(path))
    assert total > 100


def test_declared_fields_match_tensorflow_descriptors_exactly() -> None:
    """Numbers, wire types, message types, oneofs and packing of every declared field, VariableDef included."""
    theirs = descriptor_pool.Default()
    seen: set[str] = set()
    pending = [protos.SavedModel.DESCRIPTOR, protos.VariableDef.DESCRIPTOR]
    checked = 0
    while pending:
        ours = pending.pop()
        reference = theirs.FindMessageTypeByName(ours.full_name)
        for field in ours.fields:
            other = reference.fields_by_name[field.name]
            assert other.number == field.number, field.full_name
            assert other.type == field.type or (other.type == other.TYPE_ENUM and field.type == field.TYPE_INT32)
            assert other.is_repeated == field.is_repeated, field.full_name
            assert other.is_packed == field.is_packed, field.full_name
            oneofs = [f.containing_oneof.name if f.containing_oneof else None for f in (other, field)]
            assert oneofs[0] == oneofs[1], field.full_name
            if field.message_type is not None:
                assert other.message_type.full_name == field.message_type.full_name, field.full_name
                if field.message_type.full_name not in seen:
                    seen.add(field.message_type.full_name)
                    pending.append(field.message_type)
            checked += 1
    assert checked > 150


def test_packed_and_unpacked_repeated_scalars_both_parse() -> None:
    packed = tensor_pb2.TensorProto(dtype=3, int_val=[1, -2, 300], float_val=[0.5, 1.5]).SerializeToString()
    assert protos.TensorProto(dtype=3, int_val=[1, -2, 300], float_val=[0.5, 1.5]).SerializeToString() == packed
    unpacked = bytes([0x08, 3])  # dtype = DT_INT32
    for value in (1, -2, 300):
        unpacked += bytes([0x38]) + _varint(value & (2**64 - 1))  # field 7, wire type 0, one tag per value
    for value in (0.5, 1.5):
        unpacked += bytes([0x2D]) + struct.pack("<f", value)  # field 5, wire type 5
    for raw in (packed, unpacked):
        ours = protos.TensorProto.FromString(raw)
        assert list(ours.int_val) == [1, -2, 300] and list(ours.float_val) == [0.5, 1.5]
        assert list(tensor_pb2.TensorProto.FromString(raw).int_val) == [1, -2, 300]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


# ---------------------------------------------------------------------------------- training ops
def test_adam_training_op_inputs_and_hyperparameters() -> None:
    graph = G.read_meta_graph(ADAM_META)
    truth = json.loads((EXPECTED / "tf1_adam.json").read_text())
    hyper = truth["hyper"]
    updates = [node for node in graph.node_list if node.op in ("ApplyAdam", "ResourceApplyAdam")]
    assert sorted(node.inputs[0] for node in updates) == sorted(truth["trainable"])
    for node in updates:
        var = node.inputs[0]
        assert node.op == "ResourceApplyAdam" and len(node.inputs) == 10
        assert node.inputs[1:3] == (f"{var}/Adam", f"{var}/Adam_1")  # the m and v slots, as VarHandleOps
        assert [graph.nodes[name].op for name in node.inputs[:3]] == ["VarHandleOp"] * 3
        assert [G.describe_source(graph, name) for name in node.inputs[:5]] == [
            f"variable {var}",
            f"variable {var}/Adam",
            f"variable {var}/Adam_1",
            "variable beta1_power",  # through a ReadVariableOp of the handle
            "variable beta2_power",
        ]
        assert G.scalar_constant(graph, node.inputs[3]) is None
        for index, name in ((5, "learning_rate"), (6, "beta1"), (7, "beta2"), (8, "epsilon")):
            value = G.scalar_constant(graph, str(node.input_refs[index]))
            assert value == float(np.float32(hyper[name])), name
            assert value == pytest.approx(hyper[name], rel=1e-6)
        assert G.scalar_constant(graph, node.inputs[5]) == pytest.approx(0.01)
        assert G.describe_source(graph, node.inputs[9]).startswith("computed by gradients/")
    assert {v.name for v in graph.variables if v.trainable} == set(truth["trainable"])
    assert all(v.is_resource for v in graph.variables)
    assert graph.saver_def is not None and graph.saver_def.version == "V2"


def test_ref_variable_graph_feeds_slots_directly_and_decay_is_computed(tmp_path: Path) -> None:
    meta = _ref_adam_graph()
    path = tmp_path / "ref.meta"
    path.write_bytes(meta.SerializeToString())
    graph = G.read_meta_graph(path)
    _assert_meta_graph(graph, meta, "ref")
    (update,) = [node for node in graph.node_list if node.op == "ApplyAdam"]
    assert update.inputs[:5] == ("w", "w/Adam", "w/Adam_1", "beta1_power/read", "beta2_power/read")
    assert [graph.nodes[name].op for name in update.inputs[:3]] == ["VariableV2"] * 3  # ref outputs, no read op
    assert G.describe_source(graph, update.inputs[3]) == "variable beta1_power"  # via the `/read` Identity
    assert G.describe_source(graph, update.inputs[5]) == "computed by ExponentialDecay (Mul)"
    assert G.scalar_constant(graph, update.inputs[5]) is None
    assert G.scalar_constant(graph, "ExponentialDecay/Cast") == 100.0  # int32 Const through a Cast to float
    assert type(G.scalar_constant(graph, "ExponentialDecay/Cast")) is float
    assert G.scalar_constant(graph, "Adam/beta1") == float(np.float32(0.9))
    w = next(v for v in graph.variables if v.name == "w")
    assert (w.trainable, w.is_resource, w.snapshot) == (True, False, "w/read:0")
    assert G.describe_source(graph, "x") == "placeholder x"


def _ref_adam_graph() -> Any:
    with tf.Graph().as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        w = tf.compat.v1.get_variable("w", [2, 1], use_resource=False)
        loss = tf.reduce_sum(tf.matmul(x, w))
        step = tf.compat.v1.train.get_or_create_global_step()
        learning_rate = tf.compat.v1.train.exponential_decay(0.1, step, 100, 0.9)
        tf.compat.v1.train.AdamOptimizer(learning_rate).minimize(loss, global_step=step)
        return tf.compat.v1.train.export_meta_graph()


# ---------------------------------------------------------------------------------- hostile input
def test_truncated_meta_file_is_a_corrupt_checkpoint_error(tmp_path: Path) -> None:
    data = ADAM_META.read_bytes()
    path = tmp_path / "cut.meta"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match=re.escape(str(path))) as caught:
        G.read_meta_graph(path)
    assert "DecodeError" in str(caught.value) and "\n" not in str(caught.value)
    for cut in (0, 1, 7, len(data) // 3, len(data) - 1):
        path.write_bytes(data[:cut])
        with contextlib.suppress(CkptToolsError):  # a cut at a field boundary may still parse
            G.read_meta_graph(path)


def test_random_bytes_never_escape_as_raw_exceptions(tmp_path: Path) -> None:
    path = tmp_path / "random.meta"
    pb = tmp_path / "saved_model.pb"
    rng = random.Random(1234)
    raised = 0
    for size in (1, 2, 16, 100, 4096, 4096, 65536):
        blob = bytes(rng.getrandbits(8) for _ in range(size))
        for target, read in ((path, G.read_meta_graph), (pb, G.saved_model_graphs)):
            target.write_bytes(blob)
            try:
                read(target)
            except CkptToolsError as exc:
                assert str(target) in str(exc)
                raised += 1
    assert raised >= 10


def test_empty_missing_and_non_file_paths(tmp_path: Path) -> None:
    (tmp_path / "empty.meta").write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match="holds no graph_def"):
        G.read_meta_graph(tmp_path / "empty.meta")
    with pytest.raises(MissingFileError):
        G.read_meta_graph(tmp_path / "absent.meta")
    with pytest.raises(CorruptCheckpointError, match="not a regular file"):
        G.read_meta_graph(tmp_path)
    with pytest.raises(MissingFileError):
        G.saved_model_graphs(tmp_path)  # a directory without saved_model.pb
    (tmp_path / "saved_model.pb").write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match="holds no MetaGraphDef"):
        G.saved_model_graphs(tmp_path)


def test_file_over_two_gib_is_refused_without_reading(tmp_path: Path, no_hang: None) -> None:
    path = tmp_path / "huge.meta"
    with path.open("wb") as fh:
        fh.truncate(2**31)  # sparse: no disk space used
    tracemalloc.start()
    try:
        with pytest.raises(UnsafeInputError, match="2 GiB"):
            G.read_meta_graph(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak} bytes allocated: the file was read"


def _meta_with_library(functions: dict[str, list[tuple[str, str]]]) -> Any:
    """A MetaGraphDef whose library has `functions`: name -> [(node name, op)], each node's `f` attr calling op."""
    meta = meta_graph_pb2.MetaGraphDef()
    for name, body in functions.items():
        function = meta.graph_def.library.function.add()
        function.signature.name = name
        function.signature.input_arg.add(name="x")
        for node_name, op in body:
            node = function.node_def.add(name=node_name, op="PartitionedCall", input=["x"])
            node.attr["f"].func.name = op
            node.attr["f"].func.attr["inner"].list.func.add(name=op)
            function.node_def.add(name=node_name + "_direct", op=op)
    meta.graph_def.node.add(name="call", op="StatefulPartitionedCall").attr["f"].func.name = "f"
    return meta


def test_self_calling_function_library_terminates(tmp_path: Path, no_hang: None) -> None:
    chain = {f"c{i}": [("n", f"c{i + 1}")] for i in range(500)}
    library = {"f": [("self", "f"), ("other", "g")], "g": [("back", "f"), ("up", "g")], **chain, "c500": []}
    path = tmp_path / "loop.meta"
    path.write_bytes(_meta_with_library(library).SerializeToString())
    graph = G.read_meta_graph(path)
    walked = list(G.walk_functions(graph))
    visits = [(p[-1], node.name) for p, node in walked]
    assert len(visits) == len(set(visits)) == sum(2 * len(body) for body in library.values())
    assert walked[0][0] == ("f",)  # the function the graph calls comes first
    assert any(p == ("f", "g") for p, _ in walked)
    assert max(len(p) for p, _ in walked) <= G.MAX_DEPTH
    assert [f.name for f in G.called_functions(graph.functions["f"].nodes["self"], graph.functions)] == ["f", "f"]


def test_duplicate_function_names_are_all_walked() -> None:
    meta = _meta_with_library({"f": [("a", "f")]})
    extra = meta.graph_def.library.function.add()
    extra.signature.name = "f"
    extra.node_def.add(name="hidden", op="WriteFile")
    graph = G.meta_graph_from_proto(meta)
    assert "hidden" in {node.name for _, node in G.walk_functions(graph)}
    assert any("duplicate function name 'f'" in note for note in graph.notes)


def _const_graph(*tensors: Any) -> Any:
    meta = meta_graph_pb2.MetaGraphDef()
    for index, tensor in enumerate(tensors):
        node = meta.graph_def.node.add(name=f"c{index}", op="Const")
        node.attr["value"].tensor.CopyFrom(tensor)
        node.attr["dtype"].type = tensor.dtype
    return meta


def _tensor(dtype: int, shape: list[int], **values: Any) -> Any:
    tensor = tensor_pb2.TensorProto(dtype=dtype, **values)
    for size in shape:
        tensor.tensor_shape.dim.add(size=size)
    return tensor


def test_enormous_declared_constants_never_allocate(tmp_path: Path, no_hang: None) -> None:
    tensors = [
        _tensor(1, [2**40, 2**40], float_val=[1.0]),  # 2**80 elements from one value
        _tensor(7, [2**33], string_val=[b"x"]),
        _tensor(1, [2**62] * 20_000),  # the element count itself would be a huge integer
        _tensor(19, [2**31, 4], half_val=[1]),
        _tensor(1, [0, 2**62]),  # zero elements, but numpy refuses the shape
        _tensor(1, [0, 2**20]),  # zero elements
        _tensor(1, [-1, 3], float_val=[1.0]),  # unknown dimension
        _tensor(1, [4], tensor_content=b"\0" * 15),  # wrong content size
        _tensor(1, [2], float_val=[1.0, 2.0, 3.0]),  # more values than elements
        _tensor(20, []),  # a resource
    ]
    path = tmp_path / "huge_const.meta"
    path.write_bytes(_const_graph(*tensors).SerializeToString())
    graph = G.read_meta_graph(path)
    values = [graph.nodes[f"c{i}"].attrs["value"] for i in range(len(tensors))]
    assert all(isinstance(v, G.ConstTensor) for v in values)
    assert values[0].shape == (2**40, 2**40) and values[0].value is None and "elements" in values[0].note
    assert values[4].shape == (0, 2**62) and "cannot shape" in values[4].note
    assert values[5].value is not None and values[5].value.shape == (0, 2**20)
    assert [v.value is None for v in values] == [True] * 5 + [False] + [True] * 4
    assert all(v.note for v in values if v.value is None)
    assert G.scalar_constant(graph, "c0") is None and G.describe_source(graph, "c0").startswith("constant float32[")
    assert G.describe_source(graph, "c6") == "constant float32[-1,3] (shape not fully defined)"


def test_decode_budget_spans_the_whole_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(G, "MAX_DECODED_BYTES", 1 << 20)
    meta = _const_graph(*[_tensor(1, [100_000], float_val=[float(i)]) for i in range(10)])
    graph = G.meta_graph_from_proto(meta)
    tensors = [graph.nodes[f"c{i}"].attrs["value"] for i in range(10)]
    assert [isinstance(t, G.ConstTensor) and t.value is not None for t in tensors] == [True, True] + [False] * 8
    assert isinstance(tensors[1], G.ConstTensor) and tensors[1].value is not None and tensors[1].value[-1] == 1.0
    assert isinstance(tensors[2], G.ConstTensor) and "budget" in tensors[2].note


def test_short_forms_pad_like_tensorflow() -> None:
    tensors = [
        _tensor(1, [5], float_val=[1.0, 2.0]),
        _tensor(3, [2, 2]),
        _tensor(7, [3], string_val=[b"a", b"\xff"]),
        _tensor(14, [3], half_val=[0x3F80]),  # bfloat16 1.0
        _tensor(19, [2], half_val=[0x3C00, 0xC000]),  # float16 1.0, -2.0
        _tensor(8, [2], scomplex_val=[1.0, 2.0]),
        _tensor(4, [3], int_val=[255, 7]),
        _tensor(23, [1], uint64_val=[2**64 - 1]),
        _tensor(10, [4], bool_val=[True, False]),
    ]
    graph = G.meta_graph_from_proto(_const_graph(*tensors))
    for index, tensor in enumerate(tensors):
        ours = graph.nodes[f"c{index}"].attrs["value"]
        _assert_tensor(ours, tensor, f"c{index}")
        assert isinstance(ours, G.ConstTensor) and ours.value is not None and not ours.value.flags.writeable
    assert G.scalar_constant(graph, "c7") == 2**64 - 1


def test_identity_cycles_and_long_chains_are_bounded() -> None:
    meta = meta_graph_pb2.MetaGraphDef()
    meta.graph_def.node.add(name="a", op="Identity", input=["b"])
    meta.graph_def.node.add(name="b", op="Identity", input=["a:0"])
    for i in range(1000):
        meta.graph_def.node.add(name=f"i{i}", op="Identity", input=[f"i{i + 1}", "^a"])
    meta.graph_def.node.add(name="i1000", op="Const").attr["value"].tensor.CopyFrom(_tensor(1, [], float_val=[2.5]))
    graph = G.meta_graph_from_proto(meta)
    assert G.scalar_constant(graph, "a") is None
    assert G.describe_source(graph, "a") == "unresolved: a cycle through a"
    assert G.scalar_constant(graph, "i0") is None
    assert G.describe_source(graph, "i0").startswith("unresolved: a chain of more than 64")
    assert G.scalar_constant(graph, "i990") == 2.5
    assert graph.nodes["i0"].control_inputs == ("a",) and graph.nodes["i0"].inputs == ("i1",)
    assert G.describe_source(graph, "nowhere:3") == "missing node nowhere"


def test_attribute_values_of_every_kind() -> None:
    meta = meta_graph_pb2.MetaGraphDef()
    node = meta.graph_def.node.add(name="n", op="Custom", input=["x:2", "^y", "z"], device="/cpu:0")
    node.attr["s"].s = b"caf\xc3\xa9 \xff"
    node.attr["shape"].shape.unknown_rank = True
    node.attr["types"].list.type.extend([1, 9, 101])
    node.attr["placeholder"].placeholder = "T"
    node.attr["empty"].SetInParent()
    node.attr["empty_list"].list.SetInParent()
    graph = G.meta_graph_from_proto(meta)
    attrs = graph.nodes["n"].attrs
    assert attrs["s"] == "café \udcff" and attrs["shape"] == G.Shape(None)
    assert attrs["types"] == ("float32", "int64", "float32") and all(isinstance(t, G.DType) for t in attrs["types"])
    assert (attrs["placeholder"], attrs["empty"], attrs["empty_list"]) == (G.Placeholder("T"), None, ())
    assert graph.nodes["n"].input_refs == (G.TensorRef("x", 2), G.TensorRef("z"))
    assert G.parse_tensor_name("Mul:z:1") == G.TensorRef("Mul", 1, "z") and str(G.TensorRef("Mul", 1, "z")) == "Mul:z:1"
    assert G.parse_tensor_name("a:" + "9" * 5000) == G.TensorRef("a", 0, "9" * 5000)  # no int() of huge text


def test_function_body_sources() -> None:
    graph = G.saved_model_graphs(FIXTURES / "saved_model_module")[0]
    for function in graph.function_list:
        for node in function.node_list:
            if node.op == "ReadVariableOp" and node.inputs[0] in function.input_args:
                expected = f"variable read from function argument {node.inputs[0]}"
                assert G.describe_source(function, node.name) == expected
                return
    pytest.fail("no ReadVariableOp of a function argument in saved_model_module")


def _nested_funcs(depth: int) -> Any:
    meta = meta_graph_pb2.MetaGraphDef()
    value = meta.graph_def.node.add(name="n", op="X").attr["f"]
    for level in range(depth):
        value.func.name = f"f{level}"
        value = value.func.attr["a"]
    return meta


def test_over_deep_attribute_nesting(tmp_path: Path) -> None:
    path = tmp_path / "deep.meta"
    path.write_bytes(_nested_funcs(200).SerializeToString())
    with pytest.raises(CorruptCheckpointError, match="not a valid MetaGraphDef"):  # protobuf's own depth limit
        G.read_meta_graph(path)
    graph = G.meta_graph_from_proto(_nested_funcs(200))  # an in-memory message has no such limit
    depth, value = 0, graph.nodes["n"].attrs["f"]
    while isinstance(value, G.FuncRef):
        depth, value = depth + 1, value.attrs.get("a")
    assert depth == G.MAX_DEPTH and any("nested deeper" in note for note in graph.notes)
