"""Every dashboard route is in the README's table of pages, and nothing else is listed there."""

from __future__ import annotations

import re
from pathlib import Path

from elevenfactor.server.ui import ROUTES

_PARAM = re.compile(r"{(?!name})\w+}")
README = Path(__file__).resolve().parents[2] / "README.md"


def _table() -> str:
    text = README.read_text()
    start = text.index("## The dashboard (`/ui`)")
    end = text.index("\n## ", start + 10)
    return "\n".join(line for line in text[start:end].splitlines() if line.startswith("| `"))


def test_every_dashboard_route_is_in_the_readme_and_nothing_else() -> None:
    served = {
        f"{method} {_PARAM.sub('{id}', path)}" for path, _, methods in ROUTES for method in methods
    }
    listed = set(re.findall(r"`((?:GET|POST) /ui[^`]*)`", _table()))
    assert served - listed == set(), "served but not in the README's dashboard table"
    assert listed - served == set(), "in the README's dashboard table but not served"
