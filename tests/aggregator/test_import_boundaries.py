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
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"aggregator pulled in: {out.stdout.strip()}"


# the service's internals: its led tasks and their coordinators
_INTERNALS = {"tasks", "coordinator", "records", "store"}


def _reaches_into_the_service(path) -> list[str]:
    """`service.tasks`, `task.coordinator`, `service.store`... read outside the service:
    attribute reads of the service's internals on any name but `self`."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in _INTERNALS:
            base = node.value
            name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
            if name in ("service", "task") or (isinstance(base, ast.Subscript)):
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
    return found


def test_handlers_and_the_simulator_ask_the_service_instead_of_reaching_in():
    from pathlib import Path

    root = Path(aggregator.__file__).resolve().parents[1]
    askers = (
        sorted(root.glob("aggregator/*_handlers.py"))
        + [
            root / "aggregator" / name
            for name in ("app.py", "app_state.py", "middleware.py", "routes.py")
        ]
        + [root / "fleet" / "simulator.py"]
    )
    assert len(askers) >= 8
    assert [hit for path in askers for hit in _reaches_into_the_service(path)] == []


def test_the_reach_check_sees_an_internal_read(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f(service, request):\n"
        "    v = service.tasks['t'].coordinator.version\n"
        "    return service.current_version('t')\n"
    )
    assert _reaches_into_the_service(sample) == ["sample.py:2 .coordinator", "sample.py:2 .tasks"]
