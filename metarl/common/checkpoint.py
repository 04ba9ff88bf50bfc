"""Atomic checkpoints: write to a temporary file, fsync, rename; keep the newest K.

A checkpoint holds everything needed to continue a run exactly: algorithm state (meta-parameters,
optimizer, learned inner learning rates), iteration and env-step counters, every RNG state and the
resolved config. A file that cannot be read (truncated by a kill, corrupted) is skipped with a
warning and the previous one is used.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch

#: bumped whenever the layout of a checkpoint changes
FORMAT_VERSION = 1
_NAME = re.compile(r"^iter_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    pass


class CheckpointVersionError(CheckpointError):
    """A readable checkpoint of another layout version: reported, never skipped silently."""


class CheckpointWarning(UserWarning):
    """An unreadable checkpoint was skipped in favour of the previous one."""


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), d / n) for n in os.listdir(d) if (m := _NAME.match(n))]
    return sorted(found)


def save_checkpoint(run_dir: str | Path, iteration: int, state: dict, keep: int = 3) -> Path:
    d = checkpoint_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"iter_{iteration:07d}.pt"
    tmp = d / f".iter_{iteration:07d}.pt.tmp"
    with open(tmp, "wb") as f:
        torch.save({"format_version": FORMAT_VERSION, "iteration": iteration, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(d)
    if keep > 0:
        for _, old in list_checkpoints(run_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated or corrupt file
        # torch's messages run to several sentences; the first one says what went wrong
        detail = (str(err).strip().splitlines() or [""])[0].split(". ")[0]
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: {detail})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} cannot be read (it holds a {type(state).__name__}, not a dict)")
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointVersionError(
            f"checkpoint {path} has format version {version!r}; this metarl reads version {FORMAT_VERSION}"
        )
    return state


def load_latest_checkpoint(run_dir: str | Path, iteration: int | None = None) -> dict:
    """The newest readable checkpoint (or the one of ``iteration``); warns about unreadable ones.

    A checkpoint of another format version is an error, not skipped: falling back to an older
    checkpoint would silently throw away the progress recorded in the newer one.
    """
    found = list_checkpoints(run_dir)
    if iteration is not None:
        found = [(i, p) for i, p in found if i == iteration]
        if not found:
            raise CheckpointError(f"no checkpoint of iteration {iteration} in {checkpoint_dir(run_dir)}")
    if not found:
        raise CheckpointError(f"no checkpoint in {checkpoint_dir(run_dir)}")
    for _, path in reversed(found):
        try:
            return load_checkpoint(path)
        except CheckpointVersionError:
            raise
        except CheckpointError as err:
            if iteration is not None:
                raise
            warnings.warn(f"{err}; falling back to the previous checkpoint", CheckpointWarning, stacklevel=2)
    raise CheckpointError(f"no readable checkpoint in {checkpoint_dir(run_dir)}")


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
