"""A progress line on stderr while `up`, `apply --wait` and `wait` wait.

On a terminal the line is rewritten in place; in a log or a pipe each new
state is printed once on its own line, so CI logs show what happened without
a flood of repeats.
"""

from __future__ import annotations

from typing import TextIO

from cowpod.cli.safe_text import printable


class Progress:
    def __init__(self, stream: TextIO, *, enabled: bool = True) -> None:
        self._stream = stream
        self._tty = enabled and bool(getattr(stream, "isatty", lambda: False)())
        self._enabled = enabled
        self._last = ""

    def update(self, text: str) -> None:
        if not self._enabled or text == self._last:
            return
        self._last = text
        text = printable(text)  # the status of what we wait for: cluster data
        if self._tty:
            self._stream.write("\r\033[K" + text)
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def done(self) -> None:
        if self._tty and self._last:
            self._stream.write("\r\033[K")
            self._stream.flush()
        self._last = ""
