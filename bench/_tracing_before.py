"""Tracing on, with the tracing module of an earlier commit: before/after in one process.

The hooks (ingress, delivery, ``App.publish``, steps, platform calls) call the module's
functions through ``contexten.observability.tracing``, so putting an older version's
functions there runs the same hot paths with the older span code. Used by B12 and B3 to
measure off / on (an earlier commit) / on (this tree) side by side.
"""

from __future__ import annotations

import subprocess
import types
from pathlib import Path
from typing import Any

from contexten.observability import tracing

PATH = "src/contexten/observability/tracing.py"
HOOKS = (
    "attach_event_context",
    "client_span",
    "inject",
    "link_current_span",
    "process_span",
    "publish_span",
    "step_span",
    "tracing_enabled",
    "webhook_span",
)
_ORIGINAL = {name: getattr(tracing, name) for name in HOOKS}


def load(ref: str) -> types.ModuleType:
    """The tracing module as it was at git ``ref`` (loaded apart, not registered)."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "show", f"{ref}:{PATH}"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    module = types.ModuleType(f"tracing_at_{ref}")
    exec(compile(source, f"{ref}:{PATH}", "exec"), module.__dict__)
    return module


def provider() -> Any:
    """A production-shaped provider: 100% sampled, batch processor, an exporter that drops."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    made = TracerProvider()  # default sampler: parent-based always-on (100%)
    made.add_span_processor(BatchSpanProcessor(Drop()))
    return made


def switch(mode: str, before: types.ModuleType | None = None) -> None:
    """``off``, ``on`` (this tree) or ``before`` (``before``'s functions in the hooks)."""
    tracing.disable_tracing()
    if before is not None:
        before.disable_tracing()
    for name, function in _ORIGINAL.items():
        setattr(tracing, name, function)
    if mode == "off":
        return
    if mode == "before":
        assert before is not None
        assert before.configure_tracing(provider())
        for name in HOOKS:
            setattr(tracing, name, getattr(before, name))
        return
    assert tracing.configure_tracing(provider())
