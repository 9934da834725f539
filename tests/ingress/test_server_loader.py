"""``--app``: loading the App to serve from a module or a file, and the errors when it fails."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from contexten import App
from contexten.exceptions import AppLoadError, ConfigurationError
from contexten.ingress.loader import load_app, split_reference


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory with a uniquely named module holding apps; sys.path/sys.modules restored."""
    name = f"userapp_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from contexten import App

            app = App("memory://")
            other = App("memory://")
            not_an_app = 42

            def factory():
                return App("memory://")

            def bad_factory():
                return "nope"

            def failing_factory():
                raise ValueError("no config")

            class Holder:
                app = App("memory://")
            """
        )
    )
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    try:
        yield tmp_path, name
    finally:
        sys.path[:] = saved_path
        for added in set(sys.modules) - saved_modules:
            del sys.modules[added]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("myapp:app", ("myapp", "app", False)),
        ("pkg.mod:web_app", ("pkg.mod", "web_app", False)),
        ("myapp", ("myapp", "app", False)),
        ("examples/devteam.py:app", ("examples/devteam.py", "app", True)),
        ("examples/devteam.py", ("examples/devteam.py", "app", True)),
        ("devteam.py:Holder.app", ("devteam.py", "Holder.app", True)),
    ],
)
def test_references_split(reference: str, expected: tuple[str, str, bool]) -> None:
    assert split_reference(reference) == expected


@pytest.mark.parametrize("reference", ["", "  ", "myapp:", "myapp:not-a-name", ":app"])
def test_malformed_references_are_refused(reference: str) -> None:
    with pytest.raises(AppLoadError, match="--app"):
        split_reference(reference)


def test_load_by_module_name(project: tuple[Path, str]) -> None:
    cwd, name = project
    app = load_app(f"{name}:app", cwd=cwd)
    assert isinstance(app, App)
    assert app is sys.modules[name].app
    assert load_app(name, cwd=cwd) is app  # :app is the default
    assert load_app(f"{name}:other", cwd=cwd) is sys.modules[name].other
    assert load_app(f"{name}:Holder.app", cwd=cwd) is sys.modules[name].Holder.app


def test_load_by_file_path_imports_it_under_its_stem(project: tuple[Path, str]) -> None:
    cwd, name = project
    sub = cwd / "examples"
    sub.mkdir()
    (sub / f"{name}_helpers.py").write_text("GREETING = 'hi'\n")
    (sub / f"{name}_file.py").write_text(
        f"from contexten import App\nfrom {name}_helpers import GREETING\napp = App('memory://')\n"
    )
    app = load_app(f"examples/{name}_file.py:app", cwd=cwd)
    module = sys.modules[f"{name}_file"]  # named after the file: subscription names use it
    assert app is module.app
    assert load_app(f"examples/{name}_file.py", cwd=cwd) is app  # same module, not reloaded
    assert load_app(str(sub / f"{name}_file.py"), cwd=Path("/")) is app  # absolute path


def test_a_factory_is_called(project: tuple[Path, str]) -> None:
    cwd, name = project
    made = load_app(f"{name}:factory", cwd=cwd)
    assert isinstance(made, App)
    assert made is not load_app(f"{name}:factory", cwd=cwd)


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ("missing", r"has no attribute 'missing'"),
        ("not_an_app", r"is a int, not a contexten App"),
        ("bad_factory", r"returned a str, not an App"),
        ("failing_factory", r"calling the factory .* failed: ValueError: no config"),
    ],
)
def test_what_is_not_an_app_is_refused_clearly(
    project: tuple[Path, str], attr: str, message: str
) -> None:
    cwd, name = project
    with pytest.raises(AppLoadError, match=message):
        load_app(f"{name}:{attr}", cwd=cwd)


def test_missing_module_and_file(project: tuple[Path, str]) -> None:
    tmp_path, _ = project
    with pytest.raises(AppLoadError, match=r"no module named 'surely_not_a_module_x1'"):
        load_app("surely_not_a_module_x1:app", cwd=tmp_path)
    with pytest.raises(AppLoadError, match=r"no file 'nowhere/app.py'"):
        load_app("nowhere/app.py:app", cwd=tmp_path)
    with pytest.raises(AppLoadError, match=r"is not a module name"):
        load_app("my-app:app", cwd=tmp_path)


def test_import_errors_inside_the_module_are_reported_as_such(
    project: tuple[Path, str],
) -> None:
    cwd, name = project
    (cwd / f"{name}_broken.py").write_text("import surely_not_a_dependency_x2\n")
    with pytest.raises(AppLoadError, match=r"importing .* failed: ModuleNotFoundError") as info:
        load_app(f"{name}_broken:app", cwd=cwd)
    assert "surely_not_a_dependency_x2" in str(info.value)
    (cwd / f"{name}_syntax.py").write_text("app = (\n")
    with pytest.raises(AppLoadError, match=r"importing .* failed: SyntaxError"):
        load_app(f"{name}_syntax.py:app", cwd=cwd)
    assert f"{name}_syntax" not in sys.modules  # a failed import leaves nothing behind


def test_a_file_whose_name_shadows_a_loaded_module_is_refused(
    project: tuple[Path, str],
) -> None:
    tmp_path, _ = project
    (tmp_path / "json.py").write_text("from contexten import App\napp = App('memory://')\n")
    with pytest.raises(AppLoadError, match=r"already imported from elsewhere; rename the file"):
        load_app("json.py:app", cwd=tmp_path)


def test_load_errors_are_configuration_errors() -> None:
    assert issubclass(AppLoadError, ConfigurationError)
