"""TensorFlow protobuf messages for bundles, object graphs and SavedModels, declared here and built at runtime."""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

# Only the fields ckpt-tools reads are declared; protobuf skips (and keeps) every other field it meets.
# Field numbers and wire types follow tensorflow/core/{framework,protobuf}/*.proto. Enum-typed fields
# (dtype, endianness, version) are declared as int32, which has the same wire encoding as an open enum.
# The file is proto3, so repeated scalars serialize packed; parsing accepts packed and unpacked alike.

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL = _F.LABEL_OPTIONAL
_REPEATED = _F.LABEL_REPEATED
_SCALARS = {
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "bool": _F.TYPE_BOOL,
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
    "fixed32": _F.TYPE_FIXED32,
}

# DataType enum number -> numpy-style dtype name (tensorflow/core/framework/types.proto).
DTYPE_NAMES: dict[int, str] = {
    1: "float32",
    2: "float64",
    3: "int32",
    4: "uint8",
    5: "int16",
    6: "int8",
    7: "string",
    8: "complex64",
    9: "int64",
    10: "bool",
    11: "qint8",
    12: "quint8",
    13: "qint32",
    14: "bfloat16",
    15: "qint16",
    16: "quint16",
    17: "uint16",
    18: "complex128",
    19: "float16",
    20: "resource",
    21: "variant",
    22: "uint32",
    23: "uint64",
    24: "float8_e5m2",
    25: "float8_e4m3fn",
    26: "float8_e4m3fnuz",
    27: "float8_e4m3b11fnuz",
    28: "float8_e5m2fnuz",
    29: "int4",
    30: "uint4",
    31: "int2",
    32: "uint2",
    33: "float4_e2m1fn",
}
DTYPE_NUMBERS: dict[str, int] = {name: number for number, name in DTYPE_NAMES.items()}

# BundleHeaderProto.Endianness
LITTLE_ENDIAN = 0
BIG_ENDIAN = 1


def dtype_name(number: int) -> str:
    """numpy-style name of a DataType enum value; `invalid` for 0 and `unknown_<n>` for values not listed.

    Reference types (`DT_*_REF`, number + 100) never appear in stored tensors but map to their base type.
    """
    if number in DTYPE_NAMES:
        return DTYPE_NAMES[number]
    if number - 100 in DTYPE_NAMES:
        return DTYPE_NAMES[number - 100]
    return "invalid" if number == 0 else f"unknown_{number}"


def _field(
    name: str, number: int, kind: str, *, repeated: bool = False, oneof: int | None = None
) -> descriptor_pb2.FieldDescriptorProto:
    """A field: `kind` is a scalar type name or a message type's full name (leading dot)."""
    field = _F(name=name, number=number, label=_REPEATED if repeated else _OPTIONAL)
    if kind in _SCALARS:
        field.type = _SCALARS[kind]
    else:
        field.type = _F.TYPE_MESSAGE
        field.type_name = kind
    if oneof is not None:
        field.oneof_index = oneof
    return field


def _message(
    name: str,
    fields: list[descriptor_pb2.FieldDescriptorProto],
    nested: list[descriptor_pb2.DescriptorProto] | None = None,
    oneofs: tuple[str, ...] = (),
) -> descriptor_pb2.DescriptorProto:
    msg = descriptor_pb2.DescriptorProto(name=name)
    msg.field.extend(fields)
    msg.nested_type.extend(nested or [])
    for oneof in oneofs:
        msg.oneof_decl.add(name=oneof)
    return msg


def _map_entry(name: str, value_kind: str) -> descriptor_pb2.DescriptorProto:
    msg = _message(name, [_field("key", 1, "string"), _field("value", 2, value_kind)])
    msg.options.map_entry = True
    return msg


def _file() -> descriptor_pb2.FileDescriptorProto:
    """The one file that declares every message, in the order each group below lists them."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="ckpt_tools/tensorflow_subset.proto",
        package="tensorflow",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto", "google/protobuf/any.proto"],
    )
    fdp.message_type.extend(
        [
            *_framework_messages(),
            *_checkpoint_messages(),
            *_graph_messages(),
            *_variable_messages(),
            *_saved_object_messages(),
            *_signature_messages(),
            *_saved_model_messages(),
            *_keras_messages(),
        ]
    )
    return fdp


def _keras_messages() -> list[descriptor_pb2.DescriptorProto]:
    """tf_keras protobuf/saved_metadata.proto (`keras_metadata.pb` of tf_keras SavedModels), renamed here."""
    t = ".tensorflow."
    return [
        _message("KerasSavedMetadata", [_field("nodes", 1, t + "KerasSavedObject", repeated=True)]),
        _message(
            "KerasSavedObject",
            [
                _field("node_id", 2, "int32"),
                _field("node_path", 3, "string"),
                _field("identifier", 4, "string"),
                _field("metadata", 5, "string"),
            ],
        ),
    ]


def _framework_messages() -> list[descriptor_pb2.DescriptorProto]:
    """framework/ protos shared by the others: versions, tensor shapes and tensor slices."""
    t = ".tensorflow."
    return [
        # framework/versions.proto
        _message(
            "VersionDef",
            [
                _field("producer", 1, "int32"),
                _field("min_consumer", 2, "int32"),
                _field("bad_consumers", 3, "int32", repeated=True),
            ],
        ),
        # framework/tensor_shape.proto
        _message(
            "TensorShapeProto",
            [_field("dim", 2, t + "TensorShapeProto.Dim", repeated=True), _field("unknown_rank", 3, "bool")],
            nested=[_message("Dim", [_field("size", 1, "int64"), _field("name", 2, "string")])],
        ),
        # framework/tensor_slice.proto: `length` sits in a oneof so that "absent" (= the full extent)
        # can be told apart from 0.
        _message(
            "TensorSliceProto",
            [_field("extent", 1, t + "TensorSliceProto.Extent", repeated=True)],
            nested=[
                _message(
                    "Extent",
                    [_field("start", 1, "int64"), _field("length", 2, "int64", oneof=0)],
                    oneofs=("has_length",),
                )
            ],
        ),
    ]


def _checkpoint_messages() -> list[descriptor_pb2.DescriptorProto]:
    """What a checkpoint stores: the bundle header and entries, the trackable object graph, the SaverDef."""
    t = ".tensorflow."
    return [
        # protobuf/tensor_bundle.proto
        _message(
            "BundleHeaderProto",
            [
                _field("num_shards", 1, "int32"),
                _field("endianness", 2, "int32"),
                _field("version", 3, t + "VersionDef"),
            ],
        ),
        _message(
            "BundleEntryProto",
            [
                _field("dtype", 1, "int32"),
                _field("shape", 2, t + "TensorShapeProto"),
                _field("shard_id", 3, "int32"),
                _field("offset", 4, "int64"),
                _field("size", 5, "int64"),
                _field("crc32c", 6, "fixed32"),
                _field("slices", 7, t + "TensorSliceProto", repeated=True),
            ],
        ),
        # protobuf/trackable_object_graph.proto
        _message(
            "TrackableObjectGraph",
            [_field("nodes", 1, t + "TrackableObjectGraph.TrackableObject", repeated=True)],
            nested=[_trackable_object()],
        ),
        _message("RegisteredSaver", [_field("name", 1, "string"), _field("object_name", 2, "string")]),
        # protobuf/saver.proto
        _message(
            "SaverDef",
            [
                _field("filename_tensor_name", 1, "string"),
                _field("save_tensor_name", 2, "string"),
                _field("restore_op_name", 3, "string"),
                _field("max_to_keep", 4, "int32"),
                _field("sharded", 5, "bool"),
                _field("keep_checkpoint_every_n_hours", 6, "float"),
                _field("version", 7, "int32"),
            ],
        ),
    ]


def _signature_messages() -> list[descriptor_pb2.DescriptorProto]:
    """protobuf/meta_graph.proto (subset): TensorInfo and SignatureDef; TypeSpecProto is opaque."""
    t = ".tensorflow."
    return [
        _message("TypeSpecProto", []),
        _message(
            "TensorInfo",
            [
                _field("name", 1, "string", oneof=0),
                _field("coo_sparse", 4, t + "TensorInfo.CooSparse", oneof=0),
                _field("composite_tensor", 5, t + "TensorInfo.CompositeTensor", oneof=0),
                _field("dtype", 2, "int32"),
                _field("tensor_shape", 3, t + "TensorShapeProto"),
            ],
            nested=[
                _message(
                    "CooSparse",
                    [
                        _field("values_tensor_name", 1, "string"),
                        _field("indices_tensor_name", 2, "string"),
                        _field("dense_shape_tensor_name", 3, "string"),
                    ],
                ),
                _message(
                    "CompositeTensor",
                    [
                        _field("type_spec", 1, t + "TypeSpecProto"),
                        _field("components", 2, t + "TensorInfo", repeated=True),
                    ],
                ),
            ],
            oneofs=("encoding",),
        ),
        _message(
            "SignatureDef",
            [
                _field("inputs", 1, t + "SignatureDef.InputsEntry", repeated=True),
                _field("outputs", 2, t + "SignatureDef.OutputsEntry", repeated=True),
                _field("method_name", 3, "string"),
            ],
            nested=[_map_entry("InputsEntry", t + "TensorInfo"), _map_entry("OutputsEntry", t + "TensorInfo")],
        ),
    ]


def _saved_model_messages() -> list[descriptor_pb2.DescriptorProto]:
    """protobuf/meta_graph.proto's MetaGraphDef and protobuf/saved_model.proto's SavedModel."""
    t = ".tensorflow."
    return [
        _message(
            "MetaGraphDef",
            [
                _field("meta_info_def", 1, t + "MetaGraphDef.MetaInfoDef"),
                _field("graph_def", 2, t + "GraphDef"),
                _field("saver_def", 3, t + "SaverDef"),
                _field("collection_def", 4, t + "MetaGraphDef.CollectionDefEntry", repeated=True),
                _field("signature_def", 5, t + "MetaGraphDef.SignatureDefEntry", repeated=True),
                _field("asset_file_def", 6, t + "AssetFileDef", repeated=True),
                _field("object_graph_def", 7, t + "SavedObjectGraph"),
            ],
            nested=[
                _message(
                    "MetaInfoDef",
                    [
                        _field("meta_graph_version", 1, "string"),
                        _field("tags", 4, "string", repeated=True),
                        _field("tensorflow_version", 5, "string"),
                        _field("tensorflow_git_version", 6, "string"),
                        _field("stripped_default_attrs", 7, "bool"),
                    ],
                ),
                _map_entry("CollectionDefEntry", t + "CollectionDef"),
                _map_entry("SignatureDefEntry", t + "SignatureDef"),
            ],
        ),
        # protobuf/saved_model.proto
        _message(
            "SavedModel",
            [
                _field("saved_model_schema_version", 1, "int64"),
                _field("meta_graphs", 2, t + "MetaGraphDef", repeated=True),
            ],
        ),
    ]


def _trackable_object() -> descriptor_pb2.DescriptorProto:
    t = ".tensorflow.TrackableObjectGraph.TrackableObject."
    return _message(
        "TrackableObject",
        [
            _field("children", 1, t + "ObjectReference", repeated=True),
            _field("attributes", 2, t + "SerializedTensor", repeated=True),
            _field("slot_variables", 3, t + "SlotVariableReference", repeated=True),
            _field("registered_saver", 4, ".tensorflow.RegisteredSaver"),
            _field("has_checkpoint_values", 5, ".google.protobuf.BoolValue"),
        ],
        nested=[
            _message("ObjectReference", [_field("node_id", 1, "int32"), _field("local_name", 2, "string")]),
            _message(
                "SerializedTensor",
                [
                    _field("name", 1, "string"),
                    _field("full_name", 2, "string"),
                    _field("checkpoint_key", 3, "string"),
                    # field 4 (optional_restore) is reserved in current TF; old files keep it as unknown
                ],
            ),
            _message(
                "SlotVariableReference",
                [
                    _field("original_variable_node_id", 1, "int32"),
                    _field("slot_name", 2, "string"),
                    _field("slot_variable_node_id", 3, "int32"),
                ],
            ),
        ],
    )


def _tensor_messages() -> list[descriptor_pb2.DescriptorProto]:
    """Tensors and attribute values, as they sit in a NodeDef's attr map."""
    t = ".tensorflow."
    values = [("half", 13, "int32"), ("float", 5, "float"), ("double", 6, "double"), ("int", 7, "int32")]
    values += [("string", 8, "bytes"), ("scomplex", 9, "float"), ("int64", 10, "int64"), ("bool", 11, "bool")]
    values += [("dcomplex", 12, "double"), ("uint32", 16, "uint32"), ("uint64", 17, "uint64")]
    return [
        # framework/tensor.proto; resource_handle_val (14) and variant_val (15) are left undeclared
        _message(
            "TensorProto",
            [
                _field("dtype", 1, "int32"),
                _field("tensor_shape", 2, t + "TensorShapeProto"),
                _field("version_number", 3, "int32"),
                _field("tensor_content", 4, "bytes"),
                *(_field(name + "_val", number, kind, repeated=True) for name, number, kind in values),
                _field("float8_val", 18, "bytes"),
            ],
        ),
        # framework/attr_value.proto
        _message(
            "AttrValue",
            [
                _field("s", 2, "bytes", oneof=0),
                _field("i", 3, "int64", oneof=0),
                _field("f", 4, "float", oneof=0),
                _field("b", 5, "bool", oneof=0),
                _field("type", 6, "int32", oneof=0),
                _field("shape", 7, t + "TensorShapeProto", oneof=0),
                _field("tensor", 8, t + "TensorProto", oneof=0),
                _field("list", 1, t + "AttrValue.ListValue", oneof=0),
                _field("func", 10, t + "NameAttrList", oneof=0),
                _field("placeholder", 9, "string", oneof=0),
            ],
            nested=[
                _message(
                    "ListValue",
                    [
                        _field("s", 2, "bytes", repeated=True),
                        _field("i", 3, "int64", repeated=True),
                        _field("f", 4, "float", repeated=True),
                        _field("b", 5, "bool", repeated=True),
                        _field("type", 6, "int32", repeated=True),
                        _field("shape", 7, t + "TensorShapeProto", repeated=True),
                        _field("tensor", 8, t + "TensorProto", repeated=True),
                        _field("func", 9, t + "NameAttrList", repeated=True),
                    ],
                )
            ],
            oneofs=("value",),
        ),
        _message(
            "NameAttrList",
            [_field("name", 1, "string"), _field("attr", 2, t + "NameAttrList.AttrEntry", repeated=True)],
            nested=[_map_entry("AttrEntry", t + "AttrValue")],
        ),
    ]


def _graph_messages() -> list[descriptor_pb2.DescriptorProto]:
    """GraphDef: its nodes and its function library."""
    t = ".tensorflow."
    return [
        *_tensor_messages(),
        # framework/node_def.proto
        _message(
            "NodeDef",
            [
                _field("name", 1, "string"),
                _field("op", 2, "string"),
                _field("input", 3, "string", repeated=True),
                _field("device", 4, "string"),
                _field("attr", 5, t + "NodeDef.AttrEntry", repeated=True),
            ],
            nested=[_map_entry("AttrEntry", t + "AttrValue")],
        ),
        # framework/op_def.proto: only the argument names of a function's signature
        _message(
            "OpDef",
            [
                _field("name", 1, "string"),
                _field("input_arg", 2, t + "OpDef.ArgDef", repeated=True),
                _field("output_arg", 3, t + "OpDef.ArgDef", repeated=True),
            ],
            nested=[_message("ArgDef", [_field("name", 1, "string")])],
        ),
        # framework/function.proto
        _message(
            "FunctionDef",
            [
                _field("signature", 1, t + "OpDef"),
                _field("attr", 5, t + "FunctionDef.AttrEntry", repeated=True),
                _field("node_def", 3, t + "NodeDef", repeated=True),
                _field("ret", 4, t + "FunctionDef.RetEntry", repeated=True),
            ],
            nested=[_map_entry("AttrEntry", t + "AttrValue"), _map_entry("RetEntry", "string")],
        ),
        _message("GradientDef", [_field("function_name", 1, "string"), _field("gradient_func", 2, "string")]),
        _message(
            "FunctionDefLibrary",
            [
                _field("function", 1, t + "FunctionDef", repeated=True),
                _field("gradient", 2, t + "GradientDef", repeated=True),
                _field("registered_gradients", 3, t + "RegisteredGradient", repeated=True),
            ],
        ),
        _message(
            "RegisteredGradient", [_field("gradient_func", 1, "string"), _field("registered_op_type", 2, "string")]
        ),
        # framework/graph.proto
        _message(
            "GraphDef",
            [
                _field("node", 1, t + "NodeDef", repeated=True),
                _field("versions", 4, t + "VersionDef"),
                _field("library", 2, t + "FunctionDefLibrary"),
            ],
        ),
    ]


def _variable_messages() -> list[descriptor_pb2.DescriptorProto]:
    """A MetaGraphDef's collections and assets, and the VariableDefs serialized into its `variables` collections."""
    t = ".tensorflow."
    return [
        # protobuf/meta_graph.proto
        _message(
            "CollectionDef",
            [
                _field("node_list", 1, t + "CollectionDef.NodeList", oneof=0),
                _field("bytes_list", 2, t + "CollectionDef.BytesList", oneof=0),
                _field("int64_list", 3, t + "CollectionDef.Int64List", oneof=0),
                _field("float_list", 4, t + "CollectionDef.FloatList", oneof=0),
                _field("any_list", 5, t + "CollectionDef.AnyList", oneof=0),
            ],
            nested=[
                _message("NodeList", [_field("value", 1, "string", repeated=True)]),
                _message("BytesList", [_field("value", 1, "bytes", repeated=True)]),
                _message("Int64List", [_field("value", 1, "int64", repeated=True)]),
                _message("FloatList", [_field("value", 1, "float", repeated=True)]),
                _message("AnyList", [_field("value", 1, ".google.protobuf.Any", repeated=True)]),
            ],
            oneofs=("kind",),
        ),
        _message("AssetFileDef", [_field("tensor_info", 1, t + "TensorInfo"), _field("filename", 2, "string")]),
        # protobuf/variable.proto: serialized into the bytes_list of the `variables` collections
        _message(
            "VariableDef",
            [
                _field("variable_name", 1, "string"),
                _field("initial_value_name", 6, "string"),
                _field("initializer_name", 2, "string"),
                _field("snapshot_name", 3, "string"),
                _field("save_slice_info_def", 4, t + "SaveSliceInfoDef"),
                _field("is_resource", 5, "bool"),
                _field("trainable", 7, "bool"),
                _field("synchronization", 8, "int32"),
                _field("aggregation", 9, "int32"),
            ],
        ),
        _message(
            "SaveSliceInfoDef",
            [
                _field("full_name", 1, "string"),
                _field("full_shape", 2, "int64", repeated=True),
                _field("var_offset", 3, "int64", repeated=True),
                _field("var_shape", 4, "int64", repeated=True),
            ],
        ),
    ]


def _saved_object_messages() -> list[descriptor_pb2.DescriptorProto]:
    """protobuf/saved_object_graph.proto (subset): the objects of a SavedModel and what kind each is."""
    t = ".tensorflow."
    ref = t + "TrackableObjectGraph.TrackableObject."
    kinds = [
        ("user_object", 4, "SavedUserObject"),
        ("asset", 5, "SavedAsset"),
        ("function", 6, "SavedFunction"),
        ("variable", 7, "SavedVariable"),
        ("bare_concrete_function", 8, "SavedBareConcreteFunction"),
        ("constant", 9, "SavedConstant"),
        ("resource", 10, "SavedResource"),
        ("captured_tensor", 12, "CapturedTensor"),
    ]
    version = _field("version", 2, t + "VersionDef")
    return [
        _message(
            "SavedObjectGraph",
            [
                _field("nodes", 1, t + "SavedObject", repeated=True),
                _field("concrete_functions", 2, t + "SavedObjectGraph.ConcreteFunctionsEntry", repeated=True),
            ],
            nested=[_map_entry("ConcreteFunctionsEntry", t + "SavedConcreteFunction")],
        ),
        _message("SavedConcreteFunction", [_field("bound_inputs", 2, "int32", repeated=True)]),
        _message(
            "SavedObject",
            [
                _field("children", 1, ref + "ObjectReference", repeated=True),
                _field("dependencies", 15, ref + "ObjectReference", repeated=True),
                _field("slot_variables", 3, ref + "SlotVariableReference", repeated=True),
                *(_field(name, number, t + kind, oneof=0) for name, number, kind in kinds),
                _field("saveable_objects", 11, t + "SavedObject.SaveableObjectsEntry", repeated=True),
                _field("registered_name", 13, "string"),
                _field("registered_saver", 16, "string"),
            ],
            nested=[_map_entry("SaveableObjectsEntry", t + "SaveableObject")],
            oneofs=("kind",),
        ),
        _message("SaveableObject", [_field("save_function", 2, "int32"), _field("restore_function", 3, "int32")]),
        *_saved_object_kinds(version),
    ]


def _saved_object_kinds(version: descriptor_pb2.FieldDescriptorProto) -> list[descriptor_pb2.DescriptorProto]:
    """The message of each SavedObject kind (the `kind` oneof)."""
    t = ".tensorflow."
    return [
        _message("SavedUserObject", [_field("identifier", 1, "string"), version, _field("metadata", 3, "string")]),
        _message("SavedAsset", [_field("asset_file_def_index", 1, "int32")]),
        _message("SavedFunction", [_field("concrete_functions", 1, "string", repeated=True)]),
        _message(
            "SavedVariable",
            [
                _field("dtype", 1, "int32"),
                _field("shape", 2, t + "TensorShapeProto"),
                _field("trainable", 3, "bool"),
                _field("synchronization", 4, "int32"),
                _field("aggregation", 5, "int32"),
                _field("name", 6, "string"),
                _field("device", 7, "string"),
            ],
        ),
        _message(
            "SavedBareConcreteFunction",
            [
                _field("concrete_function_name", 1, "string"),
                _field("argument_keywords", 2, "string", repeated=True),
                _field("allowed_positional_arguments", 3, "int64"),
            ],
        ),
        _message("SavedConstant", [_field("operation", 1, "string")]),
        _message("SavedResource", [_field("device", 1, "string")]),
        _message("CapturedTensor", [_field("name", 1, "string"), _field("concrete_function", 2, "string")]),
    ]


# A private pool, so these declarations never clash with TensorFlow's own when both are loaded.
_POOL = descriptor_pool.DescriptorPool()
_POOL.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
_POOL.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
_POOL.AddSerializedFile(_file().SerializeToString())


def _tail_file() -> descriptor_pb2.FileDescriptorProto:
    """BundleEntryProto's fields with presence (proto2), the dtype, shape and slices as raw bytes in one oneof:
    what follows an entry's dtype and shape, parsed alone, shows whether it holds any of those again (readers
    then parse the whole entry as BundleEntryProto)."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="ckpt_tools/bundle_entry_tail.proto", package="tensorflow.ckpt_tools", syntax="proto2"
    )
    again = [_field("dtype", 1, "int32", oneof=0), _field("shape", 2, "bytes", oneof=0)]
    again.append(_field("slices", 7, "bytes", oneof=0))  # any of the three present: WhichOneof("again")
    fields = [_field("shard_id", 3, "int32"), _field("offset", 4, "int64"), _field("size", 5, "int64")]
    fields.append(_field("crc32c", 6, "fixed32"))
    fdp.message_type.append(_message("BundleEntryTail", [*again, *fields], oneofs=("again",)))
    return fdp


_POOL.AddSerializedFile(_tail_file().SerializeToString())


def _cls(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName("tensorflow." + name))


VersionDef: Any = _cls("VersionDef")
TensorShapeProto: Any = _cls("TensorShapeProto")
TensorSliceProto: Any = _cls("TensorSliceProto")
BundleHeaderProto: Any = _cls("BundleHeaderProto")
BundleEntryProto: Any = _cls("BundleEntryProto")
BundleEntryTail: Any = _cls("ckpt_tools.BundleEntryTail")
TrackableObjectGraph: Any = _cls("TrackableObjectGraph")
SaverDef: Any = _cls("SaverDef")
TensorInfo: Any = _cls("TensorInfo")
SignatureDef: Any = _cls("SignatureDef")
MetaGraphDef: Any = _cls("MetaGraphDef")
SavedModel: Any = _cls("SavedModel")
TensorProto: Any = _cls("TensorProto")
AttrValue: Any = _cls("AttrValue")
NameAttrList: Any = _cls("NameAttrList")
NodeDef: Any = _cls("NodeDef")
FunctionDef: Any = _cls("FunctionDef")
FunctionDefLibrary: Any = _cls("FunctionDefLibrary")
GraphDef: Any = _cls("GraphDef")
CollectionDef: Any = _cls("CollectionDef")
VariableDef: Any = _cls("VariableDef")
SaveSliceInfoDef: Any = _cls("SaveSliceInfoDef")
SavedObjectGraph: Any = _cls("SavedObjectGraph")
SavedObject: Any = _cls("SavedObject")
KerasSavedMetadata: Any = _cls("KerasSavedMetadata")

__all__ = [
    "BIG_ENDIAN",
    "DTYPE_NAMES",
    "DTYPE_NUMBERS",
    "LITTLE_ENDIAN",
    "AttrValue",
    "BundleEntryProto",
    "BundleHeaderProto",
    "CollectionDef",
    "FunctionDef",
    "FunctionDefLibrary",
    "GraphDef",
    "KerasSavedMetadata",
    "MetaGraphDef",
    "NameAttrList",
    "NodeDef",
    "SaveSliceInfoDef",
    "SavedModel",
    "SavedObject",
    "SavedObjectGraph",
    "SaverDef",
    "SignatureDef",
    "TensorInfo",
    "TensorProto",
    "TensorShapeProto",
    "TensorSliceProto",
    "TrackableObjectGraph",
    "VariableDef",
    "VersionDef",
    "dtype_name",
]
