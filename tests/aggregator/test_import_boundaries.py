"""The server never loads torch or onnxruntime, and takes from edge_sdk only its protocol."""
from __future__ import annotations

import pkgutil
import subprocess
import sys

import aggregator


def test_aggregator_modules_load_neither_torch_nor_onnxruntime_nor_sdk_internals():
    modules = sorted(m.name for m in pkgutil.walk_packages(aggregator.__path__, "aggregator."))
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxruntime', "
        "'model_zoo', 'fleet') or (m.startswith('edge_sdk.') and not m.startswith('edge_sdk.protocol')"
        " and m not in ('edge_sdk.errors',)))\n"
        "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"aggregator pulled in: {out.stdout.strip()}"
