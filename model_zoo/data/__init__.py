"""Loaders for the real data sets the project trains on."""

from . import fashion_mnist, partition, shakespeare, tabular

__all__ = ["fashion_mnist", "partition", "shakespeare", "tabular"]
