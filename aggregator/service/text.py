"""Free text the service stores or sends (failure reasons, errors): made safe first."""

from __future__ import annotations


def printable(text: str, limit: int = 500) -> str:
    """Free text made safe to store and to send as JSON: no lone surrogates, bounded."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 3] + "..."
