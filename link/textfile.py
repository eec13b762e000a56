"""Reading an operator's small text files (configs, inventories) so that no bad file ends in a
traceback or a hang: the agent's and the hub's configuration and the device inventory all come
through here.

Only regular files are read (a FIFO would block the reader forever, `/dev/zero` never ends),
at most `limit` bytes, as UTF-8; TOML and JSON nested too deeply for the parser's recursion
are refused by name. Every problem is one `TextFileError` naming the file.
"""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# A config or inventory of a whole city's gateway fits in well under this; anything larger is
# not a config file.
DEFAULT_LIMIT = 8 << 20


class TextFileError(ValueError):
    """A file that cannot be used as a text file; the message names it and says why."""


def read_text(path: str | Path, what: str = "file", limit: int = DEFAULT_LIMIT) -> str:
    """The file's text. `what` names the file's role in messages ("config file", ...)."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TextFileError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise TextFileError(f"{path}: is a directory, not a {what}") from None
    except OSError as exc:
        raise TextFileError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise TextFileError(f"{path}: is a directory, not a {what}")
        if not stat.S_ISREG(mode):
            raise TextFileError(f"{path}: not a regular file (a {_kind(mode)}); the {what} must be a plain file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise TextFileError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise TextFileError(f"{path}: larger than {limit >> 20} MiB; not a {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TextFileError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})") from None


def read_toml(path: str | Path, what: str = "config file", limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    """The parsed TOML document of a file read by `read_text`."""
    text = read_text(path, what, limit)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TextFileError(f"{path}: cannot parse as TOML: {exc}") from None
    except RecursionError:
        raise TextFileError(f"{path}: cannot parse as TOML: arrays or tables nested too deeply") from None


def read_json(path: str | Path, what: str = "file", limit: int = DEFAULT_LIMIT) -> Any:
    """The parsed JSON document of a file read by `read_text`."""
    text = read_text(path, what, limit)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TextFileError(f"{path}: cannot parse as JSON: {exc}") from None
    except RecursionError:
        raise TextFileError(f"{path}: cannot parse as JSON: arrays or objects nested too deeply") from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"
