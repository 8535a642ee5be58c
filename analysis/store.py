"""Activation store: cached activations keyed by everything that determines them.

An entry is one folder under ``$INTERP_WORKBENCH_HOME/store``:

* ``manifest.json``: the key fields, token ids, prompt texts, per-hook shapes
  and dtypes, library versions, creation time, and each file's byte size and
  xxh3-64 content hash;
* ``<n>.safetensors``: one file (shard) per hook, holding one tensor stacked over
  prompts, so opening an entry reads only the shards that are asked for.

The entry's name is the sha256 of its key: model id, weights fingerprint, the
exact token ids (after BOS and padding are decided), hook names, positions
kept, dtype and ``STORE_FORMAT_VERSION``. Changing any of them gives another
entry, so a stale entry is never returned.

Entries are written to a temporary folder and renamed into place. When two
writers race, the first rename wins and the loser's copy is discarded. On read,
the manifest and file sizes are checked every time, and content hashes once per
process per file (``verify`` always hashes); a damaged entry is reported with
its path, deleted and rebuilt. Tensors are memory-mapped (numpy ``memmap`` in
copy-on-write mode), so reading is lazy and pages stay in the OS cache.

Least-recently-used eviction keeps the store under ``max_bytes``
(``INTERP_WORKBENCH_STORE_MAX_GB``, default 20 GB). Reading an entry marks it used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import xxhash

from analysis.paths import atomic_folder, workbench_home

logger = logging.getLogger(__name__)

STORE_FORMAT_VERSION = 1
DEFAULT_MAX_GB = 20.0
_MANIFEST = "manifest.json"
_LAST_USED = ".last_used"
_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64, "BOOL": np.bool_}
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# Files whose content hash matched in this process: (path, size, mtime_ns).
_verified: set[tuple[str, int, int]] = set()


class StoreError(RuntimeError):
    """The store cannot do what was asked; the message names the value and the fix."""


@dataclass(frozen=True)
class StoreKey:
    """Everything that determines an entry's content."""

    model_id: str
    fingerprint: str
    token_ids: tuple[tuple[int, ...], ...]
    hooks: tuple[str, ...]
    positions: str  # "all", "last" or a comma-separated list of indices
    dtype: str = "float32"

    def digest(self) -> str:
        fields = {
            "format_version": STORE_FORMAT_VERSION,
            "model_id": self.model_id,
            "fingerprint": self.fingerprint,
            "token_ids": [list(ids) for ids in self.token_ids],
            "hooks": list(self.hooks),
            "positions": self.positions,
            "dtype": self.dtype,
        }
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


@dataclass
class StoreEntry:
    """An entry on disk; tensors are opened lazily and memory-mapped."""

    path: Path
    manifest: dict[str, Any]

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def hooks(self) -> list[str]:
        return list(self.manifest["tensors"])

    @property
    def token_ids(self) -> list[list[int]]:
        return self.manifest["token_ids"]

    @property
    def prompts(self) -> list[str] | None:
        return self.manifest.get("prompts")

    def tensor(self, hook: str) -> torch.Tensor:
        """Return the stacked tensor of ``hook``: [prompt, pos, ...] (pos = padded length for "all")."""
        if hook not in self.manifest["tensors"]:
            raise StoreError(f"Entry {self.path} has no hook {hook!r}; it has {', '.join(self.hooks)}.")
        info = self.manifest["tensors"][hook]
        return _mmap_tensor(self.path / info["file"])

    def mask(self) -> torch.Tensor:
        """Attention mask of the stored positions: [prompt, pos], 1 on real tokens."""
        return _mmap_tensor(self.path / "mask.safetensors")

    def key(self) -> StoreKey:
        """Rebuild the key this entry was stored under."""
        fields = self.manifest["key"]
        return StoreKey(fields["model_id"], fields["fingerprint"], tuple(tuple(ids) for ids in self.token_ids),
                        tuple(fields["hooks"]), fields["positions"], fields["dtype"])

    @property
    def nbytes(self) -> int:
        return sum(self.manifest["files"].values())


# -- safetensors files, written and read by hand for memory mapping -----------


def _save_tensor(path: Path, tensor: torch.Tensor) -> None:
    from safetensors.torch import save_file

    save_file({"tensor": tensor.contiguous()}, str(path))


def _mmap_tensor(path: Path) -> torch.Tensor:
    """Memory-map the single tensor of a safetensors file written by ``_save_tensor``."""
    with path.open("rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_size))
    info = header["tensor"]
    start, stop = info["data_offsets"]
    shape = tuple(info["shape"])
    if info["dtype"] not in _NUMPY_DTYPES:
        raise StoreError(f"{path} contains dtype {info['dtype']}, which the store cannot read; rebuild the entry.")
    if stop == start:
        return torch.empty(shape, dtype=_dtype_from_tag(info["dtype"]))
    array = np.memmap(path, dtype=_NUMPY_DTYPES[info["dtype"]], mode="c",
                      offset=8 + header_size + start, shape=shape)
    tensor = torch.from_numpy(array)
    return tensor.view(torch.bfloat16) if info["dtype"] == "BF16" else tensor


def _dtype_from_tag(tag: str) -> torch.dtype:
    return {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
            "I64": torch.int64, "BOOL": torch.bool}[tag]


def _hash_file(path: Path) -> str:
    digest = xxhash.xxh3_64()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


# -- the store ----------------------------------------------------------------


class ActivationStore:
    """A folder of entries with LRU eviction under a byte cap."""

    def __init__(self, root: Path | None = None, max_bytes: int | None = None):
        if root is None:
            try:
                root = workbench_home() / "store"
            except OSError as error:
                raise StoreError(
                    f"The workbench cache folder cannot be created ({error}). "
                    "Set INTERP_WORKBENCH_HOME to a writable folder."
                ) from error
        self.root = Path(root)
        if max_bytes is None:
            max_gb = float(os.environ.get("INTERP_WORKBENCH_STORE_MAX_GB", DEFAULT_MAX_GB))
            max_bytes = int(max_gb * 1e9)
        self.max_bytes = max_bytes

    def _check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise StoreError(
                f"The activation store folder {self.root} is not writable ({error.strerror}). "
                "Set INTERP_WORKBENCH_HOME to a writable folder."
            ) from error

    def entry_path(self, key: StoreKey) -> Path:
        return self.root / key.digest()

    def get(self, key: StoreKey) -> StoreEntry | None:
        """Return the verified entry for ``key``, or None (a damaged entry is deleted)."""
        path = self.entry_path(key)
        if not path.exists():
            return None
        problems = self._check(path, full_hash=False)
        if problems:
            logger.warning("activation store entry %s is damaged (%s); rebuilding it", path, "; ".join(problems))
            shutil.rmtree(path, ignore_errors=True)
            return None
        self._touch(path)
        return StoreEntry(path, json.loads((path / _MANIFEST).read_text()))

    def put(
        self,
        key: StoreKey,
        tensors: dict[str, torch.Tensor],
        mask: torch.Tensor,
        prompts: list[str] | None = None,
    ) -> StoreEntry:
        """Write an entry atomically and return it; an entry written meanwhile by another process wins."""
        self._check_writable()
        target = self.entry_path(key)
        with atomic_folder(target) as tmp:
            shapes = {}
            for index, (hook, tensor) in enumerate(tensors.items()):
                file_name = f"{index:04d}.safetensors"
                _save_tensor(tmp / file_name, tensor)
                shapes[hook] = {"file": file_name, "shape": list(tensor.shape), "dtype": str(tensor.dtype)}
            _save_tensor(tmp / "mask.safetensors", mask.to(torch.int64))
            files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
            manifest = {
                "format_version": STORE_FORMAT_VERSION,
                "key": {"model_id": key.model_id, "fingerprint": key.fingerprint, "hooks": list(key.hooks),
                        "positions": key.positions, "dtype": key.dtype},
                "token_ids": [list(ids) for ids in key.token_ids],
                "prompts": prompts,
                "tensors": shapes,
                "files": files,
                "hashes": {name: _hash_file(tmp / name) for name in files},
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "versions": _library_versions(),
            }
            (tmp / _MANIFEST).write_text(json.dumps(manifest))
        self._touch(target)
        self.gc()
        entry = self.get(key)
        if entry is None:
            raise StoreError(f"Entry {target} vanished right after it was written; is the store cap "
                             f"({self.max_bytes / 1e9:.2f} GB) smaller than one entry?")
        return entry

    # -- housekeeping ----------------------------------------------------------

    def entries(self) -> list[StoreEntry]:
        """Return every entry, most recently used first (damaged ones with an empty manifest)."""
        if not self.root.exists():
            return []
        found = []
        for path in self.root.iterdir():
            if path.name.startswith(".") or not path.is_dir():
                continue
            try:
                found.append(StoreEntry(path, json.loads((path / _MANIFEST).read_text())))
            except (OSError, json.JSONDecodeError):
                found.append(StoreEntry(path, {"tensors": {}, "files": {}, "token_ids": [], "key": {}}))
        return sorted(found, key=lambda entry: self._last_used(entry.path), reverse=True)

    def find(self, prefix: str) -> StoreEntry:
        matches = [entry for entry in self.entries() if entry.id.startswith(prefix)]
        if len(matches) != 1:
            raise StoreError(f"Entry id {prefix!r} matches {len(matches)} entries; give a longer prefix "
                             "(see `workbench cache ls`).")
        return matches[0]

    def verify(self, entry: StoreEntry) -> list[str]:
        return self._check(entry.path, full_hash=True)

    def remove(self, entry: StoreEntry) -> None:
        shutil.rmtree(entry.path, ignore_errors=True)

    def gc(self, max_bytes: int | None = None) -> list[StoreEntry]:
        """Delete damaged entries, then least-recently-used ones until the store fits ``max_bytes``."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        removed = []
        entries = self.entries()
        for entry in entries:
            if not entry.manifest.get("files"):
                self.remove(entry)
                removed.append(entry)
        kept = [entry for entry in entries if entry not in removed]
        total = sum(entry.nbytes for entry in kept)
        for entry in reversed(kept):  # oldest first
            if total <= limit:
                break
            logger.info("evicting activation store entry %s (%.1f MB)", entry.id[:12], entry.nbytes / 1e6)
            self.remove(entry)
            removed.append(entry)
            total -= entry.nbytes
        for leftover in self.root.glob(".*.tmp") if self.root.exists() else []:
            # Temporary folders older than an hour belong to writers that died.
            if time.time() - leftover.stat().st_mtime > 3600:
                shutil.rmtree(leftover, ignore_errors=True)
        return removed

    def _check(self, path: Path, full_hash: bool) -> list[str]:
        try:
            manifest = json.loads((path / _MANIFEST).read_text())
        except FileNotFoundError:
            return ["manifest.json is missing"]
        except (OSError, json.JSONDecodeError) as error:
            return [f"manifest.json is unreadable: {error}"]
        if manifest.get("format_version") != STORE_FORMAT_VERSION:
            return [f"format version {manifest.get('format_version')} is not {STORE_FORMAT_VERSION}"]

        problems = []
        for name, size in manifest["files"].items():
            file_path = path / name
            if not file_path.is_file():
                problems.append(f"{name} is missing")
                continue
            stat = file_path.stat()
            if stat.st_size != size:
                problems.append(f"{name} has {stat.st_size} bytes, expected {size}")
                continue
            memo = (str(file_path), stat.st_size, stat.st_mtime_ns)
            if full_hash or memo not in _verified:
                if _hash_file(file_path) != manifest["hashes"][name]:
                    problems.append(f"{name} content hash does not match")
                    continue
                _verified.add(memo)
        return problems

    def _touch(self, path: Path) -> None:
        try:
            (path / _LAST_USED).write_text(str(time.time()))
        except OSError:
            pass  # a read-only store still serves reads; LRU order just stays stale

    def _last_used(self, path: Path) -> float:
        try:
            return float((path / _LAST_USED).read_text())
        except (OSError, ValueError):
            return 0.0


def _library_versions() -> dict[str, str]:
    import transformer_lens
    import transformers

    from analysis import __version__

    return {"interp_workbench": __version__, "torch": torch.__version__,
            "transformer_lens": getattr(transformer_lens, "__version__", "unknown"),
            "transformers": transformers.__version__}


def entries_size(entries: Iterable[StoreEntry]) -> int:
    return sum(entry.nbytes for entry in entries)
