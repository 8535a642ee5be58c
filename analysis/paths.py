"""Cache folder and safe, atomic file writes.

Every file the workbench writes goes to a temporary name in the same folder and
is renamed into place, so a reader never sees a partly written file: after a
crash there is either the old complete file or the new complete one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

HOME_ENV = "INTERP_WORKBENCH_HOME"


def workbench_home() -> Path:
    """Return the cache folder (``$INTERP_WORKBENCH_HOME`` or ``~/.cache/interp-workbench``)."""
    home = Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "interp-workbench")
    home.mkdir(parents=True, exist_ok=True)
    return home


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """Turn a user-given name (a model id such as ``org/model``) into one path component."""
    cleaned = _UNSAFE.sub("_", name).strip("._")
    if not cleaned:
        raise ValueError(f"Name {name!r} has no usable characters; use letters, digits, '.', '_' or '-'.")
    return cleaned[:120]


def child_path(folder: Path, name: str) -> Path:
    """Return ``folder/name`` and raise if ``name`` would escape ``folder``."""
    folder = folder.resolve()
    target = (folder / name).resolve()
    if target != folder and folder not in target.parents:
        raise ValueError(f"Output name {name!r} escapes the output folder {folder}; pass a plain file name.")
    return target


def give_usual_mode(path: Path | str, folder: bool = False) -> None:
    """Give a file or folder made by ``tempfile`` (owner-only) the mode the umask gives new files,
    so that results shared with other users stay readable."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if folder else 0o666) & ~umask)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        give_usual_mode(tmp)  # mkstemp creates files readable by the owner only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success rename it to ``target``.

    If ``target`` appeared meanwhile (another process won the race), the new copy
    is discarded and the existing one is kept.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        give_usual_mode(tmp, folder=True)
        yield tmp
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
