"""The scan rule catalogue: every rule's id, severity and reason, and the ops each graph rule matches."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cache
from importlib import resources


class Severity(enum.IntEnum):
    """How much a finding matters; `--fail-on` compares against these, in this order."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            known = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r} (one of {known})") from None


# SARIF `security-severity` (the 0-10 score code-scanning UIs sort by) and `level` for each severity.
SECURITY_SCORE = {
    Severity.INFO: "0.0",
    Severity.LOW: "2.0",
    Severity.MEDIUM: "5.0",
    Severity.HIGH: "8.0",
    Severity.CRITICAL: "9.5",
}
SARIF_LEVEL = {
    Severity.INFO: "note",
    Severity.LOW: "note",
    Severity.MEDIUM: "warning",
    Severity.HIGH: "error",
    Severity.CRITICAL: "error",
}


@dataclass(frozen=True)
class Rule:
    """One kind of finding: `severity` is its default (a finding may be raised or lowered by its evidence)."""

    id: str
    severity: Severity
    title: str
    why: str


_RULES = (
    Rule(
        "graph.python",
        Severity.CRITICAL,
        "graph calls back into Python",
        "PyFunc/EagerPyFunc ops run a Python function of the process that loaded the graph; an artifact has no "
        "business asking for one, and with a matching registration it runs arbitrary code.",
    ),
    Rule(
        "graph.file-write",
        Severity.HIGH,
        "graph writes files",
        "Running this function writes to the file system (overwriting files, planting payloads), outside the "
        "saver functions that write checkpoints.",
    ),
    Rule(
        "graph.file-read",
        Severity.MEDIUM,
        "graph reads files",
        "Running this function reads or lists files on the machine that serves it; a file name fixed inside the "
        "artifact can pull secrets into its outputs.",
    ),
    Rule(
        "graph.network",
        Severity.HIGH,
        "graph talks to the network",
        "RPC and tf.data service ops connect to other machines when the function runs.",
    ),
    Rule(
        "graph.debug",
        Severity.HIGH,
        "graph streams tensors to debug URLs",
        "Debug ops send tensors to `file://` or `grpc://` URLs given in their attributes.",
    ),
    Rule(
        "graph.embedded-graph",
        Severity.HIGH,
        "graph embeds another graph",
        "DatasetFromGraph builds a tf.data pipeline from a serialized graph carried as a constant: code that "
        "other scanners do not look into (its ops are scanned here too).",
    ),
    Rule(
        "graph.print",
        Severity.LOW,
        "graph prints",
        "Print ops write tensors to the process's standard streams (logs), which can leak inputs.",
    ),
    Rule(
        "graph.process",
        Severity.MEDIUM,
        "graph can abort the process",
        "The Abort op ends the process that runs it (a denial of service of a model server).",
    ),
    Rule(
        "graph.custom-op",
        Severity.MEDIUM,
        "graph needs ops TensorFlow does not have",
        "These ops are not TensorFlow 2.21 ops: loading needs a kernel library you install and trust "
        "(tf.load_op_library); the artifact cannot bring one, but it will run whatever that library does.",
    ),
    Rule(
        "graph.checkpoint-io",
        Severity.LOW,
        "checkpoint I/O of a second Saver",
        "A tf.train.Saver subgraph that is not the graph's own saver_def reads or writes checkpoint files "
        "when someone runs it by name.",
    ),
    Rule(
        "scan.truncated",
        Severity.HIGH,
        "too many findings to list",
        "Past the per-artifact limit, findings are counted, not listed; this one carries the highest severity "
        "among those not listed, so padding a file with harmless findings cannot hide a dangerous one.",
    ),
    Rule(
        "file.polyglot",
        Severity.HIGH,
        "file parses as two formats",
        "The file is both HDF5 and a zip archive: Keras opens the zip (`.keras`), h5py the HDF5 view, and a "
        "scanner that looks at one view misses the other. No TensorFlow or Keras writer produces such a file.",
    ),
    Rule(
        "keras.tf-op",
        Severity.HIGH,
        "Keras config calls a TensorFlow function",
        "tf_keras TFOpLambda layers call the TensorFlow API function their config names, and TensorFlowOpLayer "
        "layers rebuild any op from a NodeDef: file, network and Python-callback functions run when the model "
        "is called.",
    ),
    Rule(
        "keras.lambda-bytecode",
        Severity.CRITICAL,
        "Lambda layer with Python bytecode",
        "The config carries marshalled Python bytecode; Keras runs it when the layer is loaded with safe_mode "
        "off (and tf_keras whenever the layer is called).",
    ),
    Rule(
        "keras.lambda",
        Severity.HIGH,
        "Lambda layer calling a named function",
        "The layer calls a function named by module and name; loading imports that module.",
    ),
    Rule(
        "keras.unsafe-switch",
        Severity.CRITICAL,
        "config switches off Keras safe mode",
        "Deserializing this object calls enable_unsafe_deserialization (CVE-2025-9906) or a safe-mode switch, "
        "after which later objects in the same file may run code.",
    ),
    Rule(
        "keras.foreign-module",
        Severity.HIGH,
        "config names a module outside Keras",
        "Keras imports the `module` an object names while loading, so that module's top-level code runs "
        "(CVE-2025-1550).",
    ),
    Rule(
        "keras.unlisted-keras-object",
        Severity.HIGH,
        "config names a Keras function that is not a model building block",
        "Objects from Keras namespaces other than layers, initializers, regularizers, constraints, losses, "
        "metrics, optimizers and models are functions Keras calls while loading (CVE-2025-8747 used "
        "keras.utils.get_file to write files).",
    ),
    Rule(
        "keras.custom-object",
        Severity.MEDIUM,
        "config needs a custom object",
        "The object is registered by a package outside Keras; loading needs that package's code.",
    ),
    Rule(
        "keras.tfsmlayer",
        Severity.HIGH,
        "TFSMLayer loads a SavedModel",
        "TFSMLayer loads and runs the SavedModel at its `filepath`, resolved against the working directory (an "
        "archive cannot hold one): whatever is at that path runs.",
    ),
    Rule(
        "archive.path-trick",
        Severity.HIGH,
        "archive member name escapes or hides",
        "Absolute names, `..`, backslashes, drive letters, NUL bytes, duplicates and symlink members make "
        "extraction write outside the target or show different content to different readers.",
    ),
    Rule(
        "archive.pickle",
        Severity.HIGH,
        "archive carries a pickle-capable member",
        "`.npz`/`.npy`/`.pkl` members can hold pickled objects, which run code when loaded with allow_pickle.",
    ),
    Rule(
        "archive.executable",
        Severity.HIGH,
        "archive carries code",
        "Python sources, compiled modules, shared libraries and executables are not part of the format.",
    ),
    Rule(
        "archive.unexpected-member",
        Severity.LOW,
        "archive member outside the format",
        "A `.keras` archive holds config.json, metadata.json, model.weights.h5 and assets/; other members are "
        "carried along unseen.",
    ),
    Rule(
        "hdf5.external-link",
        Severity.HIGH,
        "HDF5 external link",
        "An external link makes HDF5 open another file, anywhere on the machine, when the link is followed.",
    ),
    Rule(
        "hdf5.external-storage",
        Severity.HIGH,
        "HDF5 dataset stored in another file",
        "The dataset's bytes live in files named inside the HDF5 file; reading it reads those files.",
    ),
    Rule(
        "hdf5.virtual-dataset",
        Severity.HIGH,
        "HDF5 virtual dataset",
        "A virtual dataset maps other files' datasets; reading it opens them.",
    ),
    Rule(
        "hdf5.user-block",
        Severity.MEDIUM,
        "HDF5 user block",
        "Bytes before the HDF5 superblock are ignored by HDF5 but can make the file a valid archive or script "
        "to other tools (a polyglot).",
    ),
    Rule(
        "path.escape",
        Severity.HIGH,
        "path leads outside the artifact",
        "A state-file entry, asset name or symlink points outside the artifact, so tools that follow it read "
        "or write elsewhere.",
    ),
)
RULES: dict[str, Rule] = {rule.id: rule for rule in _RULES}

# Graph ops by the rule they fall under. Checkpoint I/O ops are exempt inside the graph's own saver.
CHECKPOINT_WRITE_OPS = frozenset({"Save", "SaveSlices", "SaveV2", "MergeV2Checkpoints"})
CHECKPOINT_READ_OPS = frozenset({"Restore", "RestoreSlice", "RestoreV2"})
OP_RULES: dict[str, str] = {
    **dict.fromkeys(("PyFunc", "PyFuncStateless", "EagerPyFunc"), "graph.python"),
    **dict.fromkeys(
        (
            *CHECKPOINT_WRITE_OPS,
            "WriteFile",
            "DatasetToTFRecord",
            "ExperimentalDatasetToTFRecord",
            "SaveDataset",
            "SaveDatasetV2",
            "DistributedSave",
            "CacheDataset",
            "CacheDatasetV2",
            "SnapshotDataset",
            "SnapshotDatasetV2",
            "CalibrationStatisticsSaver",
            "DumpTensor",
            "FileSystemSetConfiguration",
            "CreateSummaryFileWriter",
            "CreateSummaryDbWriter",
            "ImportEvent",
        ),
        "graph.file-write",
    ),
    **dict.fromkeys(
        (
            *CHECKPOINT_READ_OPS,
            "ReadFile",
            "MatchingFiles",
            "MatchingFilesDataset",
            "ExperimentalMatchingFilesDataset",
            "ImmutableConst",
            "TFRecordDataset",
            "TFRecordDatasetV2",
            "TextLineDataset",
            "FixedLengthRecordDataset",
            "FixedLengthRecordDatasetV2",
            "CSVDataset",
            "CSVDatasetV2",
            "ExperimentalCSVDataset",
            "LMDBDataset",
            "ExperimentalLMDBDataset",
            "SqlDataset",
            "ExperimentalSqlDataset",
            "LoadDataset",
            "DTensorRestoreV2",
            "RecordInput",
            "DecodeProtoV2",
            "EncodeProto",
            "SnapshotChunkDataset",
            "ListSnapshotChunksDataset",
            "SnapshotDatasetReader",
            "SnapshotNestedDatasetReader",
            "WholeFileReader",
            "WholeFileReaderV2",
            "TextLineReader",
            "TextLineReaderV2",
            "TFRecordReader",
            "TFRecordReaderV2",
            "FixedLengthRecordReader",
            "FixedLengthRecordReaderV2",
            "LMDBReader",
            "InitializeTableFromTextFile",
            "InitializeTableFromTextFileV2",
            "GenerateVocabRemapping",
            "LoadAndRemapMatrix",
        ),
        "graph.file-read",
    ),
    **dict.fromkeys(
        (
            "RpcCall",
            "RpcClient",
            "RpcServer",
            "RpcServerRegister",
            "RpcServerStart",
            "DataServiceDataset",
            "DataServiceDatasetV2",
            "DataServiceDatasetV3",
            "DataServiceDatasetV4",
            "RegisterDataset",
            "RegisterDatasetV2",
        ),
        "graph.network",
    ),
    **dict.fromkeys(
        (
            "DebugIdentity",
            "DebugIdentityV2",
            "DebugIdentityV3",
            "DebugNanCount",
            "DebugNumericSummary",
            "DebugNumericSummaryV2",
        ),
        "graph.debug",
    ),
    "DatasetFromGraph": "graph.embedded-graph",
    "Print": "graph.print",
    "PrintV2": "graph.print",
    "Abort": "graph.process",
    "ShutdownTPUSystem": "graph.process",
    "_DisconnectHostFromDistributedTPUSystem": "graph.process",
}
# The data input of each file op that names the file or URL, where it is not the first (TensorFlow's op defs).
FILENAME_INPUT = {
    "InitializeTableFromTextFile": 1,
    "InitializeTableFromTextFileV2": 1,
    "MergeV2Checkpoints": 1,
    "CreateSummaryFileWriter": 1,
    "CreateSummaryDbWriter": 1,
    "CacheDataset": 1,
    "CacheDatasetV2": 1,
    "SnapshotDataset": 1,
    "SnapshotDatasetV2": 1,
    "SaveDataset": 1,
    "SaveDatasetV2": 1,
    "DatasetToTFRecord": 1,
    "ExperimentalDatasetToTFRecord": 1,
    "DistributedSave": 1,
}
# Ops that name their file in an attribute instead of an input.
FILENAME_ATTR = {
    "ImmutableConst": "memory_region_name",
    "CalibrationStatisticsSaver": "output_file_path",
    "DumpTensor": "log_dir_path",
    "RecordInput": "file_pattern",
    "DecodeProtoV2": "descriptor_source",
    "EncodeProto": "descriptor_source",
}
# Values of those that name no file: the in-memory cache, the descriptor pool compiled into the binary.
NOT_A_FILE = frozenset({"", "local://"})
# A file name with one of these schemes is a network location (TensorFlow registers `gs`, and plugins `s3`,
# `hdfs`, `http`...): any `scheme://` other than `file://` is treated as the network.
LOCAL_SCHEMES = frozenset({"file"})

# Keras namespaces whose objects are model building blocks (what a config is for). Anything else from a
# `keras` module is a function Keras would call while deserializing.
KERAS_BUILDING_BLOCKS = (
    "layers",
    "initializers",
    "regularizers",
    "constraints",
    "activations",
    "losses",
    "metrics",
    "optimizers",
    "models",
    "dtype_policies",
    "mixed_precision",
    "ops",
    "quantizers",
    "random",
    "optimizers.schedules",
)
# Keras 3.15's own list of functions it refuses to deserialize (serialization_lib.NON_MODELING_APIS), by
# public name; the same names under any namespace above are reported too.
KERAS_NON_MODELING = frozenset(
    {
        "clear_session",
        "enable_unsafe_deserialization",
        "load_model",
        "model_from_json",
        "save_model",
        "image_dataset_from_directory",
        "load_img",
        "save_img",
        "text_dataset_from_directory",
        "audio_dataset_from_directory",
        "deserialize_keras_object",
        "serialize_keras_object",
        "load_weights",
        "save_weights",
        "register_keras_serializable",
        "get_file",
    }
)
# tf_keras TFOpLambda `function` names (the TensorFlow API path after `tf.`) that reach files, the network,
# Python callbacks or process state; everything else TFOpLambda can name is a tensor computation.
TF_API_DENYLIST = (
    "io.",
    "gfile.",
    "raw_ops.",
    "py_function",
    "numpy_function",
    "compat.v1.py_func",
    "print",
    "summary.",
    "debugging.experimental.",
    "data.",
    "saved_model.",
    "train.",
    "config.",
    "distribute.",
    "lookup.",
    "keras.",
    "experimental.",
)
KERAS_ROOTS = ("keras", "tf_keras")
# Objects Keras configs name under the package root itself (`"module": "keras"`).
KERAS_ROOT_OBJECTS = frozenset({"DTypePolicy", "FloatDTypePolicy", "QuantizedDTypePolicy", "Sequential", "Model"})
UNSAFE_SWITCHES = frozenset({"enable_unsafe_deserialization", "SafeModeScope", "safe_mode_scope"})
LAMBDA_CLASSES = frozenset({"Lambda"})

# `.keras` archive members by what they are.
ARCHIVE_MEMBERS = frozenset({"config.json", "metadata.json", "model.weights.h5"})
PICKLE_SUFFIXES = (".npz", ".npy", ".pkl", ".pickle", ".joblib", ".pt", ".pth", ".dill", ".cloudpickle")
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd", ".so", ".dylib", ".dll", ".exe", ".sh", ".bat", ".cmd", ".ps1", ".jar")
CODE_MAGICS = (b"\x7fELF", b"MZ", b"#!", b"\xca\xfe\xba\xbe", b"\xcf\xfa\xed\xfe")


@cache
def tensorflow_ops() -> frozenset[str]:
    """Every op TensorFlow 2.21 registers (CPU build), from the committed list `tf_ops.txt`."""
    text = resources.files("ckpt_tools.scanning").joinpath("tf_ops.txt").read_text(encoding="utf-8")
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))
