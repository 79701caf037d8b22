"""Atomic writes: a reader sees the old artifact or the new one, never half of one."""

from __future__ import annotations

import json
import os
import re
import shutil
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from compress.core.errors import UserError
from compress.core.progress import console


def remove_stale_temporaries(run_dir: Path) -> None:
    """Tidy what a killed run left half-written: temp files and folders it had not renamed yet go (nothing reads
    them, and the stage that wrote them runs again); a '<name>.old' folder whose '<name>' is missing was the whole
    previous version, caught between replace_dir's two renames, and is put back."""
    stale = [p for p in Path(run_dir).rglob("*")
             if re.search(r"^\..+\.tmp\d+$|\.tmp$|\.tmp\.npy$", p.name) or (p.is_dir() and p.name.endswith(".old"))]
    for path in sorted(stale, key=lambda p: len(p.parts), reverse=True):
        original = path.with_name(path.name.removesuffix(".old"))
        if path.name.endswith(".old") and not original.exists():
            os.replace(path, original)
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextmanager
def run_folder_lock(folder: Path, wait: str | None = None) -> Iterator[None]:
    """An exclusive lock on `folder`/.lock. One `compress run` per run folder at a time: a second would take the
    first one's temporaries for a killed run's and delete them. With `wait` None a held lock is refused (one line);
    with a message, that message is printed once and the lock waited for (compress search's workers take their turns
    this way). The lock is the operating system's, so a killed process never leaves it held; the file is opened for
    appending, so taking the lock never changes a file another process holds."""
    try:
        import fcntl  # POSIX only
    except ImportError:  # Windows has no flock; one run (or worker) per folder at a time is then up to the user
        yield
        return
    with open(folder / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if wait is None:
                raise UserError("another compress run is using this run folder", str(folder),
                                "wait for it to finish, or give this run another name or output_dir") from None
            console.print(wait)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: object) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move a finished folder `tmp` to `dest`, replacing what was there."""
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def save_pretrained_atomic(model, tokenizer, dest: Path) -> None:
    """save_pretrained (config.json + model.safetensors) and the tokenizer, into `dest` atomically."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    replace_dir(tmp, dest)


def folder_size_mb(path: Path, pattern: str = "*.safetensors") -> float:
    return sum(f.stat().st_size for f in Path(path).glob(pattern)) / 1e6


def compressed_size_mb(path: Path, pattern: str = "*.safetensors", chunk_mb: int = 4) -> float:
    """Size of the weight files after zlib (level 1, in independent 4 MB chunks, compressed on all cores):
    what zeroed weights save on disk or over the wire, where the dense file size does not move."""
    workers = os.cpu_count() or 1
    total = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:  # zlib releases the GIL
        for file in sorted(Path(path).glob(pattern)):
            with file.open("rb") as f:
                while blocks := [b for b in (f.read(chunk_mb * 1_000_000) for _ in range(workers)) if b]:
                    total += sum(pool.map(lambda block: len(zlib.compress(block, 1)), blocks))
    return total / 1e6
