"""What the catalog and the callers file share: a TOML file of named tables, decoded and
validated with msgspec, whose every error names the file, the table and the field.

limits/catalog.py (`[products.<id>]`) and gateway/callers.py (`[callers.<name>]`) each
subclass ConfigFileError with the word for their tables, and read, decode and convert through
the functions here, so that both say what is wrong the same way.
"""

from __future__ import annotations

import pathlib
import re

import msgspec

# msgspec's "<message> - at `$.field`" and "... - at `key` in `$.table`".
_ERROR_AT = re.compile(r"^(.*) - at `(?:key` in `)?\$\.?(.*)`$")


class ConfigFileError(ValueError):
    """An error in a configuration file: `<path>: <kind> '<name>': field '<field>': ...`."""

    KIND = "table"

    def __init__(self, path: str, name: str | None, field: str | None, message: str):
        where = path
        if name:
            where += f": {self.KIND} {name!r}"
        if field:
            where += f": field {field!r}"
        super().__init__(f"{where}: {message}")
        self.path, self.name, self.field = path, name, field


def read(path: str | pathlib.Path, error: type[ConfigFileError]) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as problem:
        raise error(str(path), None, None, f"cannot read: {problem.strerror}") from None


def decode(data: bytes | str, path: str, error: type[ConfigFileError],
           top_level: frozenset[str]) -> dict:
    """The document, with no top-level key but `top_level`."""
    try:
        document = msgspec.toml.decode(data)
    except msgspec.DecodeError as problem:
        raise error(path, None, None, f"not valid TOML: {problem}") from None
    except UnicodeDecodeError:
        raise error(path, None, None, "not valid TOML: the file is not UTF-8") from None
    unknown = sorted(set(document) - top_level)
    if unknown:
        raise error(path, None, unknown[0], "unknown top-level table or key")
    return document


def convert(table, type_, path: str, name: str | None, error: type[ConfigFileError],
            enum_hint: str = ""):
    """One named table as `type_`, one at a time, so that an error names the table
    (msgspec's error paths do not carry dict keys)."""
    try:
        return msgspec.convert(table, type_)
    except msgspec.ValidationError as problem:
        match = _ERROR_AT.match(str(problem))
        message, field = (match.group(1), match.group(2)) if match else (str(problem), None)
        if not field and ("missing required field" in message or "unknown field" in message):
            field = message.split("`")[1]
        if "Invalid enum value" in message and enum_hint:
            message += f"; {enum_hint}"
        raise error(path, name, field or None, message) from None
