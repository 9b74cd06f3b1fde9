"""Text from the cluster, made safe for a terminal before the CLI prints it.

Event and status messages, reasons, names and labels are written by agents,
pods (a container's termination message) and users, so they can carry
terminal escape sequences: `ESC ] 0 ; title BEL` renames the window, `ESC [ 2 J`
clears the screen, others move the cursor to overwrite earlier lines or, in
some terminals, write files or answer back into the input. Bidirectional
overrides (U+202E…) reorder what is displayed. The CLI's stdout is a
`PrintableWriter` and its error lines go through `printable()`: control
characters other than newline and tab, and the bidi controls, become visible
escapes (`\\x1b`, `\\u202e`). Logs and exec
output (`write_bytes`) stay raw, as with kubectl: they are the container's
own bytes and a user asks for them.
"""

from __future__ import annotations

import io
import re
from typing import TextIO

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: str) -> str:
    """`text` with terminal control characters (not newline, tab) shown as escapes."""
    return _UNSAFE.sub(_escape, text)


class PrintableWriter(io.TextIOBase):
    """stdout for the CLI's commands: every write goes through `printable()`, so no
    command can forget it. `inner` is the real stream, for logs and exec bytes."""

    def __init__(self, inner: TextIO) -> None:
        super().__init__()
        self.inner = inner

    def write(self, s: str) -> int:
        self.inner.write(printable(s))
        return len(s)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()


def raw_stream(stream: TextIO) -> TextIO:
    """The stream under a `PrintableWriter` (or `stream` itself)."""
    return stream.inner if isinstance(stream, PrintableWriter) else stream
