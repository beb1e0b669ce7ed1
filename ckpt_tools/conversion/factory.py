"""Loading the user's model factory (`package.module:func` or `path/to/file.py:func`) for `ckpt convert`."""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ckpt_tools.errors import ConversionError, MissingDependencyError, UsageError
from ckpt_tools.messages import os_reason
from ckpt_tools.tfimport import INSTALL_HINT, import_tensorflow


def require_keras(what: str) -> Any:
    """Import Keras 3 on the TensorFlow backend (lazily), or say which extra to install."""
    import_tensorflow(what)
    try:
        import keras
    except ImportError as exc:
        raise MissingDependencyError(f"{what}: needs TensorFlow and Keras 3; {INSTALL_HINT}") from exc
    if not str(getattr(keras, "__version__", "0")).startswith("3."):
        raise MissingDependencyError(f"{what}: needs Keras 3 (found {keras.__version__}); {INSTALL_HINT}")
    if keras.backend.backend() != "tensorflow":
        raise MissingDependencyError(
            f"{what}: needs the Keras tensorflow backend (KERAS_BACKEND is {keras.backend.backend()!r})"
        )
    return keras


def _is_path(module_part: str) -> bool:
    return module_part.endswith(".py") or "/" in module_part or "\\" in module_part


def check_factory_spec(spec: str) -> None:
    """Refuse a malformed `MODULE:FACTORY` cheaply, before TensorFlow is imported and without running any code:
    the file exists (or the module can be found) and, for Python source, defines FACTORY (read with `ast`)."""
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr or not all(p.isidentifier() for p in attr.split(".")):
        detail = f"must look like package.module:function or path/to/file.py:function (got {spec!r})"
        raise UsageError(f"model={spec!r}: {detail}", argument="model", detail=detail)
    if _is_path(module_part):
        path = Path(module_part)
        if not path.is_file():
            raise UsageError(f"{spec}: no such file {module_part}")
        origin: str | None = str(path)
    else:
        origin = _module_origin(spec, module_part)
    if origin is not None and origin.endswith(".py"):
        _check_defined(spec, Path(origin), attr.split(".")[0])


def _module_origin(spec: str, module_part: str) -> str | None:
    """The source file of an importable module, found without importing it (None: only an import can tell)."""
    parts = module_part.split(".")
    if not all(p.isidentifier() for p in parts):
        detail = f"{module_part!r} is not a dotted module name (a file needs its .py suffix or a path)"
        raise UsageError(f"model={spec!r}: {detail}", argument="model", detail=detail)
    try:
        found = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise UsageError(f"{spec}: cannot import {module_part}: no module named {parts[0]!r}")
    for depth in range(1, len(parts)):
        locations = found.submodule_search_locations
        found = importlib.machinery.PathFinder.find_spec(".".join(parts[: depth + 1]), list(locations or []))
        if found is None:
            return None  # e.g. a submodule its package creates on import: the import will say
    return found.origin


def _check_defined(spec: str, path: Path, name: str) -> None:
    """`name` is bound at the top level of the Python file (a def, class, assignment or import)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError) as exc:
        raise UsageError(f"{spec}: {path} is not valid Python ({type(exc).__name__}: {exc})") from exc
    except OSError as exc:
        raise UsageError(f"{spec}: cannot read {path}: {os_reason(exc)}") from exc
    bound: set[str] = set()
    uncertain = False  # a star import, or names bound under if/try/with/for: only importing can tell
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            uncertain |= any(a.name == "*" for a in node.names)
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif not isinstance(node, ast.Expr):
            uncertain = True
    if name not in bound and "__getattr__" not in bound and not uncertain:
        raise UsageError(f"{spec}: {path} defines no {name!r} at its top level")


def load_factory(spec: str) -> Callable[[], Any]:
    """The callable named by `module:attr` (importable module) or `path/to/file.py:attr`."""
    check_factory_spec(spec)
    module_part, _, attr = spec.rpartition(":")
    if _is_path(module_part):
        path = Path(module_part)
        name = "ckpt_factory_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise UsageError(f"{spec}: cannot load {module_part} as Python")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise UsageError(f"{spec}: importing {module_part} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(module_part)
        except ImportError as exc:
            raise UsageError(f"{spec}: cannot import {module_part}: {exc}") from exc
        except Exception as exc:
            raise UsageError(f"{spec}: importing {module_part} failed: {type(exc).__name__}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise UsageError(f"{spec}: {module_part} has no attribute {attr!r}") from exc
    if not callable(target):
        raise UsageError(f"{spec}: {attr} is not callable")
    factory: Callable[[], Any] = target
    return factory


def build_model(spec: Any) -> Any:
    """The target model: a live `keras.Model`, or what the `MODULE:FACTORY` factory returns; checked to be a
    built, compiled Keras 3 model with a Keras 3 optimizer."""
    if not isinstance(spec, str):
        return check_model(spec, "model", require_keras("a live model"))
    keras = require_keras(spec)
    factory = load_factory(spec)
    try:
        model = factory()
    except Exception as exc:
        raise UsageError(f"{spec}: the factory raised {type(exc).__name__}: {exc}") from exc
    return check_model(model, spec, keras)


def check_model(model: Any, label: str, keras: Any) -> Any:
    """`model` if it is a built, compiled Keras 3 model with a Keras 3 optimizer, else a one-line refusal."""
    if not isinstance(model, keras.Model):
        kind = type(model).__module__ + "." + type(model).__qualname__
        hint = " (a tf_keras / Keras 2 model; build it with `import keras`, Keras 3)" if "tf_keras" in kind else ""
        raise UsageError(f"{label}: must be a keras.Model, got {kind}{hint}")
    if not model.built or not model.weights:
        raise ConversionError(f"{label}: the model has no variables yet; give it an Input shape so it is built")
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ConversionError(f"{label}: the model is not compiled; call model.compile(optimizer=...) first")
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ConversionError(f"{label}: the model's optimizer is {type(optimizer).__name__}, not a Keras 3 optimizer")
    return model


@contextmanager
def weights_through_disk() -> Iterator[None]:
    """Make Keras' .keras saving and loading stage `model.weights.h5` in a file beside the archive instead of
    in memory (Keras 3.15 buffers it whole, twice, when `saving_lib.is_memory_sufficient` says there is room):
    the weights then never have a second and third copy in RAM. A Keras without that switch is left as it is."""
    try:
        from keras.src.saving import saving_lib
    except ImportError:
        yield
        return
    original = getattr(saving_lib, "is_memory_sufficient", None)
    if original is None:
        yield
        return
    saving_lib.is_memory_sufficient = lambda *_args, **_kwargs: False
    try:
        yield
    finally:
        saving_lib.is_memory_sufficient = original
