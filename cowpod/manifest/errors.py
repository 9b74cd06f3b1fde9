"""Errors that point at the exact spot of a bad manifest.

A `FieldError` is raised deep inside decoding with a field path; the loader
adds the file name and the document number, so the user reads one line:
`hello.yaml: document 2: spec.containers[0].imagee: unknown field`.
"""

from __future__ import annotations


class FieldError(ValueError):
    """A bad value at `path` (e.g. `spec.containers[0].image`), with a reason."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


class ManifestError(ValueError):
    """A bad manifest: which file, which document (1-based), which field, why."""

    def __init__(self, source: str, document: int | None, path: str, reason: str) -> None:
        self.source = source
        self.document = document
        self.path = path
        self.reason = reason
        parts = [source] if source else []
        if document is not None:
            parts.append(f"document {document}")
        if path:
            parts.append(path)
        parts.append(reason)
        super().__init__(": ".join(parts))
