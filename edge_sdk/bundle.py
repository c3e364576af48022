"""A training bundle on the device: its manifest, validated, and its initial parameters.

The format is documented in docs/bundle-format.md; this module reads it with numpy and
json only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BundleError

SUPPORTED_FORMAT = 1
_REQUIRED = (
    "format_version",
    "model_id",
    "model_name",
    "task",
    "parameters",
    "inputs",
    "targets",
    "optimizer",
    "graphs",
    "ignore_index",
    "num_classes",
)


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle. `manifest` is the raw document; the fields are its validated core."""

    path: Path
    manifest: dict
    model_id: str
    model_name: str
    task: str
    parameter_specs: tuple[ParameterSpec, ...]
    input_names: tuple[str, ...]
    target_name: str
    ignore_index: int
    num_classes: int
    # the parameters that are buffers (BatchNorm running statistics): state the train
    # step updates but the optimizer does not train; listed in parameter_specs too
    buffer_names: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        path = Path(path)
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except FileNotFoundError:
            raise BundleError(f"{path} is not a bundle: manifest.json is missing") from None
        except json.JSONDecodeError as e:
            raise BundleError(f"{path}/manifest.json is not valid JSON: {e}") from None
        missing = [k for k in _REQUIRED if k not in manifest]
        if missing:
            raise BundleError(f"{path}/manifest.json lacks {', '.join(missing)}")
        if manifest["format_version"] != SUPPORTED_FORMAT:
            raise BundleError(
                f"bundle format {manifest['format_version']} is not supported "
                f"(this SDK reads format {SUPPORTED_FORMAT}); rebuild the bundle"
            )
        for graph in manifest["graphs"].values():
            if not (path / graph).is_file():
                raise BundleError(f"bundle {path} lacks its graph {graph}")
        specs = tuple(
            ParameterSpec(p["name"], tuple(p["shape"]), p.get("dtype", "float32"))
            for p in manifest["parameters"]
        )
        (target,) = manifest["targets"]
        return cls(
            path,
            manifest,
            manifest["model_id"],
            manifest["model_name"],
            manifest["task"],
            specs,
            tuple(manifest["inputs"]),
            target,
            int(manifest["ignore_index"]),
            int(manifest["num_classes"]),
            _buffer_names(path, manifest, specs),
        )

    def graph_path(self, kind: str) -> Path:
        return self.path / self.manifest["graphs"][kind]

    @property
    def is_language_model(self) -> bool:
        return self.task in ("next_word", "next_char")

    @property
    def optimizer_state_specs(self) -> list[dict]:
        return list(self.manifest["optimizer"]["state"])

    @property
    def uses_seed(self) -> bool:
        return bool(self.manifest.get("uses_seed"))

    def initial_parameters(self) -> dict[str, np.ndarray]:
        """The bundle's parameters as float32 arrays, checked against the manifest."""
        try:
            with np.load(
                self.path / self.manifest.get("parameters_file", "parameters.npz"),
                allow_pickle=False,
            ) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as e:
            raise BundleError(f"cannot read the parameters of {self.path}: {e}") from None
        check_parameters(self.parameter_specs, arrays)
        return arrays

    def vocabulary_path(self) -> Path | None:
        name = self.manifest.get("vocabulary")
        return self.path / name if name else None


def _buffer_names(path: Path, manifest: dict, specs: tuple[ParameterSpec, ...]) -> tuple[str, ...]:
    buffers = manifest.get("buffers") or []
    names = (
        [b.get("name") if isinstance(b, dict) else None for b in buffers]
        if isinstance(buffers, list)
        else [None]
    )
    unknown = sorted(str(n) for n in set(names) - {s.name for s in specs})
    if unknown:
        raise BundleError(
            f"{path}/manifest.json lists buffers {unknown} that are not among "
            "its parameters (every buffer is also a parameter)"
        )
    return tuple(names)


def check_parameters(specs: tuple[ParameterSpec, ...], arrays: dict[str, np.ndarray]) -> None:
    """Raise BundleError unless `arrays` holds exactly the specs' names, shapes and dtypes."""
    names = [s.name for s in specs]
    if set(arrays) != set(names):
        raise BundleError(
            f"parameters differ from the manifest: missing "
            f"{sorted(set(names) - set(arrays))}, unexpected "
            f"{sorted(set(arrays) - set(names))}"
        )
    for s in specs:
        a = arrays[s.name]
        if tuple(a.shape) != s.shape or a.dtype != np.dtype(s.dtype):
            raise BundleError(
                f"parameter {s.name} is {a.dtype}{list(a.shape)}, the manifest "
                f"says {s.dtype}{list(s.shape)}"
            )
