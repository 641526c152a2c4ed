"""Helpers of the text formats (OFF, point rows): checks, cleaning, NumPy's C parser."""

from __future__ import annotations

import io  # the standard library's (absolute imports)
import re

import numpy as np


def check_text(data: bytes) -> None:
    """Refuse binary or non-UTF-8 bytes in a text format, with a reason a user can act on."""
    if b"\x00" in data:
        raise ValueError("binary data (NUL bytes) in a text format")
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text (bad byte at offset {exc.start})") from None


_COMMENT = re.compile(rb"#[^\n]*")
_BLANK_LINE = re.compile(rb"\n[ \t\f\v]*\n")
_LEADING_BLANK = re.compile(rb"[ \t\f\v]*\n")


def clean_text(data: bytes) -> bytes:
    """Drop ``#`` comments, blank lines and CR, so that one text line is one record."""
    if b"#" in data:
        data = _COMMENT.sub(b"", data)
    if b"\r" in data or _BLANK_LINE.search(data) or _LEADING_BLANK.match(data):
        data = b"\n".join(line for line in data.splitlines() if line.strip())
    return data


def loadtxt(data: bytes, dtype: type, skiprows: int, max_rows: int | None) -> np.ndarray:
    """NumPy's C text parser on an in-memory buffer, always 2-D.

    Callers make sure rows remain after ``skiprows``: NumPy warns on empty input, and silencing
    that with ``warnings.catch_warnings`` is not thread-safe (executors load in threads).
    """
    return np.loadtxt(io.BytesIO(data), dtype=dtype, skiprows=skiprows, max_rows=max_rows, ndmin=2)


__all__ = ["check_text", "clean_text", "loadtxt"]
