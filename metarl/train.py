"""``metarl train``: build an experiment from its config and run it in a run directory.

A run directory holds ``config.yaml`` (the resolved config), ``progress.csv``, TensorBoard events in
``tb/`` and checkpoints in ``checkpoints/``. Every random stream derives from ``cfg.seed``:
policy initialisation, task sampling and the collector's streams are separate children of one
``numpy.random.SeedSequence``.
"""

from __future__ import annotations

import shutil
import signal
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from metarl.common import provenance
from metarl.common.checkpoint import CheckpointError, list_checkpoints, load_latest_checkpoint, save_checkpoint
from metarl.common.config import config_to_dict, dump_yaml
from metarl.common.logger import RunLogger
from metarl.experiment import (
    Experiment,
    ExperimentConfig,
    RunError,
    build_experiment,
    config_from_dict,
    configure_threads,
)


#: config keys a resumed run may change (``metarl train --resume RUN --set KEY=V``): none alters
#: the iterations already run, so the continued run stays the one it was. MuJoCo stepping threads
#: only split the environments between threads (each steps alone), so a run resumed with fewer
#: threads, e.g. to share a machine with another training, continues bit-identically; so do
#: subproc worker processes and Ray actors (``collector.num_workers``), which split the columns.
RESUME_SETTABLE = ("train.iterations", "train.show_progress", "collector.num_threads", "collector.num_workers")


def _with_resume_settings(saved: ExperimentConfig, given: ExperimentConfig) -> ExperimentConfig:
    """``saved`` with the RESUME_SETTABLE values of ``given``."""
    cfg = saved
    for key in RESUME_SETTABLE:
        section, name = key.split(".")
        part = replace(getattr(cfg, section), **{name: getattr(getattr(given, section), name)})
        cfg = replace(cfg, **{section: part})
    return cfg


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    has_run = (run_dir / "config.yaml").exists() or (run_dir / "progress.csv").exists()
    if resume:
        if not list_checkpoints(run_dir):
            raise RunError(f"--resume: no checkpoint in {run_dir}/checkpoints; nothing to resume")
        return
    if has_run and not overwrite:
        raise RunError(f"run directory {run_dir} already holds a run; pass --resume to continue it or --overwrite to replace it")
    if has_run and overwrite:
        _remove_run_files(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def _checkpoint_state(exp: Experiment, iteration: int, env_steps: int) -> dict:
    return {
        "algo": exp.algo.state_dict(),
        "env_steps": env_steps,
        "task_rng": exp.task_rng.bit_generator.state,
        "collector_rng": exp.collector.get_rng_state(),
        "config": config_to_dict(exp.cfg),
    }


class _StopRequest:
    """SIGINT/SIGTERM ask the loop to stop after the current iteration (and checkpoint)."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:  # second signal: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


_RUN_FILES = ("checkpoints", "tb", "eval", "progress.csv", "config.yaml", provenance.FILE)


def train(cfg: ExperimentConfig, run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    run_dir = Path(run_dir)
    existed = run_dir.exists()
    prepare_run_dir(run_dir, resume, overwrite)
    try:
        return _train(cfg, run_dir, resume)
    except BaseException:
        # A fresh run that failed before logging or checkpointing anything (bad env, bad backend,
        # an error in the first iteration) leaves no run behind, so the corrected command just works.
        if not resume and not list_checkpoints(run_dir) and not (run_dir / "progress.csv").exists():
            _remove_run_files(run_dir)
            if not existed and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()
        raise


def _remove_run_files(run_dir: Path) -> None:
    for name in _RUN_FILES:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _train(cfg: ExperimentConfig, run_dir: Path, resume: bool) -> Path:
    start_iteration, env_steps = 0, 0
    state = None
    if resume:
        try:
            state = load_latest_checkpoint(run_dir)
        except CheckpointError as err:
            raise RunError(str(err)) from None
        saved = config_from_dict(state["config"])
        # The checkpoint's config is the run's; only RESUME_SETTABLE keys are taken from ``cfg``.
        cfg = _with_resume_settings(saved, cfg)
        if cfg != saved:
            (run_dir / "config.yaml").write_text(dump_yaml(cfg))
        start_iteration, env_steps = state["iteration"], state["env_steps"]
    configure_threads(cfg.collector.torch_threads)
    exp = build_experiment(cfg)
    if state is not None:
        exp.algo.load_state_dict(state["algo"])
        exp.task_rng.bit_generator.state = state["task_rng"]
        exp.collector.set_rng_state(state["collector_rng"])
    else:
        (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    provenance.record_sitting(run_dir, start_iteration)  # the code and command of this part of the run

    logger = RunLogger(run_dir, resume_iteration=start_iteration if resume else None)
    tc = cfg.train
    progress = None
    if tc.show_progress:
        from metarl.common.progress import progress as make_progress

        # a bar on a terminal, a line per tenth of the run (or minute) in a log file
        progress = make_progress(tc.iterations, start_iteration, sys.stderr)
    iteration = start_iteration
    # Periodic meta-test (train.eval_every): meta_test/<metric>_step<k> go to TensorBoard and to
    # progress.csv. The CSV's columns are fixed by its first row, so every logged row carries these
    # keys (empty cells on iterations without a meta-test); a fresh run learns them from a meta-test
    # of the initial parameters (TensorBoard step 0). Evaluation uses its own collector and restores
    # the global generators (evaluate.meta_test_scalars), so training streams are untouched.
    meta_test_keys: list[str] = []
    try:
        if tc.eval_every and start_iteration == 0:
            from metarl.evaluation.curves import meta_test_scalars

            initial = meta_test_scalars(exp.algo, cfg)
            meta_test_keys = sorted(initial)
            if logger.writer is not None:
                for key, value in initial.items():
                    if np.isfinite(value):
                        logger.writer.add_scalar(key, value, 0)
        with _StopRequest() as stop:
            while iteration < tc.iterations and not stop.requested:
                stats = exp.algo.train_iteration(exp.task_rng)
                _check_finite(stats, iteration + 1, exp.policy)
                iteration += 1
                env_steps += int(stats.pop("env_steps", 0))
                stats["env_steps_total"] = float(env_steps)
                evaluated = bool(tc.eval_every) and iteration % tc.eval_every == 0
                if tc.eval_every:
                    from metarl.evaluation.curves import meta_test_scalars

                    stats.update(dict.fromkeys(meta_test_keys))
                    if evaluated:
                        stats.update(meta_test_scalars(exp.algo, cfg))
                if iteration % tc.log_every == 0 or iteration == tc.iterations or evaluated:
                    logger.log(iteration, stats)
                if progress is not None:
                    progress.update(1)
                    postfix = progress_postfix(stats)
                    if postfix:
                        progress.set_postfix(postfix)
                if tc.checkpoint_every and iteration % tc.checkpoint_every == 0:
                    save_checkpoint(run_dir, iteration, _checkpoint_state(exp, iteration, env_steps), tc.keep_checkpoints)
            if not list_checkpoints(run_dir) or list_checkpoints(run_dir)[-1][0] != iteration:
                save_checkpoint(run_dir, iteration, _checkpoint_state(exp, iteration, env_steps), tc.keep_checkpoints)
    finally:
        if progress is not None:
            progress.close()
        logger.close()
        exp.collector.close()
    return run_dir


#: what the progress bar shows, the first one an algorithm reports
_PROGRESS_KEYS = ("post_update/return", "post_update/loss", "return/trial", "train/return")


def progress_postfix(stats: dict[str, float]) -> dict[str, str]:
    """The figures on the progress line: the first of :data:`_PROGRESS_KEYS` the algorithm reports, then the
    rate of each info indicator the env records (Meta-World's success, the metric papers report) after
    adaptation: MAML's post-update rate, RL²'s in the last episode of a trial."""
    key = next((k for k in _PROGRESS_KEYS if k in stats), None)
    postfix = {} if key is None else {key: f"{stats[key]:.3f}"}
    last_episode: dict[str, int] = {}
    for k in stats:
        if k.startswith("post_update/") and k.endswith("_rate"):
            postfix[k] = f"{stats[k]:.2f}"
        name, _, episode = k.partition("_rate/episode_")
        if episode.isdigit():
            last_episode[name] = max(last_episode.get(name, -1), int(episode))
    for name, episode in last_episode.items():
        k = f"{name}_rate/episode_{episode}"
        postfix[k] = f"{stats[k]:.2f}"
    return postfix


def _check_finite(stats: dict[str, float], iteration: int, policy: torch.nn.Module | None = None) -> None:
    """Stop before anything non-finite is logged or checkpointed (the last good checkpoint stays)."""
    for key, value in stats.items():
        if value is not None and not np.isfinite(value):
            raise RunError(f"non-finite {key} ({value}) at iteration {iteration}; the last good checkpoint is kept")
    if policy is None:
        return
    params = [p for p in policy.parameters()]
    if params and not bool(torch.isfinite(torch.cat([p.detach().reshape(-1) for p in params])).all()):
        bad = next(n for n, p in policy.named_parameters() if not bool(torch.isfinite(p).all()))
        raise RunError(f"non-finite parameter {bad} at iteration {iteration}; the last good checkpoint is kept")
