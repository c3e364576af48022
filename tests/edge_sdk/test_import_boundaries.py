"""edge_sdk runs on devices: importing any of its modules must not load torch, model_zoo
or the aggregator. Each module is imported in a fresh interpreter."""

from __future__ import annotations

import pkgutil

import edge_sdk

from ..fresh_imports import loaded_after_importing

FORBIDDEN = ("torch", "model_zoo", "aggregator")


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(edge_sdk.__path__, "edge_sdk."))


def test_every_edge_sdk_module_imports_without_torch_model_zoo_or_aggregator():
    modules = _modules()
    assert "edge_sdk.trainer" in modules and "edge_sdk.runtime" in modules
    bad = loaded_after_importing(modules, FORBIDDEN)
    assert bad == [], f"edge_sdk pulled in: {','.join(bad)}"


def test_only_the_runtime_module_imports_onnxruntime():
    import pathlib

    root = pathlib.Path(edge_sdk.__file__).parent
    importers = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if "import onnxruntime" in p.read_text()
    )
    assert importers == ["runtime.py"]
