"""A frozen, TensorFlow-free model of the graphs in TF1 `.meta` files and SavedModels: nodes, functions, variables."""

from __future__ import annotations

import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias

from ckpt_tools.bundle import protos
from ckpt_tools.errors import CorruptCheckpointError, MissingFileError, UnsafeInputError
from ckpt_tools.storage import as_path

if TYPE_CHECKING:
    import numpy as np

MAX_PROTO_BYTES = 2**31 - 1  # protobuf refuses to parse a message larger than this
MAX_TENSOR_ELEMENTS = 1 << 24  # a constant with more elements keeps its dtype and shape but no value
MAX_DECODED_BYTES = 1 << 29  # all constant values decoded from one file, together
MAX_DEPTH = 64  # attribute nesting, Identity chains and function-call paths are followed no deeper
MAX_NOTES = 50
MAX_INDEX_DIGITS = 18
VARIABLE_COLLECTIONS = ("variables", "trainable_variables")
VARIABLE_OPS = frozenset({"Variable", "VariableV2", "VarHandleOp"})
PLACEHOLDER_OPS = frozenset({"Placeholder", "PlaceholderV2", "PlaceholderWithDefault"})
PASS_THROUGH_OPS = frozenset({"Identity", "IdentityN", "Snapshot", "StopGradient", "PreventGradient", "Cast"})
SAVER_VERSIONS = {0: "LEGACY", 1: "V1", 2: "V2"}
SYNCHRONIZATION = {0: "auto", 1: "none", 2: "on_write", 3: "on_read"}
AGGREGATION = {0: "none", 1: "sum", 2: "mean", 3: "only_first_replica"}

_NUMPY_DTYPES = {
    "float16": "<f2",
    "float32": "<f4",
    "float64": "<f8",
    "complex64": "<c8",
    "complex128": "<c16",
    "int8": "i1",
    "int16": "<i2",
    "int32": "<i4",
    "int64": "<i8",
    "uint8": "u1",
    "uint16": "<u2",
    "uint32": "<u4",
    "uint64": "<u8",
    "bool": "?",
    "qint8": "i1",
    "quint8": "u1",
    "qint16": "<i2",
    "quint16": "<u2",
    "qint32": "<i4",
}
_ML_DTYPES = ("bfloat16", "float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e4m3b11fnuz", "float8_e5m2fnuz")
# TensorProto field holding each dtype's values when tensor_content is empty.
_VALUE_FIELDS = {
    "float16": "half_val",
    "bfloat16": "half_val",
    "float32": "float_val",
    "float64": "double_val",
    "complex64": "scomplex_val",
    "complex128": "dcomplex_val",
    "int64": "int64_val",
    "uint32": "uint32_val",
    "uint64": "uint64_val",
    "bool": "bool_val",
    **{name: "int_val" for name in ("int8", "int16", "int32", "uint8", "uint16")},
    **{name: "int_val" for name in ("qint8", "quint8", "qint16", "quint16", "qint32")},
    **{name: "float8_val" for name in _ML_DTYPES[1:]},
}


class DType(str):
    """A dtype attribute value (`float32`, `int64`, ...): a str, told apart from string attributes by its type."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"DType({str.__repr__(self)})"


@dataclass(frozen=True)
class Shape:
    """A shape attribute value: `dims` is None for an unknown rank; an unknown dimension is -1."""

    dims: tuple[int, ...] | None


@dataclass(frozen=True)
class Placeholder:
    """A function attribute left to be filled in by the caller (`placeholder: "T"`)."""

    name: str


@dataclass(frozen=True)
class FuncRef:
    """A function attribute value (NameAttrList): the function's name and the attributes it is called with."""

    name: str
    attrs: Mapping[str, Attr]


@dataclass(frozen=True, eq=False)
class ConstTensor:
    """A tensor attribute value. `value` (read-only) is None when it was not decoded; `note` then says why."""

    dtype: str
    shape: tuple[int, ...] | None
    value: np.ndarray | None
    note: str = ""


# An attribute value: bool/int/float, str (or DType), Shape, ConstTensor, FuncRef, Placeholder, a tuple of them,
# or None when the AttrValue is empty.
Attr: TypeAlias = "bool | int | float | str | Shape | ConstTensor | FuncRef | Placeholder | tuple[Attr, ...] | None"


@dataclass(frozen=True)
class TensorRef:
    """One data input: output `output` of node `node`; function bodies also name the output argument."""

    node: str
    output: int = 0
    output_arg: str = ""

    def __str__(self) -> str:
        if self.output_arg:
            return f"{self.node}:{self.output_arg}:{self.output}"
        return self.node if self.output == 0 else f"{self.node}:{self.output}"


@dataclass(frozen=True)
class Node:
    """One NodeDef, with its inputs split into data inputs and `^control` inputs and its attrs decoded."""

    name: str
    op: str
    input_refs: tuple[TensorRef, ...]
    control_inputs: tuple[str, ...]
    device: str
    attrs: Mapping[str, Attr]

    @property
    def inputs(self) -> tuple[str, ...]:
        """Names of the nodes feeding the data inputs, without any `:N` output suffix."""
        return tuple(ref.node for ref in self.input_refs)


@dataclass(frozen=True)
class Function:
    """One FunctionDef of the graph's library. `nodes` keeps the first node of each name, `node_list` all."""

    name: str
    nodes: Mapping[str, Node]
    node_list: tuple[Node, ...]
    input_args: tuple[str, ...]
    output_args: tuple[str, ...]
    attrs: Mapping[str, Attr]
    returns: Mapping[str, str]


@dataclass(frozen=True)
class Collection:
    """A CollectionDef: its kind (`node_list`, `bytes_list`, ..., `empty`) and its values.

    `any_list` values are the type URLs of the packed messages.
    """

    kind: str
    values: tuple[str | bytes | int | float, ...]


@dataclass(frozen=True)
class Partition:
    """Where one partition of a partitioned variable sits in the full variable (SaveSliceInfoDef)."""

    full_name: str
    full_shape: tuple[int, ...]
    var_offset: tuple[int, ...]
    var_shape: tuple[int, ...]


@dataclass(frozen=True)
class VariableInfo:
    """A VariableDef from the `variables` / `trainable_variables` collections; `name` has no `:0` suffix.

    `trainable` is the VariableDef's own flag or membership of `trainable_variables` (old graphs lack the flag).
    """

    name: str
    trainable: bool
    is_resource: bool
    partition: Partition | None
    initializer: str = ""
    snapshot: str = ""
    initial_value: str = ""
    synchronization: str = "auto"
    aggregation: str = "none"


@dataclass(frozen=True)
class SaverInfo:
    """The SaverDef: the tensors and op a Saver uses, and its checkpoint format version."""

    filename_tensor: str
    save_tensor: str
    restore_op: str
    max_to_keep: int
    sharded: bool
    keep_checkpoint_every_n_hours: float
    version: str


@dataclass(frozen=True)
class MetaGraph:
    """One MetaGraphDef. Mappings keep the first node or function of each name; `*_list` keep them all."""

    source: str
    nodes: Mapping[str, Node]
    node_list: tuple[Node, ...]
    functions: Mapping[str, Function]
    function_list: tuple[Function, ...]
    gradients: Mapping[str, str]
    collections: Mapping[str, Collection]
    variables: tuple[VariableInfo, ...]
    tags: tuple[str, ...]
    tensorflow_version: str
    tensorflow_git_version: str
    producer: int | None
    saver_def: SaverInfo | None
    notes: tuple[str, ...]


GraphLike: TypeAlias = "MetaGraph | Function"


# --------------------------------------------------------------------------------------------- reading
def read_meta_graph(path: Path) -> MetaGraph:
    """Parse a TF1 `.meta` file (a serialized MetaGraphDef); the graph is never imported or run."""
    message = _parse_file(as_path(path), protos.MetaGraphDef, "MetaGraphDef")
    if not message.HasField("graph_def"):
        raise CorruptCheckpointError(f"{path}: holds no graph_def (empty or not a MetaGraphDef)")
    return _build(message, str(path), _Decoder())


def saved_model_graphs(path: Path) -> list[MetaGraph]:
    """Every MetaGraphDef of a `saved_model.pb` (the file, or the SavedModel directory holding it)."""
    path = as_path(path)
    if path.is_dir():
        path = path / "saved_model.pb"
    return saved_model_graphs_of(read_saved_model(path), str(path))


def read_saved_model(path: Path) -> Any:
    """The parsed SavedModel message of a `saved_model.pb`, with the size and shape checks of every graph read;
    a file without any MetaGraphDef is refused."""
    message = _parse_file(as_path(path), protos.SavedModel, "SavedModel")
    if not message.meta_graphs:
        raise CorruptCheckpointError(f"{path}: holds no MetaGraphDef (empty or not a SavedModel)")
    return message


def saved_model_graphs_of(message: Any, source: str) -> list[MetaGraph]:
    """The graphs of an already parsed SavedModel message, sharing one decode budget (the file's)."""
    decoder = _Decoder()
    return [_build(meta, source, decoder) for meta in message.meta_graphs]


def meta_graph_from_proto(message: Any, source: str = "<MetaGraphDef>") -> MetaGraph:
    """The model of an already parsed MetaGraphDef (ours from `protos`, or TensorFlow's: same field names)."""
    return _build(message, source, _Decoder())


def _parse_file(path: Path, cls: Any, what: str) -> Any:
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise MissingFileError(f"{path}: no such file") from exc
    if not stat.S_ISREG(info.st_mode):
        raise CorruptCheckpointError(f"{path}: not a regular file")
    if info.st_size > MAX_PROTO_BYTES:
        raise UnsafeInputError(f"{path}: {info.st_size} bytes is over protobuf's 2 GiB message limit")
    with path.open("rb") as fh:
        # Read what stat() saw plus one byte (a file that grew since is refused); asking for the 2 GiB limit
        # itself would make Python allocate it up front.
        data = fh.read(info.st_size + 1)
    if len(data) > info.st_size:
        raise CorruptCheckpointError(f"{path}: the file changed while it was read")
    try:
        return cls.FromString(data)
    except Exception as exc:  # protobuf's DecodeError, and RecursionError for over-deep nesting
        raise CorruptCheckpointError(f"{path}: not a valid {what} proto ({type(exc).__name__})") from exc


def _build(message: Any, source: str, decoder: _Decoder) -> MetaGraph:
    notes = _Notes()
    graph = message.graph_def
    node_list = tuple(decoder.node(proto, notes) for proto in graph.node)
    function_list = tuple(decoder.function(proto, notes) for proto in graph.library.function)
    collection_def = message.collection_def
    info = message.meta_info_def
    return MetaGraph(
        source=source,
        nodes=_first_by_name(node_list, "node name", notes),
        node_list=node_list,
        functions=_first_by_name(function_list, "function name", notes),
        function_list=function_list,
        gradients=MappingProxyType({g.function_name: g.gradient_func for g in graph.library.gradient}),
        collections=MappingProxyType({key: _collection(collection_def[key]) for key in sorted(collection_def)}),
        variables=_variables(collection_def, notes),
        tags=tuple(info.tags),
        tensorflow_version=info.tensorflow_version,
        tensorflow_git_version=info.tensorflow_git_version,
        producer=graph.versions.producer if graph.HasField("versions") else None,
        saver_def=_saver(message.saver_def) if message.HasField("saver_def") else None,
        notes=notes.done(),
    )


class _Notes:
    """Non-fatal findings, capped so that a hostile file cannot make the list itself huge."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.dropped = 0

    def add(self, text: str) -> None:
        if len(self.items) < MAX_NOTES:
            self.items.append(text)
        else:
            self.dropped += 1

    def done(self) -> tuple[str, ...]:
        return (*self.items, f"... and {self.dropped} more notes") if self.dropped else tuple(self.items)


def _first_by_name(items: tuple[Any, ...], what: str, notes: _Notes) -> Mapping[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if item.name in out:
            notes.add(f"duplicate {what} {item.name!r}; the first is the one looked up by name")
        else:
            out[item.name] = item
    return MappingProxyType(out)


def parse_tensor_name(text: str) -> TensorRef:
    """`node`, `node:1`, or in function bodies `node:output_arg:1` (and a bare argument name)."""
    node, _, rest = text.partition(":")
    if not rest:
        return TensorRef(node)
    arg, _, index = rest.rpartition(":")
    if index.isascii() and index.isdigit() and len(index) <= MAX_INDEX_DIGITS:
        return TensorRef(node, int(index), arg)
    return TensorRef(node, 0, rest)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _shape(proto: Any) -> Shape:
    if proto.unknown_rank:
        return Shape(None)
    return Shape(tuple(int(dim.size) for dim in proto.dim))


def _collection(proto: Any) -> Collection:
    kind = proto.WhichOneof("kind")
    if kind is None:
        return Collection("empty", ())
    if kind == "any_list":
        return Collection(kind, tuple(item.type_url for item in proto.any_list.value))
    return Collection(kind, tuple(getattr(proto, kind).value))


def _saver(proto: Any) -> SaverInfo:
    return SaverInfo(
        filename_tensor=proto.filename_tensor_name,
        save_tensor=proto.save_tensor_name,
        restore_op=proto.restore_op_name,
        max_to_keep=proto.max_to_keep,
        sharded=proto.sharded,
        keep_checkpoint_every_n_hours=proto.keep_checkpoint_every_n_hours,
        version=SAVER_VERSIONS.get(proto.version, f"unknown_{proto.version}"),
    )


# ------------------------------------------------------------------------------------------- variables
def _variables(collection_def: Any, notes: _Notes) -> tuple[VariableInfo, ...]:
    found: dict[str, VariableInfo] = {}
    trainable: set[str] = set()
    for key in VARIABLE_COLLECTIONS:
        if key not in collection_def:
            continue
        for position, raw in enumerate(collection_def[key].bytes_list.value):
            variable = _variable(raw)
            if variable is None:
                notes.add(f"collection {key!r} entry {position} is not a VariableDef; skipped")
                continue
            found.setdefault(variable.name, variable)
            if key == "trainable_variables":
                trainable.add(variable.name)
    return tuple(replace(v, trainable=True) if v.name in trainable else v for v in found.values())


def _variable(raw: bytes) -> VariableInfo | None:
    try:
        proto = protos.VariableDef.FromString(raw)
    except Exception:  # protobuf's DecodeError and friends
        return None
    partition = None
    if proto.HasField("save_slice_info_def"):
        info = proto.save_slice_info_def
        partition = Partition(info.full_name, tuple(info.full_shape), tuple(info.var_offset), tuple(info.var_shape))
    return VariableInfo(
        name=parse_tensor_name(proto.variable_name).node,
        trainable=proto.trainable,
        is_resource=proto.is_resource,
        partition=partition,
        initializer=proto.initializer_name,
        snapshot=proto.snapshot_name,
        initial_value=proto.initial_value_name,
        synchronization=SYNCHRONIZATION.get(proto.synchronization, f"unknown_{proto.synchronization}"),
        aggregation=AGGREGATION.get(proto.aggregation, f"unknown_{proto.aggregation}"),
    )


# ------------------------------------------------------------------------------------ nodes and attrs
class _Skip(Exception):
    """Internal: a tensor value is not decoded; the message becomes the ConstTensor's note."""


class _Decoder:
    """Decodes nodes, functions and attribute values, drawing tensor values from one shared byte budget."""

    def __init__(self) -> None:
        self.budget = MAX_DECODED_BYTES

    def node(self, proto: Any, notes: _Notes) -> Node:
        refs: list[TensorRef] = []
        controls: list[str] = []
        for text in proto.input:
            if text.startswith("^"):
                controls.append(text[1:])
            else:
                refs.append(parse_tensor_name(text))
        attrs = self.attrs(proto.attr, 0, notes)
        return Node(proto.name, proto.op, tuple(refs), tuple(controls), proto.device, attrs)

    def function(self, proto: Any, notes: _Notes) -> Function:
        signature = proto.signature
        node_list = tuple(self.node(node, notes) for node in proto.node_def)
        return Function(
            name=signature.name,
            nodes=_first_by_name(node_list, f"node name in function {signature.name!r}", notes),
            node_list=node_list,
            input_args=tuple(arg.name for arg in signature.input_arg),
            output_args=tuple(arg.name for arg in signature.output_arg),
            attrs=self.attrs(proto.attr, 0, notes),
            returns=MappingProxyType({key: proto.ret[key] for key in sorted(proto.ret)}),
        )

    def attrs(self, attr_map: Any, depth: int, notes: _Notes) -> Mapping[str, Attr]:
        return MappingProxyType({key: self.attr(attr_map[key], depth, notes) for key in sorted(attr_map)})

    def attr(self, value: Any, depth: int, notes: _Notes) -> Attr:
        kind = value.WhichOneof("value")
        if kind is None:
            return None
        if depth >= MAX_DEPTH:
            notes.add(f"attribute values nested deeper than {MAX_DEPTH}; the deeper ones are dropped")
            return None
        if kind == "s":
            return _text(value.s)
        if kind in ("i", "f", "b"):
            scalar: bool | int | float = getattr(value, kind)
            return scalar
        if kind == "type":
            return DType(protos.dtype_name(value.type))
        if kind == "shape":
            return _shape(value.shape)
        if kind == "tensor":
            return self.tensor(value.tensor)
        if kind == "list":
            return self.list_value(value.list, depth, notes)
        if kind == "func":
            return FuncRef(value.func.name, self.attrs(value.func.attr, depth + 1, notes))
        return Placeholder(value.placeholder)

    def list_value(self, proto: Any, depth: int, notes: _Notes) -> tuple[Attr, ...]:
        """All the list's values; TF sets one kind per list, a hostile file may set several: all are kept."""
        out: list[Attr] = [_text(raw) for raw in proto.s]
        out.extend(proto.i)
        out.extend(proto.f)
        out.extend(proto.b)
        out.extend(DType(protos.dtype_name(number)) for number in proto.type)
        out.extend(_shape(shape) for shape in proto.shape)
        out.extend(self.tensor(tensor) for tensor in proto.tensor)
        out.extend(FuncRef(func.name, self.attrs(func.attr, depth + 1, notes)) for func in proto.func)
        return tuple(out)

    def tensor(self, proto: Any) -> ConstTensor:
        dtype = protos.dtype_name(proto.dtype)
        shape = _shape(proto.tensor_shape).dims
        try:
            value = self._value(proto, dtype, shape)
        except _Skip as exc:
            return ConstTensor(dtype, shape, None, str(exc))
        value.setflags(write=False)
        return ConstTensor(dtype, shape, value)

    def _value(self, proto: Any, dtype: str, shape: tuple[int, ...] | None) -> np.ndarray:
        count = _element_count(shape)
        if shape is None or count < 0:
            raise _Skip("shape not fully defined")
        if count > MAX_TENSOR_ELEMENTS:
            raise _Skip(f"more than {MAX_TENSOR_ELEMENTS} elements; value not decoded")
        flat = self._strings(proto, count) if dtype == "string" else self._fixed(proto, dtype, count)
        try:
            return flat.reshape(shape)
        except (ValueError, OverflowError) as exc:  # e.g. a rank numpy does not support
            raise _Skip(f"cannot shape the value as {list(shape)}: {exc}") from exc

    def _spend(self, nbytes: int) -> None:
        if nbytes > self.budget:
            raise _Skip(f"over the {MAX_DECODED_BYTES}-byte budget for decoded constants; value not decoded")
        self.budget -= nbytes

    def _fixed(self, proto: Any, dtype: str, count: int) -> np.ndarray:
        import numpy as np

        np_dtype = _numpy_dtype(dtype)
        if np_dtype is None:
            raise _Skip(f"{dtype} values are not decoded")
        self._spend(count * np_dtype.itemsize)
        content = proto.tensor_content
        if content:
            if len(content) != count * np_dtype.itemsize:
                raise _Skip(f"tensor_content holds {len(content)} bytes, not {count * np_dtype.itemsize}")
            return np.frombuffer(content, dtype=np_dtype)
        return _fill(_stored_values(proto, dtype, np_dtype, count), count)

    def _strings(self, proto: Any, count: int) -> np.ndarray:
        import numpy as np

        if proto.tensor_content:
            raise _Skip("string tensor_content is not decoded")
        values = proto.string_val
        if len(values) > count:
            raise _Skip(f"holds {len(values)} values for {count} elements")
        self._spend(8 * count)
        stored = np.empty(len(values), dtype=object)
        stored[:] = list(values)
        self._spend(sum(len(item) for item in stored))
        return _fill(stored, count, empty=b"")


def _element_count(shape: tuple[int, ...] | None) -> int:
    """Elements of a shape; -1 when not fully defined; stops multiplying once past the decode limit."""
    if shape is None or any(dim < 0 for dim in shape):
        return -1
    if 0 in shape:
        return 0
    count = 1
    for dim in shape:
        count *= dim
        if count > MAX_TENSOR_ELEMENTS:
            break
    return count


def _numpy_dtype(name: str) -> np.dtype[Any] | None:
    import numpy as np

    if name in _NUMPY_DTYPES:
        return np.dtype(_NUMPY_DTYPES[name])
    if name in _ML_DTYPES:
        import ml_dtypes

        extra: np.dtype[Any] = np.dtype(getattr(ml_dtypes, name))
        return extra
    return None


def _stored_values(proto: Any, dtype: str, np_dtype: np.dtype[Any], count: int) -> np.ndarray:
    """The values kept in the dtype's `*_val` field (possibly fewer than `count`), as a flat array."""
    import numpy as np

    field = _VALUE_FIELDS[dtype]
    values = getattr(proto, field)
    per_element = 2 if np_dtype.kind == "c" else 1
    if len(values) > count * per_element:
        raise _Skip(f"{field} holds {len(values)} values for {count} elements")
    if field == "float8_val":
        return np.frombuffer(values, dtype=np.uint8).view(np_dtype)
    if field == "half_val":
        bits = np.fromiter(values, dtype=np.int64, count=len(values)) & 0xFFFF
        return bits.astype(np.uint16).view(np_dtype)
    if per_element == 2:
        if len(values) % 2:
            raise _Skip(f"{field} holds an odd number of parts")
        parts = np.fromiter(values, dtype=np.float32 if dtype == "complex64" else np.float64, count=len(values))
        return parts.view(np_dtype)
    if field == "int_val" and np_dtype.itemsize < 4:
        return np.fromiter(values, dtype=np.int64, count=len(values)).astype(np_dtype)
    return np.fromiter(values, dtype=np_dtype, count=len(values))


def _fill(stored: np.ndarray, count: int, empty: Any = 0) -> np.ndarray:
    """TensorFlow's short form: no values means all zeros, fewer values repeat the last one."""
    import numpy as np

    if stored.size == count:
        return stored
    out = np.empty(count, dtype=stored.dtype)
    out[: stored.size] = stored
    out[stored.size :] = stored[-1] if stored.size else empty
    return out


# ------------------------------------------------------------------------------------- graph queries
@dataclass(frozen=True)
class _Trace:
    """Where following pass-through ops from a tensor ended: a node, or the name that is not a node."""

    node: Node | None
    name: str
    casts: tuple[str, ...]
    stopped: str = ""


def _follow(graph: GraphLike, tensor_name: str) -> _Trace:
    """Follow Identity-like ops and Casts back from `tensor_name`, at most MAX_DEPTH steps, never in a loop."""
    ref = parse_tensor_name(tensor_name.removeprefix("^"))
    casts: list[str] = []
    seen: set[str] = set()
    for _ in range(MAX_DEPTH):
        node = graph.nodes.get(ref.node)
        if node is None:
            return _Trace(None, ref.node, tuple(casts))
        if node.op not in PASS_THROUGH_OPS or not node.input_refs:
            return _Trace(node, node.name, tuple(casts))
        if node.name in seen:
            return _Trace(None, node.name, tuple(casts), f"a cycle through {node.name}")
        seen.add(node.name)
        if node.op == "Cast":
            casts.append(str(node.attrs.get("DstT", "")))
        position = ref.output if node.op == "IdentityN" and 0 <= ref.output < len(node.input_refs) else 0
        ref = node.input_refs[position]
    return _Trace(None, ref.node, tuple(casts), f"a chain of more than {MAX_DEPTH} Identity/Cast ops")


def cast_chain(graph: GraphLike, tensor_name: str) -> tuple[str, ...]:
    """The Cast ops' target dtypes between `tensor_name` and the node producing it, outermost first."""
    return _follow(graph, tensor_name).casts


def cast_scalar(value: float | int | bool, dtype: str) -> float | int | bool | None:
    """`value` as TensorFlow's Cast to `dtype` would leave it (None for dtypes without a Python scalar)."""
    return _cast(value, dtype)


def traced(graph: GraphLike, tensor_name: str) -> Node | None:
    """The node producing `tensor_name` once Identity-like ops and Casts are followed back; None when missing."""
    return _follow(graph, tensor_name).node


def scalar_constant(graph: GraphLike, tensor_name: str) -> float | int | bool | None:
    """The value of the single-element Const feeding `tensor_name` through Identity/Cast ops, else None.

    A variable (a ReadVariableOp or a ref variable) is not a constant: its value lives in the checkpoint.
    """
    trace = _follow(graph, tensor_name)
    node = trace.node
    if node is None or node.op != "Const":
        return None
    tensor = node.attrs.get("value")
    if not isinstance(tensor, ConstTensor) or tensor.value is None or tensor.value.size != 1:
        return None
    value = _python_scalar(tensor.value.reshape(-1)[:1], tensor.dtype)
    for dtype in reversed(trace.casts):  # innermost Cast first
        if value is None:
            break
        value = _cast(value, dtype)
    return value


def _python_scalar(array: np.ndarray, dtype: str) -> float | int | bool | None:
    if dtype == "bool":
        return bool(array[0])
    if dtype.startswith(("int", "uint", "qint", "quint")):
        return int(array[0])
    if dtype.startswith(("float", "bfloat")):
        return float(array[0])
    return None


def _cast(value: float | int | bool, dtype: str) -> float | int | bool | None:
    import numpy as np

    np_dtype = _numpy_dtype(dtype)
    if np_dtype is None or np_dtype.kind == "c":
        return None
    with np.errstate(all="ignore"):
        cast = np.array([value]).astype(np_dtype)
    return _python_scalar(cast, dtype)


def describe_source(graph: GraphLike, tensor_name: str) -> str:
    """Where a tensor's value comes from: `constant 0.01`, `variable dense/kernel`, `computed by X (Mul)`, ..."""
    trace = _follow(graph, tensor_name)
    node = trace.node
    if node is None:
        return _describe_missing(graph, trace)
    if node.op == "Const":
        value = scalar_constant(graph, tensor_name)
        return f"constant {value!r}" if value is not None else _describe_tensor(node)
    if node.op in VARIABLE_OPS:
        return f"variable {node.name}"
    if node.op == "ReadVariableOp" and node.input_refs:
        handle = _follow(graph, str(node.input_refs[0]))
        if handle.node is not None and handle.node.op in VARIABLE_OPS:
            return f"variable {handle.node.name}"
        if handle.node is None and not handle.stopped:
            return f"variable read from {_describe_missing(graph, handle)}"
    if node.op in PLACEHOLDER_OPS:
        return f"placeholder {node.name}"
    return f"computed by {node.name} ({node.op})"


def _describe_missing(graph: GraphLike, trace: _Trace) -> str:
    if trace.stopped:
        return f"unresolved: {trace.stopped}"
    if isinstance(graph, Function) and trace.name in graph.input_args:
        return f"function argument {trace.name}"
    return f"missing node {trace.name}"


def _describe_tensor(node: Node) -> str:
    tensor = node.attrs.get("value")
    if not isinstance(tensor, ConstTensor):
        return f"constant {node.name} (no tensor value)"
    shape = "?" if tensor.shape is None else "[" + ",".join(map(str, tensor.shape)) + "]"
    return f"constant {tensor.dtype}{shape}" + (f" ({tensor.note})" if tensor.note else "")


# ---------------------------------------------------------------------------------------- functions
def called_functions(node: Node, functions: Mapping[str, Function]) -> Iterator[Function]:
    """Library functions a node calls: by op name, or through function-valued attrs (nested included)."""
    if node.op in functions:
        yield functions[node.op]
    pending: list[Attr] = [value for value in node.attrs.values() if isinstance(value, (FuncRef, tuple))]
    while pending:
        value = pending.pop()
        if isinstance(value, FuncRef):
            if value.name in functions:
                yield functions[value.name]
            pending.extend(v for v in value.attrs.values() if isinstance(v, (FuncRef, tuple)))
        elif isinstance(value, tuple):
            pending.extend(v for v in value if isinstance(v, (FuncRef, tuple)))


def walk_functions(graph: MetaGraph) -> Iterator[tuple[tuple[str, ...], Node]]:
    """Every node of every library function, each function once, as (call path, node).

    Functions the graph's nodes call come first, then what they call in turn (the path names the chain of
    functions, at most MAX_DEPTH long), then every function nothing reached, duplicates of a name included:
    a scanner sees every node in the file. Recursive functions are visited once and never loop.
    """
    visited: set[int] = set()
    for root in _roots(graph):
        if id(root) in visited:
            continue
        stack: list[tuple[tuple[str, ...], Function]] = [((root.name,), root)]
        while stack:
            path, function = stack.pop()
            if id(function) in visited:
                continue
            visited.add(id(function))
            callees: dict[int, Function] = {}
            for node in function.node_list:
                yield path, node
                callees.update((id(f), f) for f in called_functions(node, graph.functions))
            gradient = graph.functions.get(graph.gradients.get(function.name, ""))
            if gradient is not None:
                callees[id(gradient)] = gradient
            if len(path) < MAX_DEPTH:  # deeper callees are still visited, from the sweep over all functions
                stack.extend(((*path, f.name), f) for f in reversed(callees.values()) if id(f) not in visited)


def _roots(graph: MetaGraph) -> Iterable[Function]:
    for node in graph.node_list:
        yield from called_functions(node, graph.functions)
    yield from graph.function_list


__all__ = [
    "MAX_DECODED_BYTES",
    "MAX_DEPTH",
    "MAX_PROTO_BYTES",
    "MAX_TENSOR_ELEMENTS",
    "Attr",
    "Collection",
    "ConstTensor",
    "DType",
    "FuncRef",
    "Function",
    "MetaGraph",
    "Node",
    "Partition",
    "Placeholder",
    "SaverInfo",
    "Shape",
    "TensorRef",
    "VariableInfo",
    "called_functions",
    "cast_chain",
    "cast_scalar",
    "describe_source",
    "meta_graph_from_proto",
    "parse_tensor_name",
    "read_meta_graph",
    "saved_model_graphs",
    "scalar_constant",
    "traced",
    "walk_functions",
]
