"""Import rules checked in a fresh interpreter: which modules importing some modules loads,
so a test can assert that a package never pulls in torch (or the server)."""

from __future__ import annotations

import json
import subprocess
import sys


def loaded_after_importing(modules: list[str], packages: tuple[str, ...]) -> list[str]:
    """Import `modules` in a new Python process: the modules then loaded whose top-level
    package is one of `packages`, sorted."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {packages!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)
