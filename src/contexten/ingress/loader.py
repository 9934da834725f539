"""Find the App to serve from a ``--app`` reference: ``module:attr`` or ``path/to/file.py:attr``.

* ``myapp:app``, ``pkg.module:app``: imported like ``python -c "import myapp"`` run from the
  current directory (it is put first on ``sys.path``, as uvicorn does).
* ``examples/devteam.py:app``: the file is imported as a module named after its stem
  (``devteam``), with its directory first on ``sys.path`` (as ``python examples/devteam.py``
  would have it), so it can import its siblings. The module name matters: handlers' default
  subscription names (``devteam.announce``) and so their checkpoints derive from it.
* ``:attr`` may be left out (``myapp``, ``examples/devteam.py``): it defaults to ``app``.
* The attribute is an :class:`~contexten.App`, or a callable taking no arguments that returns
  one (a factory).

Every failure raises :class:`~contexten.exceptions.AppLoadError` with a message saying what
was looked for and where.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Final

from contexten.app import App
from contexten.exceptions import AppLoadError

__all__ = ["DEFAULT_ATTRIBUTE", "load_app", "split_reference"]

DEFAULT_ATTRIBUTE: Final = "app"


def split_reference(reference: str) -> tuple[str, str, bool]:
    """Split ``reference`` into (module or path, attribute, is a file path).

    Raises:
        AppLoadError: the reference is empty, or its attribute part is not a dotted name.
    """
    reference = reference.strip()
    if not reference:
        raise AppLoadError("--app is empty; give module:attr or path/to/file.py:attr")
    if reference.endswith(".py"):
        target, attr = reference, DEFAULT_ATTRIBUTE
    else:
        target, colon, attr = reference.rpartition(":")
        if not colon:
            target, attr = reference, DEFAULT_ATTRIBUTE
    if not target or not all(part.isidentifier() for part in attr.split(".")):
        raise AppLoadError(
            f"--app {reference!r}: expected module:attr or path/to/file.py:attr "
            "(attr a Python name such as 'app')"
        )
    is_path = target.endswith(".py") or "/" in target or os.sep in target
    return target, attr, is_path


def _import_module(name: str, cwd: Path) -> ModuleType:
    if not all(part.isidentifier() for part in name.split(".")):
        raise AppLoadError(
            f"--app: {name!r} is not a module name; for a file, give its path ending in .py"
        )
    if str(cwd) not in sys.path:
        sys.path.insert(0, str(cwd))
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if name == missing or name.startswith(missing + "."):
            raise AppLoadError(
                f"--app: no module named {missing!r} (looked in {cwd} and on sys.path)"
            ) from e
        raise AppLoadError(f"--app: importing {name!r} failed: {type(e).__name__}: {e}") from e
    except Exception as e:
        raise AppLoadError(f"--app: importing {name!r} failed: {type(e).__name__}: {e}") from e


def _import_file(path_text: str, cwd: Path) -> ModuleType:
    path = (cwd / path_text).resolve()
    if not path.is_file():
        raise AppLoadError(f"--app: no file {path_text!r} (looked for {path})")
    name = path.stem
    if not name.isidentifier():
        raise AppLoadError(
            f"--app: {path.name!r} cannot be imported: its name is not a Python identifier"
        )
    loaded = sys.modules.get(name)
    if loaded is not None:
        if getattr(loaded, "__file__", None) and Path(str(loaded.__file__)).resolve() == path:
            return loaded
        raise AppLoadError(
            f"--app: {path.name!r} would be imported as module {name!r}, but a module of that "
            "name is already imported from elsewhere; rename the file"
        )
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"--app: {path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        del sys.modules[name]
        if not isinstance(e, Exception):
            raise
        raise AppLoadError(f"--app: importing {path} failed: {type(e).__name__}: {e}") from e
    return module


def load_app(reference: str, *, cwd: Path | None = None) -> App:
    """Import and return the :class:`App` that ``reference`` names (module docstring).

    Args:
        reference: ``module:attr``, ``path/to/file.py:attr``, or either without ``:attr``.
        cwd: the directory relative paths and top-level modules are found in (default: the
            current directory).

    Raises:
        AppLoadError: no such module or file, it failed to import, it has no such
            attribute, or the attribute is not an App (nor a factory returning one).
    """
    cwd = (cwd or Path.cwd()).resolve()
    target, attr, is_path = split_reference(reference)
    module = _import_file(target, cwd) if is_path else _import_module(target, cwd)
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(
                f"--app: {target!r} has no attribute {attr!r} "
                f"(define e.g. `{DEFAULT_ATTRIBUTE} = App()` in it)"
            ) from None
    if isinstance(obj, App):
        return obj
    if callable(obj):
        try:
            made = obj()
        except Exception as e:
            raise AppLoadError(
                f"--app: calling the factory {target}:{attr} failed: {type(e).__name__}: {e}"
            ) from e
        if isinstance(made, App):
            return made
        raise AppLoadError(
            f"--app: the factory {target}:{attr} returned a {type(made).__name__}, not an App"
        )
    raise AppLoadError(
        f"--app: {target}:{attr} is a {type(obj).__name__}, not a contexten App "
        "(nor a factory returning one)"
    )
