"""Where each sitting of a run came from: ``RUN/sittings.jsonl``, one JSON line per ``metarl train`` start or resume.

Long trainings span sessions and machines, and a published figure needs the code and the command of every
part of its run. Each line holds: when the sitting started (UTC), the iteration it started from, the command
line, the commit of the metarl checkout that ran it and whether its sources had uncommitted changes
(``commit`` is null when metarl is not run from a git checkout, e.g. installed from a wheel), the versions
of Python and of the libraries that decide the numbers, the host name and its CPU count.

A resume whose code differs from the previous sitting's (another commit, or uncommitted changes) is
allowed, with a :class:`ProvenanceWarning`: an exact continuation is only promised for the same code.

``metarl evaluate`` writes ``provenance.json`` beside its figures (:func:`evaluation_record`): the same
fields for the evaluation itself, and for every run it scored the iteration evaluated and that run's
sittings, so a published curve carries the code and commands of both its training and its evaluation.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

FILE = "sittings.jsonl"
#: libraries whose versions can change a run's numbers (those installed are recorded)
LIBRARIES = ("torch", "numpy", "gymnasium", "mujoco", "metaworld", "scipy", "ray")
#: what decides a run's numbers in the checkout: the package, the task distributions and the pinned dependencies
SOURCES = ("metarl", "envs", "pyproject.toml")
#: the checkout metarl runs from: metarl/common/provenance.py -> its root
CHECKOUT = Path(__file__).resolve().parents[2]


class ProvenanceWarning(UserWarning):
    """A run resumed with other code than its previous sitting."""


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version(root: Path = CHECKOUT) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the git checkout rooted at ``root``; ``dirty``: whether
    metarl's own tracked sources (:data:`SOURCES`) have uncommitted changes (results or docs do not count). A
    ``root`` that is not itself the top of a checkout (e.g. site-packages inside some other repository) gives None."""
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != Path(root).resolve():
        return {"commit": None, "dirty": None}
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", *SOURCES)
    return {"commit": _git(root, "rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _this_process(argv: list[str] | None = None) -> dict:
    return {
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": list(sys.argv if argv is None else argv),
        **code_version(),
        "versions": library_versions(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
    }


def evaluation_record(runs: list[tuple[str | Path, int]], argv: list[str] | None = None) -> dict:
    """This evaluation's code and command, and for each (run directory, iteration evaluated) in ``runs`` (the
    evaluated run first, then any compared ones) that run's sittings."""
    return {"evaluation": _this_process(argv),
            "runs": [{"run_dir": str(run_dir), "iteration": int(iteration), "sittings": read_sittings(run_dir)}
                     for run_dir, iteration in runs]}


def read_sittings(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def record_sitting(run_dir: str | Path, from_iteration: int, argv: list[str] | None = None) -> dict:
    """Append this sitting's line to ``run_dir``/sittings.jsonl and return it; warn when it resumes the run
    with other code than the previous sitting's."""
    record = {"from_iteration": int(from_iteration), **_this_process(argv)}
    previous = read_sittings(run_dir)
    if from_iteration > 0 and previous:
        last = previous[-1]
        if (last.get("commit"), last.get("dirty")) != (record["commit"], record["dirty"]):
            warnings.warn(
                f"resuming {run_dir} at iteration {from_iteration} with metarl at {_describe(record)}; its previous "
                f"sitting ran {_describe(last)}: an exact continuation is only promised for the same code",
                ProvenanceWarning, stacklevel=2,
            )
    with open(Path(run_dir) / FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def _describe(record: dict) -> str:
    commit = record.get("commit")
    if commit is None:
        return "no git commit"
    return commit[:12] + (" with uncommitted changes" if record.get("dirty") else "")
