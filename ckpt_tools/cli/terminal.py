"""Everything the CLI prints goes through a filter that shows control characters instead of sending them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from ckpt_tools.messages import escape_controls


def escape(text: str) -> str:
    """Control characters but newline and tab as `\\xNN`/`\\uNNNN`; undecodable bytes (surrogate escapes) as
    `\\udcNN`."""
    return escape_controls(text, keep_line_breaks=True)


class TerminalSafe:
    """A text stream that escapes what it is given; everything else is the wrapped stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(escape(text))
        return len(text)

    def raw(self) -> TextIO:
        """The wrapped stream, for the CLI's own terminal controls (ls' progress line)."""
        return self._stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def safe_output() -> Iterator[None]:
    """stdout and stderr filtered for the duration of one command."""
    saved = sys.stdout, sys.stderr
    sys.stdout = TerminalSafe(saved[0])
    sys.stderr = TerminalSafe(saved[1])
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def raw_stderr() -> TextIO:
    """stderr without the filter (the CLI's own `\\r` and ANSI erase codes)."""
    stream: Any = sys.stderr
    return stream.raw() if isinstance(stream, TerminalSafe) else stream
