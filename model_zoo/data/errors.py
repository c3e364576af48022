"""Errors of the data loaders. Each also subclasses the nearest builtin.

    DatasetError
    ├── DatasetMissingError (FileNotFoundError)  the data is not installed; says how to get it
    └── DatasetFormatError (ValueError)          a data file is there but malformed
"""
from __future__ import annotations

__all__ = ["DatasetError", "DatasetMissingError", "DatasetFormatError"]


class DatasetError(Exception):
    """Base of every error the data loaders raise on purpose."""


class DatasetMissingError(DatasetError, FileNotFoundError):
    pass


class DatasetFormatError(DatasetError, ValueError):
    pass
