"""Training progress: a tqdm bar on a terminal, a few plain lines when stderr is a log file."""

from __future__ import annotations

import io

from metarl.experiment import load_config
from metarl.common.progress import ProgressLines, progress
from metarl.train import progress_postfix, train


class _Clock:
    def __init__(self, step: float):
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        return self.t

    def tick(self) -> None:
        self.t += self.step


def _lines(total: int, seconds_per_iteration: float, initial: int = 0) -> list[str]:
    out, clock = io.StringIO(), _Clock(seconds_per_iteration)
    bar = ProgressLines(total, initial, out, clock=clock)
    for _ in range(total - initial):
        clock.tick()
        bar.update(1)
        bar.set_postfix({"post_update/loss": "0.500"})
    bar.close()
    return out.getvalue().splitlines()


def test_a_line_per_tenth_of_the_run():
    lines = _lines(3000, 0.02)  # make demo: 3000 fast iterations
    assert [line.split(" ")[1] for line in lines] == [f"{300 * k}/3000" for k in range(1, 11)]
    assert lines[-1].startswith("meta-iterations 3000/3000 (100%) | 50 it/s | 1:00 elapsed | 0:00 left")
    assert "\r" not in "".join(lines)
    # the postfix is the one set before the line was printed (set after the update of iteration 300)
    assert lines[1].endswith("| post_update/loss=0.500")


def test_at_least_a_line_a_minute():
    lines = _lines(1000, 2.0)  # a tenth of the run takes 200 s: lines every 30 iterations, and the last
    assert [int(line.split(" ")[1].split("/")[0]) for line in lines] == [30 * k for k in range(1, 34)] + [1000]
    assert lines[0].startswith("meta-iterations 30/1000 (3%) | 2 s/it | 1:00 elapsed | 32:20 left")
    assert "| 400 s/it | 1:06:40 elapsed | 0:00 left" in _lines(10, 400.0)[-1]  # 4000 s


def test_resumed_run_counts_from_its_start():
    lines = _lines(100, 0.5, initial=50)
    assert lines[0].startswith("meta-iterations 60/100 (60%) | 2 it/s | 0:05 elapsed | 0:20 left")
    assert lines[-1].startswith("meta-iterations 100/100 (100%)")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_bar():
    from tqdm import tqdm

    bar = progress(5, stream=_Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
    assert isinstance(progress(5, stream=io.StringIO()), ProgressLines)


def test_training_writes_few_lines_to_a_log(tmp_path, capsys):
    # pytest's captured stderr is not a terminal, like a log file
    cfg = load_config("experiments/sinusoid_maml.yaml", [
        "train.iterations=40", "train.checkpoint_every=0", "maml.meta_batch_size=2", "policy.hidden_sizes=[8]"])
    assert cfg.train.show_progress
    train(cfg, tmp_path / "run")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("meta-iterations")]
    assert [line.split(" ")[1] for line in lines] == [f"{4 * k}/40" for k in range(1, 11)]
    assert "post_update/loss=" in lines[-1] and "\r" not in err


def test_the_progress_line_shows_the_success_rate_after_adaptation():
    """Beside the return, the rate papers report on Meta-World: MAML's post-update rate, RL²'s in the last
    episode of a trial (not the first, and not a pre-update rate)."""
    maml = {"pre_update/return": 10.0, "post_update/return": 12.5, "pre_update/success_rate": 0.1,
            "post_update/success_rate": 0.25, "kl": 0.01}
    assert progress_postfix(maml) == {"post_update/return": "12.500", "post_update/success_rate": "0.25"}
    rl2 = {"return/trial": 900.0, **{f"success_rate/episode_{k}": k / 20 for k in range(12)},
           "return/episode_0": 80.0}
    assert progress_postfix(rl2) == {"return/trial": "900.000", "success_rate/episode_11": "0.55"}
    assert progress_postfix({"post_update/loss": 0.5}) == {"post_update/loss": "0.500"}  # no indicator: as before
    assert progress_postfix({"kl": 0.01}) == {}
