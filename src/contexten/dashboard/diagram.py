"""A state machine drawn as SVG on the server, with the current state highlighted.

The page shows the diagram without any script (so the Content-Security-Policy stays strict
and nothing is downloaded): states are laid out in rows by their distance from the initial
state, transitions are arrows labelled with the event type that fires them. Labels are
escaped like any other text. The machine's Mermaid text (``StateMachine.to_mermaid``) is
shown beside it for copying into docs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Final
from xml.sax.saxutils import escape, quoteattr

from contexten.workflows.state_machine import StateMachine

__all__ = ["state_machine_svg"]

_BOX_W: Final = 150
_BOX_H: Final = 36
_GAP_X: Final = 40
_GAP_Y: Final = 78
_MARGIN: Final = 24
_MAX_LABEL: Final = 40


@dataclass(frozen=True, slots=True)
class _Edge:
    source: str
    target: str
    label: str


def _edges(machine: StateMachine) -> list[_Edge]:
    terminal = machine.terminal_states
    merged: dict[tuple[str, str], list[str]] = defaultdict(list)
    for t in machine.transitions:
        label = t.on + (" [guarded]" if t.when is not None else "")
        sources = sorted(machine.states - terminal) if "*" in t.sources else sorted(t.sources)
        for s in sources:
            if label not in merged[(s, t.to)]:
                merged[(s, t.to)].append(label)
    return [_Edge(s, d, ", ".join(labels)) for (s, d), labels in merged.items()]


def _layers(machine: StateMachine, edges: list[_Edge]) -> list[list[str]]:
    depth = {machine.initial: 0}
    frontier = [machine.initial]
    while frontier:
        nxt = []
        for state in frontier:
            for e in edges:
                if e.source == state and e.target not in depth:
                    depth[e.target] = depth[state] + 1
                    nxt.append(e.target)
        frontier = nxt
    last = max(depth.values(), default=0)
    for state in sorted(machine.states):
        depth.setdefault(state, last + 1)  # unreachable states go last
    rows: dict[int, list[str]] = defaultdict(list)
    for state in sorted(depth, key=lambda s: (depth[s], s)):
        rows[depth[state]].append(state)
    return [rows[i] for i in sorted(rows)]


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 1] + "…"


def state_machine_svg(machine: StateMachine, current: str | None = None) -> str:
    """The SVG markup of ``machine``'s diagram; ``current`` is drawn highlighted.

    Every label is XML-escaped; the result is safe to embed in a page as markup.
    """
    edges = _edges(machine)
    layers = _layers(machine, edges)
    widest = max(len(row) for row in layers)
    width = _MARGIN * 2 + widest * _BOX_W + (widest - 1) * _GAP_X
    height = _MARGIN * 2 + len(layers) * _BOX_H + (len(layers) - 1) * _GAP_Y
    centre: dict[str, tuple[float, float]] = {}
    for r, row in enumerate(layers):
        row_w = len(row) * _BOX_W + (len(row) - 1) * _GAP_X
        x0 = (width - row_w) / 2
        for c, state in enumerate(row):
            centre[state] = (
                x0 + c * (_BOX_W + _GAP_X) + _BOX_W / 2,
                _MARGIN + r * (_BOX_H + _GAP_Y) + _BOX_H / 2,
            )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="sm" viewBox="0 0 {width:.0f} '
        f'{height:.0f}" role="img" aria-label={quoteattr(machine.name + " state diagram")}>',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker>'
        "</defs>",
    ]
    for e in edges:
        out.append(_edge_svg(e, centre))
    for state, (cx, cy) in centre.items():
        classes = ["state"]
        if state == machine.initial:
            classes.append("initial")
        if state in machine.terminal_states:
            classes.append("terminal")
        if state == current:
            classes.append("current")
        out.append(
            f'<g class="{" ".join(classes)}" data-state={quoteattr(state)}>'
            f'<rect x="{cx - _BOX_W / 2:.1f}" y="{cy - _BOX_H / 2:.1f}" width="{_BOX_W}" '
            f'height="{_BOX_H}" rx="8"/>'
            f'<text x="{cx:.1f}" y="{cy + 5:.1f}" text-anchor="middle">'
            f"{escape(_clip(state))}</text></g>"
        )
    out.append("</svg>")
    return "".join(out)


def _edge_svg(e: _Edge, centre: dict[str, tuple[float, float]]) -> str:
    (x1, y1), (x2, y2) = centre[e.source], centre[e.target]
    label = escape(_clip(e.label))
    if e.source == e.target:  # a loop on the box's right side
        sx, sy = x1 + _BOX_W / 2, y1
        path = f"M{sx:.1f},{sy - 8:.1f} C{sx + 50:.1f},{sy - 40:.1f} {sx + 50:.1f},{sy + 40:.1f} "
        path += f"{sx:.1f},{sy + 8:.1f}"
        lx, ly = sx + 44, sy
    else:
        down = y2 > y1
        sy = y1 + (_BOX_H / 2 if down else -_BOX_H / 2) if y1 != y2 else y1
        ty = y2 - (_BOX_H / 2 if down else -_BOX_H / 2) if y1 != y2 else y2
        if y1 == y2:  # same row: from side to side
            sx = x1 + (_BOX_W / 2 if x2 > x1 else -_BOX_W / 2)
            tx = x2 - (_BOX_W / 2 if x2 > x1 else -_BOX_W / 2)
        else:
            sx, tx = x1, x2
        bend = 0.0 if down else 60.0  # arrows going back up curve aside
        mx, my = (sx + tx) / 2 + bend, (sy + ty) / 2
        path = f"M{sx:.1f},{sy:.1f} Q{mx:.1f},{my:.1f} {tx:.1f},{ty:.1f}"
        lx, ly = (sx + 2 * mx + tx) / 4, (sy + 2 * my + ty) / 4
    return (
        f'<g class="edge"><title>{escape(e.label)}</title>'
        f'<path d="{path}" marker-end="url(#arrow)"/>'
        f'<text x="{lx + 4:.1f}" y="{ly:.1f}">{label}</text></g>'
    )
