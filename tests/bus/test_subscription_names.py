"""Default subscription names do not move with how the app file is launched (issue 9, §3)."""

from __future__ import annotations

import importlib.util
import runpy
import sys
from pathlib import Path

import pytest

from contexten import App, Event, HandlerContext
from contexten.bus.subscription import default_name
from contexten.exceptions import ConfigurationError

APP_FILE = """
from contexten import App

app = App("memory://")


@app.on("ticket.opened")
async def triage(event, ctx):
    pass


def make():
    async def inner(event, ctx):
        pass

    return inner
"""

RULES_FILE = """
async def label(event, ctx):
    pass
"""


def _names(app: App) -> list[str]:
    return sorted(app.subscriptions)


def test_same_name_as_main_and_as_imported_module(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP_FILE)
    as_main = runpy.run_path(str(tmp_path / "app.py"), run_name="__main__")
    spec = importlib.util.spec_from_file_location("app", tmp_path / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    assert as_main["triage"].__module__ == "__main__"
    assert module.triage.__module__ == "app"
    assert _names(as_main["app"]) == _names(module.app) == ["app.triage"]
    assert as_main["app"].root == module.app.root == str(tmp_path)


def test_handlers_in_a_package_are_named_by_their_path(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "rules.py").write_text(RULES_FILE)
    sys.path.insert(0, str(tmp_path))
    try:
        import pkg.rules  # type: ignore[import-not-found]

        app = App("memory://", root=tmp_path)
        app.on("x.y")(pkg.rules.label)
        assert _names(app) == ["pkg.rules.label"]  # the module name: no upgrade needed
        # launched from elsewhere (another cwd), still the same
        other = App("memory://", root=str(tmp_path))
        other.on("x.y")(pkg.rules.label)
        assert _names(other) == ["pkg.rules.label"]
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("pkg.rules", "pkg"):
            sys.modules.pop(name, None)


def test_handler_outside_the_root_keeps_its_module_name(tmp_path: Path) -> None:
    app = App("memory://", root=tmp_path)
    app.on("x.y")(_outside)
    assert _names(app) == [f"{__name__}._outside"]


async def _outside(event: Event, ctx: HandlerContext) -> None:
    pass


def test_two_subscriptions_with_the_same_name_are_refused(tmp_path: Path) -> None:
    app = App("memory://", root=tmp_path)

    async def handle(event: Event, ctx: HandlerContext) -> None:
        pass

    app.on("a.b")(handle)
    with pytest.raises(ConfigurationError, match="already exists"):
        app.on("c.d")(handle)
    app.on("a.b", name="triage")(handle)
    with pytest.raises(ConfigurationError, match="'triage' already exists"):
        app.on("c.d", name="triage")(handle)
    assert len(app.subscriptions) == 2


@pytest.mark.parametrize("bad", ["", "   ", " lead", "tab\there", "x" * 201, "new\nline"])
def test_bad_explicit_names_are_refused(bad: str) -> None:
    app = App("memory://")

    async def handle(event: Event, ctx: HandlerContext) -> None:
        pass

    with pytest.raises(ConfigurationError, match="name"):
        app.on("a.b", name=bad)(handle)
    assert not app.subscriptions


def test_main_without_a_file_is_refused() -> None:
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec("async def typed(event, ctx):\n    pass\n", namespace)  # a REPL handler
    with pytest.raises(ConfigurationError, match="name="):
        default_name(namespace["typed"], "/")  # type: ignore[arg-type]


HANDLER_FILE = """
seen = []


async def triage(event, ctx):
    seen.append(event.data["n"])
"""


async def test_an_old_main_name_hands_its_position_to_the_new_name(tmp_path: Path) -> None:
    """Upgrade: ``python app.py`` stored ``__main__.triage``; the new name continues from it."""
    url = f"sqlite:///{tmp_path / 'up.db'}"
    (tmp_path / "app.py").write_text(HANDLER_FILE)
    before = runpy.run_path(str(tmp_path / "app.py"), run_name="__main__")
    old = App(url, root=tmp_path)
    old.on("ticket.opened", name="__main__.triage")(before["triage"])  # as older versions did
    async with old:
        for n in range(3):
            await old.publish(Event(type="ticket.opened", data={"n": n}))
        await old.drain()
    assert before["seen"] == [0, 1, 2]

    after = runpy.run_path(str(tmp_path / "app.py"), run_name="__main__")
    new = App(url, root=tmp_path)
    new.on("ticket.opened")(after["triage"])
    [sub] = new.subscriptions.values()
    assert sub.name == "app.triage"
    assert sub.previous_names == ("__main__.triage",)
    async with new:
        await new.publish(Event(type="ticket.opened", data={"n": 3}))
        await new.drain()
    assert after["seen"] == [3]  # history is not delivered again


async def test_a_brand_new_subscription_still_starts_at_the_beginning(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    (tmp_path / "app.py").write_text(HANDLER_FILE)
    ns = runpy.run_path(str(tmp_path / "app.py"), run_name="__main__")
    app = App(url, root=tmp_path)
    async with app:
        await app.publish(Event(type="ticket.opened", data={"n": 0}))
    app.on("ticket.opened")(ns["triage"])
    async with app:
        await app.drain()
    assert ns["seen"] == [0]
