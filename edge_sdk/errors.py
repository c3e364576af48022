"""The SDK's errors. Each also subclasses the nearest builtin, so callers may catch either.

EdgeSdkError
├── BundleError (ValueError)        a bundle or checkpoint that cannot be used
├── StoreError (RuntimeError)       the on-device example store failed or is corrupt
├── SecureAggregationFailed (RuntimeError) a secure round failed or moved on without us
└── TransportError (ConnectionError) the server could not be reached or refused us
"""

from __future__ import annotations


class EdgeSdkError(Exception):
    """Base of every error the SDK raises on purpose."""


class BundleError(EdgeSdkError, ValueError):
    pass


class StoreError(EdgeSdkError, RuntimeError):
    pass


class SecureAggregationFailed(EdgeSdkError, RuntimeError):
    """The secure round failed or moved on before this device's input counted."""


class TransportError(EdgeSdkError, ConnectionError):
    pass
