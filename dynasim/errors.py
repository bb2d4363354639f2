"""Errors that dynasim reports to users as one clear line.

Every error caused by bad input names *where* it is: the file, the line (1-based, as an
editor shows it) and the field. The CLI prints ``str(error)`` and exits with status 2;
library callers can catch :class:`InputError` and read the attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class InputError(ValueError):
    """Bad user input: a trace, profile, dataset name or flag value.

    Attributes:
        source: file path or name of the thing that is wrong (``None`` for a flag).
        line: 1-based line number in ``source`` (``None`` when not line-oriented).
        field: the field, key or column at fault (``None`` when the whole item is wrong).
        message: what is wrong, in words.
    """

    def __init__(self, message: str, *, source: str | None = None,
                 line: int | None = None, field: str | None = None) -> None:
        self.source = source
        self.line = line
        self.field = field
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.source is not None:
            where = str(self.source)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        what = f"field '{self.field}': " if self.field else ""
        return f"{where}{what}{self.message}"


def from_validation_error(exc: ValidationError, source: str | None) -> InputError:
    """The :class:`InputError` of a pydantic ``ValidationError``: its first error, with
    the dotted location as ``field`` (used for profiles and sweep configs)."""
    err = exc.errors()[0]
    field = ".".join(str(x) for x in err["loc"]) or None
    return InputError(err["msg"], source=source, field=field)


def decode_utf8(data: bytes, source: str) -> str:
    """``data`` decoded as UTF-8 (every dynasim input file is UTF-8 text).

    Raises:
        InputError: a byte that is not UTF-8 (a binary or compressed file, another
            encoding), naming the 1-based line it is on.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"not UTF-8 text (byte 0x{data[exc.start]:02x}; a binary or "
                         "compressed file, or another encoding?)", source=source,
                         line=line) from None


def read_text(path: str | Path, source: str | None = None) -> str:
    """The UTF-8 text of the file at ``path`` (``source``: the name used in errors,
    default the path).

    Raises:
        InputError: the file cannot be read, or is not UTF-8 (with the line).
    """
    src = str(path) if source is None else source
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror or exc})", source=src) from None
    return decode_utf8(data, src)
