"""The server-side state-machine diagram: every state and transition drawn, the current
state marked, labels escaped."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from contexten import StateMachine, Transition
from contexten.dashboard.diagram import state_machine_svg

SVG = "{http://www.w3.org/2000/svg}"


def machine() -> StateMachine:
    return StateMachine(
        "pr",
        initial="open",
        key=lambda e: e.subject,
        transitions=[
            Transition("open", on="github.pull_request.review_requested", to="in_review"),
            Transition("in_review", on="github.pull_request.synchronize", to="in_review"),
            Transition("in_review", on="github.pull_request.converted_to_draft", to="open"),
            Transition(["open", "in_review"], on="github.pull_request.closed", to="merged",
                       when=lambda e: True),
            Transition("*", on="test.pr.closed", to="<script>closed"),
        ],
    )  # fmt: skip


def test_every_state_and_edge_is_drawn_and_the_current_one_marked() -> None:
    svg = state_machine_svg(machine(), "in_review")
    root = ET.fromstring(svg)  # well-formed XML
    states = {
        g.get("data-state"): g.get("class") for g in root.iter(f"{SVG}g") if g.get("data-state")
    }
    assert set(states) == {"open", "in_review", "merged", "<script>closed"}
    assert states["in_review"] == "state current"
    assert "initial" in (states["open"] or "")
    assert "terminal" in (states["merged"] or "")
    edges = [g for g in root.iter(f"{SVG}g") if g.get("class") == "edge"]
    titles = [g.findtext(f"{SVG}title") for g in edges]  # the full label, as a tooltip
    assert titles.count("github.pull_request.closed [guarded]") == 2
    assert "github.pull_request.synchronize" in titles  # the self-loop
    # one edge per (source, target); the wildcard leaves each non-terminal state
    assert titles.count("test.pr.closed") == 2
    assert len(edges) == 7


def test_labels_are_escaped() -> None:
    svg = state_machine_svg(machine())
    assert "<script>" not in svg
    assert "&lt;script&gt;closed" in svg
    assert not re.search(r"class=\"state current\"", svg)
