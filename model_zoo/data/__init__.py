"""Loaders for the real data sets the project trains on, one module per data set.

- shakespeare: LEAF Shakespeare, natural users = (play, role), split in time;
- fashion_mnist: Fashion-MNIST from Debian's package (no natural users);
- tabular: scikit-learn's breast cancer and digits (no natural users);
- partition: synthetic client splits for the sets without natural users;
- errors: DatasetError and its subclasses.
"""
from . import errors, fashion_mnist, partition, shakespeare, tabular
from .errors import DatasetError, DatasetFormatError, DatasetMissingError

__all__ = ["errors", "fashion_mnist", "partition", "shakespeare", "tabular",
           "DatasetError", "DatasetFormatError", "DatasetMissingError"]
