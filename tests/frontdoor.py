"""Helpers for the front-door tests (tests/*/test_*_front_door.py): what a bad input must end
in (one line naming the problem, an exit code, no traceback), and files that are not configs."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path


def one_line_error(r: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    """The run failed with `code`, said so on exactly one stderr line containing every needle."""
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr[-2000:]
    assert len(lines[0]) < 400, lines[0][:400]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def unreadable_file(tmp_path: Path, text: str) -> tuple[Path, list[str]]:
    """A file its reader may not read, and the argv prefix that runs a command as that reader:
    root reads everything, so as root the command runs without the capabilities that let it."""
    p = tmp_path / "unreadable.toml"
    p.write_text(text)
    p.chmod(0)
    return p, ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


def bad_files(tmp_path: Path, good: str) -> list[tuple[str, Path, list[str], str]]:
    """(id, path, argv prefix, what the line says) of files no config loader may choke on;
    `good` is a valid config (the unreadable file holds it)."""
    nonutf8 = tmp_path / "latin1.toml"
    nonutf8.write_bytes(b"# caf\xe9 config\n" + good.encode())
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * (9 << 20) + b"\n")
    unreadable, without_dac = unreadable_file(tmp_path, good)
    return [
        ("not UTF-8", nonutf8, [], "not UTF-8 text (byte 0xe9 on line 1)"),
        ("a directory", folder, [], "is a directory"),
        ("unreadable", unreadable, without_dac, "Permission denied"),
        ("/dev/zero", Path("/dev/zero"), [], "not a regular file (a character device)"),
        ("too large", big, [], "larger than 8 MiB"),
        ("nested 5000 deep", deep, [], "nested too deeply"),
        ("a FIFO", fifo, [], "not a regular file (a FIFO)"),
    ]
