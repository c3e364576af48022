"""Readers by name, and a dataset from its description in a config:

    {"kind": "csv", "path": "visits.csv", "options": {"user": "patient", "label": "outcome"}}

`kind` is a built-in reader (READERS) or "package.module:Class" for one's own (any class
following fleet.datasets.base.FederatedDataset; `path`, when given, is its first
argument). Unknown keys and options are refused with the nearest valid name.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
from pathlib import Path

from .base import DatasetError, FederatedDataset

READERS = {
    "jsonl": "fleet.datasets.text:JsonlText",
    "text_dir": "fleet.datasets.text:DirectoryText",
    "csv": "fleet.datasets.tabular:TabularDataset",
    "parquet": "fleet.datasets.tabular:TabularDataset",
    "npz": "fleet.datasets.arrays:NpzDataset",
    "shakespeare": "fleet.datasets.builtin:Shakespeare",
    "fashion_mnist": "fleet.datasets.builtin:FashionMnist",
    "breast_cancer": "fleet.datasets.builtin:BreastCancer",
    "digits": "fleet.datasets.builtin:Digits",
}
NEEDS_PATH = ("jsonl", "text_dir", "csv", "parquet", "npz")
SPEC_KEYS = ("kind", "path", "options")
SUFFIXES = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet", ".npz": "npz"}


def nearest(name: str, valid) -> str:
    """' (did you mean X?)' for the closest valid name, or ''."""
    near = difflib.get_close_matches(str(name), list(valid), 1, cutoff=0.5)
    return f" (did you mean {near[0]!r}?)" if near else ""


def refuse_unknown(doc: dict, valid, where: str) -> None:
    """A ValueError naming the first key of `doc` not in `valid`, and the nearest one."""
    for key in doc:
        if key not in valid:
            raise DatasetError(
                f"{where}: unknown key {key!r}{nearest(key, valid)}; valid: "
                f"{', '.join(sorted(valid))}"
            )


def check_spec(spec: dict, where: str = "data") -> dict:
    """The description, checked without reading any data: known keys and kind, a path
    where the reader needs one, options a dict of the reader's parameters."""
    if not isinstance(spec, dict):
        raise DatasetError(
            f'{where} must be an object like {{"kind": "csv", "path": '
            f'"FILE", "options": {{}}}}, got {spec!r}'
        )
    refuse_unknown(spec, SPEC_KEYS, where)
    kind = spec.get("kind")
    if not isinstance(kind, str):
        raise DatasetError(
            f"{where}.kind is missing: one of {', '.join(READERS)} or 'package.module:Class'"
        )
    if kind not in READERS and ":" not in kind:
        raise DatasetError(
            f"{where}.kind {kind!r} is not a reader{nearest(kind, READERS)}; "
            f"known: {', '.join(READERS)}, or 'package.module:Class'"
        )
    if kind in NEEDS_PATH and not spec.get("path"):
        raise DatasetError(f"{where}: the {kind} reader needs a path")
    options = spec.get("options", {})
    if not isinstance(options, dict):
        raise DatasetError(f"{where}.options must be an object")
    if kind in READERS:
        valid = accepted_options(_import(READERS[kind], where))
        if valid is not None:
            refuse_unknown(options, valid, f"{where}.options")
    return spec


def load_dataset(
    spec: dict, *, seed: int = 0, vocabulary_size: int | None = None, where: str = "data"
) -> FederatedDataset:
    """Build the dataset a config describes. `seed` and `vocabulary_size` fill the
    reader's options of those names when the description leaves them out."""
    check_spec(spec, where)
    kind, options = spec["kind"], dict(spec.get("options", {}))
    cls = _import(READERS.get(kind, kind), where)
    valid = accepted_options(cls)
    defaults = {"seed": seed, "vocabulary_size": vocabulary_size}
    if valid is not None:
        refuse_unknown(options, valid, f"{where}.options")
        options |= {
            name: value
            for name, value in defaults.items()
            if value is not None and name in valid and name not in options
        }
    if kind == "parquet" and not str(spec["path"]).endswith(".parquet"):
        raise DatasetError(f"{where}: a parquet file's name ends in .parquet")
    args = [str(spec["path"])] if spec.get("path") else []
    try:
        dataset = cls(*args, **options)
    except TypeError as e:  # a researcher's class with other parameters
        raise DatasetError(f"{where}: {cls.__name__}({', '.join(options)}) failed: {e}") from None
    for attr in ("task", "users", "examples"):
        if not callable(getattr(dataset, attr, None)):
            raise DatasetError(
                f"{where}: {kind} has no {attr}() method; a dataset has "
                "name, task(), users() and examples(user, split)"
            )
    if not hasattr(dataset, "name"):
        dataset.name = cls.__name__
    return dataset


def spec_from_argument(text: str) -> dict:
    """A command line's --data: a JSON description, a built-in name, 'module:Class', a
    file whose suffix names its reader (.jsonl, .csv, .parquet, .npz), or a directory of
    text files (one per user)."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"--data is not valid JSON: {e.msg}") from None
    if text in READERS and text not in NEEDS_PATH:
        return {"kind": text}
    path = Path(text)
    if path.is_dir():
        return {"kind": "text_dir", "path": text}
    if path.suffix in SUFFIXES:
        return {"kind": SUFFIXES[path.suffix], "path": text}
    if ":" in text and not path.exists():
        return {"kind": text}
    raise DatasetError(
        f"--data {text!r}: not a built-in ({', '.join(k for k in READERS if k not in NEEDS_PATH)}), "
        f"not a directory, and not a file ending in {', '.join(SUFFIXES)}"
    )


def accepted_options(cls) -> set[str] | None:
    """Keyword parameters of cls and the classes it passes **options on to; None when
    any takes arbitrary keywords it does not pass to a base class."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters
        names |= {
            n
            for n, p in params.items()
            if n != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            # the built-ins' data arguments come from the file, not from options
            builtin = cls.__module__.startswith("fleet.datasets.")
            return names - {"path", "name", "messages", "x", "y", "users"} if builtin else names
    return None


def _import(target: str, where: str):
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise DatasetError(f"{where}: cannot import {module_name!r} ({e})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise DatasetError(
            f"{where}: {module_name} has no {attr!r}{nearest(attr, dir(module))}"
        ) from None
