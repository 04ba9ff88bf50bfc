"""Every sitting of a run records its code and command (RUN/sittings.jsonl); a resume with other code warns."""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from metarl.common import provenance
from metarl.experiment import load_config
from metarl.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train.checkpoint_every=1", "train.show_progress=false", "maml.meta_batch_size=2", "policy.hidden_sizes=[8]",
        "collector.num_threads=1"]


def _git_head() -> str | None:
    """This checkout's commit; None without git or outside a checkout (what provenance records then)."""
    if shutil.which("git") is None:
        return None
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def _config(iterations: int):
    return load_config("experiments/sinusoid_maml.yaml", [*TINY, f"train.iterations={iterations}"])


def test_each_sitting_records_its_code_and_command(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    run = tmp_path / "run"
    train(_config(2), run)
    train(_config(3), run, resume=True)
    sittings = provenance.read_sittings(run)
    assert [s["from_iteration"] for s in sittings] == [0, 2]
    first = sittings[0]
    assert first["commit"] == _git_head()  # this checkout's commit (None outside a git checkout)
    assert first["versions"]["torch"] == __import__("torch").__version__ and "python" in first["versions"]
    assert first["cpus"] >= 1 and isinstance(first["argv"], list)
    # the file is one JSON object per line, so a shell can read it too
    assert [json.loads(line) for line in (run / "sittings.jsonl").read_text().splitlines()] == sittings


def test_a_resume_with_other_code_warns_naming_both(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    run = tmp_path / "run"
    train(_config(1), run)
    lines = (run / "sittings.jsonl").read_text().splitlines()
    earlier = {**json.loads(lines[0]), "commit": "0123456789ab" + "0" * 28, "dirty": False}
    (run / "sittings.jsonl").write_text(json.dumps(earlier) + "\n")
    monkeypatch.setattr(provenance, "code_version", lambda: {"commit": "fedcba987654" + "0" * 28, "dirty": True})
    with pytest.warns(provenance.ProvenanceWarning) as caught:
        train(_config(2), run, resume=True)
    message = str(caught[0].message)
    assert "at iteration 1" in message and "fedcba987654 with uncommitted changes" in message
    assert "previous sitting ran 0123456789ab" in message
    # the same code again: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", provenance.ProvenanceWarning)
        train(_config(3), run, resume=True)
    assert [s["from_iteration"] for s in provenance.read_sittings(run)] == [0, 1, 2]


def test_no_commit_outside_a_checkout(tmp_path):
    # a directory that is not the top of a git checkout (e.g. site-packages, even inside some repository)
    assert provenance.code_version(tmp_path) == {"commit": None, "dirty": None}
    inner = ROOT / "metarl"
    if _git_head() is not None:
        assert provenance.code_version(inner) == {"commit": None, "dirty": None}
        version = provenance.code_version(ROOT)
        assert version["commit"] == _git_head() and isinstance(version["dirty"], bool)


def test_evaluate_writes_the_provenance_of_the_evaluation_and_of_every_run_scored(tmp_path, monkeypatch):
    from metarl.experiment import evaluate_run

    monkeypatch.chdir(ROOT)
    run, other = tmp_path / "run", tmp_path / "other"
    train(_config(2), run)
    train(_config(1), other)
    train(_config(2), other, resume=True)
    evaluate_run(run, steps=1, tasks=2, compare=[other], out_dir=tmp_path / "eval", checkpoint=1)
    record = json.loads((tmp_path / "eval" / "provenance.json").read_text())
    assert record["evaluation"]["commit"] == _git_head() and "torch" in record["evaluation"]["versions"]
    scored = record["runs"]
    assert [(Path(r["run_dir"]), r["iteration"]) for r in scored] == [(run, 1), (other, 2)]
    assert [[s["from_iteration"] for s in r["sittings"]] for r in scored] == [[0], [0, 1]]
    assert scored[1]["sittings"] == provenance.read_sittings(other)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_dirty_means_uncommitted_changes_to_metarls_own_sources(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       capture_output=True)

    (tmp_path / "metarl").mkdir()
    (tmp_path / "metarl" / "algo.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("results\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "start")
    assert provenance.code_version(tmp_path)["dirty"] is False
    (tmp_path / "README.md").write_text("new results\n")  # docs and results do not change a run's numbers
    assert provenance.code_version(tmp_path)["dirty"] is False
    (tmp_path / "metarl" / "algo.py").write_text("x = 2\n")
    version = provenance.code_version(tmp_path)
    assert version["dirty"] is True and len(version["commit"]) == 40


def test_an_overwritten_run_starts_its_sittings_afresh(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    run = tmp_path / "run"
    train(_config(2), run)
    train(_config(3), run, resume=True)
    train(_config(1), run, overwrite=True)  # a new run in the same directory: the old sittings are not its own
    assert [s["from_iteration"] for s in provenance.read_sittings(run)] == [0]
