"""The README is the user's door: short, and its headline figures link to where they are
measured (docs/benchmarks.md, with the command that printed each)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_readme_is_under_10_kb():
    assert len((ROOT / "README.md").read_bytes()) < 10_000


def test_readme_links_to_benchmarks_land_on_a_heading():
    readme = (ROOT / "README.md").read_text()
    headings = {
        _anchor(h)
        for h in re.findall(r"^#+ (.+)$", (ROOT / "docs/benchmarks.md").read_text(), re.M)
    }
    anchors = re.findall(r"\]\(docs/benchmarks\.md#([^)]+)\)", readme)
    assert anchors and set(anchors) <= headings


def test_the_anchor_rule_matches_githubs():
    assert _anchor("Benchmarks (`make bench`, 2 cores)") == "benchmarks-make-bench-2-cores"
