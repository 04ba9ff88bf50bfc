"""The ``metarl`` command line: ``envs``, ``config``, ``train``, ``evaluate``, ``tune``, ``plot``, ``gap``, ``seeds``, ``bench``.

Expected errors (bad config, unknown env, run-directory problems) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import traceback
import warnings
from pathlib import Path


def _import_modules(names: list[str]) -> list[str]:
    """Import the --import modules; return the environment ids they registered."""
    import gymnasium as gym

    before = set(gym.registry)
    for name in names or []:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise SystemExit(f"metarl: error: --import {name}: {err}") from None
        except Exception as err:  # a bug in the user's module: say where, in one line
            if os.environ.get("METARL_DEBUG"):
                raise
            frame = traceback.extract_tb(err.__traceback__)[-1]
            raise SystemExit(
                f"metarl: error: --import {name}: {type(err).__name__}: {err} ({frame.filename}:{frame.lineno})"
            ) from None
    return sorted(set(gym.registry) - before)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (e.g. one that registers your own task distribution); repeatable")


def _overrides(args) -> list[str]:
    out = list(args.set or [])
    if getattr(args, "seed", None) is not None:
        out.append(f"seed={args.seed}")
    return out


def cmd_envs(args) -> int:
    import gymnasium as gym
    import numpy as np

    from metarl.common.tasks import REQUIRED_METHODS
    from metarl.sampling.vector import env_class, registered_task_env_ids

    ids = registered_task_env_ids(None if args.all else "metarl")
    # environments registered by --import modules are listed whatever their namespace
    imported = set(getattr(args, "imported_env_ids", []))
    for env_id in sorted(set(ids) | imported):
        spec = gym.spec(env_id)
        try:
            env = gym.make(env_id, disable_env_checker=True).unwrapped
        except Exception as err:  # a broken third-party env must not hide the others
            print(f"{env_id}: cannot be made ({type(err).__name__}: {err})")
            continue
        missing = [m for m in REQUIRED_METHODS if not callable(getattr(env, m, None))]
        if missing:
            if env_id in imported:  # the user asked for it, so say why it is not usable
                print(f"{env_id}: not a task distribution (it lacks {', '.join(missing)})")
            continue
        try:
            example = _short(repr(env.sample_tasks(1, np.random.default_rng(0))[0]))
        except Exception as err:
            example = f"(sample_tasks failed: {type(err).__name__}: {err})"
        native = "native batched" if getattr(env_class(env_id), "batched_env_class", None) else "gym loop"
        kind = "supervised (H=1)" if getattr(env, "supervised_loss", None) is not None else "RL"
        print(f"{env_id}")
        print(f"  horizon H     : {spec.max_episode_steps}   [{kind}; collector: {native}]")
        print(f"  observation   : {env.observation_space}")
        print(f"  action        : {env.action_space}")
        print(f"  task          : {example}")
        env.close()
    return 0


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cmd_config(args) -> int:
    from metarl.common.config import describe
    from metarl.experiment import load_config

    cfg = load_config(args.config, _overrides(args))
    print(describe(cfg))
    return 0


def cmd_train(args) -> int:
    from metarl.common.config import describe
    from metarl.experiment import load_config, load_run_config
    from metarl.train import RESUME_SETTABLE, train

    if args.resume:
        if args.config is not None and Path(args.config).is_dir() and args.run_dir is None:
            args.run_dir = args.config  # `metarl train --resume RUN_DIR`
        if args.run_dir is None:
            raise SystemExit("metarl: error: --resume needs the run directory (metarl train --resume RUN_DIR)")
        # A resumed run must continue exactly the run it was: only settings that do not change the
        # iterations already run (how many to run in all, the progress bar) may be given.
        bad = [o for o in _overrides(args) if o.split("=", 1)[0].strip() not in RESUME_SETTABLE]
        if bad:
            raise SystemExit(f"metarl: error: --resume continues the run's saved config; {', '.join(bad)} would "
                             f"change it (only {', '.join(RESUME_SETTABLE)} may be set)")
        cfg = load_run_config(args.run_dir, _overrides(args))
    else:
        if args.config is None:
            raise SystemExit("metarl: error: train needs a CONFIG.yaml")
        cfg = load_config(args.config, _overrides(args))
    if args.help_config:
        print(describe(cfg))
        return 0
    run_dir = args.run_dir or f"runs/{Path(args.config).stem}_s{cfg.seed}"
    out = train(cfg, run_dir, resume=args.resume, overwrite=args.overwrite)
    print(f"run directory: {out}")
    return 0


def cmd_evaluate(args) -> int:
    from metarl.experiment import evaluate_run

    evaluate_run(
        args.run_dir,
        steps=args.steps,
        tasks=args.tasks,
        seed=args.seed,
        checkpoint=args.checkpoint,
        overrides=args.set or [],
        compare=args.compare or [],
        out_dir=args.out,
    )
    return 0


def cmd_plot(args) -> int:
    from metarl.evaluation.plots import plot_runs, plot_training

    # Options that only one kind of plot reads are errors on the other, not silently dropped.
    if args.training:
        unused = [flag for flag, value in (("--methods", args.methods), ("--title", args.title), ("--ylim", args.ylim),
                                           ("--curves", args.curves != "adaptation" and args.curves)) if value]
        if unused:
            raise SystemExit(f"metarl: error: {' and '.join(unused)} {'apply' if len(unused) > 1 else 'applies'} to adaptation curves, not to --training plots")
        out = plot_training(args.run_dirs, args.out or "training_curves.png", x=args.x or "iteration")
    else:
        if args.x is not None:
            raise SystemExit(f"metarl: error: --x {args.x} applies to --training plots only")
        if args.ylim is not None and not args.ylim[0] < args.ylim[1]:
            raise SystemExit(f"metarl: error: --ylim {args.ylim[0]:g} {args.ylim[1]:g}: LOW must be below HIGH")
        out = plot_runs(args.run_dirs, args.out or "adaptation_curves.png", title=args.title, methods=args.methods,
                        ylim=args.ylim, curves_name=args.curves)
    print(f"wrote {out}")
    return 0


def cmd_gap(args) -> int:
    from metarl.evaluation.curves import gap_from_csvs, step_line

    res = gap_from_csvs(args.method_src, args.low_src, args.high_src, args.method, args.low, args.high)
    if args.json:
        print(json.dumps(res))
        return 0
    for name, means in res["means"].items():
        print(step_line(name, "mean", means, digits=3))
    for key, what in (("gap_closed", f"{args.low}_k"), ("gap_closed_vs_low_step0", f"{args.low}_0")):
        print(step_line(res["method"], f"{what}->{args.high} gap closed", res[key], digits=2))
    return 0


def cmd_tune(args) -> int:
    from metarl.experiment import tune_run

    tune_run(args.run_dir, args.grid or [], seed=args.seed, tasks=args.tasks, steps=args.steps,
             overrides=args.set or [], out_dir=args.out)
    return 0


def cmd_seeds(args) -> int:
    from metarl.evaluation.seeds import aggregate_seeds, format_seeds, write_seeds_csv

    rows = aggregate_seeds(args.sources)
    print(format_seeds(rows, digits=args.digits))
    if args.out:
        print(f"wrote {write_seeds_csv(rows, args.out)}")
    return 0


def cmd_bench(args) -> int:
    from metarl.bench import run
    from metarl.experiment import configure_threads

    configure_threads(args.threads)
    run(args.which or ["collect", "maml", "sinusoid"], args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metarl", description="Meta-learning (MAML, RL²) for regression and RL.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("envs", help="list the registered task distributions")
    p.add_argument("--all", action="store_true", help="every namespace, not only metarl/")
    _common(p)
    p.set_defaults(func=cmd_envs)

    p = sub.add_parser("config", help="print the resolved config with the documentation of every key")
    p.add_argument("config", nargs="?", default=None, help="CONFIG.yaml (defaults if omitted)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key; repeatable")
    p.add_argument("--seed", type=int)
    _common(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("train", help="train an experiment into a run directory", add_help=False)
    p.add_argument("-h", "--help", dest="help_config", action="store_true",
                   help="print the resolved config with its documentation and exit")
    p.add_argument("config", nargs="?", default=None, help="CONFIG.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key; repeatable")
    p.add_argument("--seed", type=int, help="shortcut for --set seed=N")
    p.add_argument("--run-dir", help="run directory (default runs/<config name>_s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its newest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --run-dir")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="adaptation curves of a run on held-out tasks")
    p.add_argument("run_dir")
    p.add_argument("--steps", type=int, help="gradient steps 0..K (default eval.steps)")
    p.add_argument("--tasks", type=int, help="number of held-out tasks (default eval.tasks)")
    p.add_argument("--seed", type=int, help="seed of the test-task stream (default eval.seed)")
    p.add_argument("--checkpoint", type=int, help="iteration of the checkpoint to evaluate (default newest)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key; repeatable")
    p.add_argument("--compare", nargs="+", metavar="RUN_DIR", help="other runs to put on the same plot")
    p.add_argument("--out", metavar="DIR", help="where to write the results (default RUN_DIR/eval)")
    _common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("plot", help="overlay the adaptation curves (or, with --training, the training curves) of runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run directories (adaptation curves from RUN_DIR/eval/adaptation.csv; an eval dir or CSV also works)")
    p.add_argument("--training", action="store_true", help="plot pre/post-update training curves from progress.csv instead")
    p.add_argument("--x", choices=["iteration", "env_steps"], default=None,
                   help="x axis of --training plots (default iteration)")
    p.add_argument("--title", help="plot title (adaptation curves)")
    p.add_argument("--curves", default="adaptation", metavar="NAME",
                   help="which evaluation curves: adaptation (the metric, default) or a rate beside it, e.g. success_rate")
    p.add_argument("--ylim", nargs=2, type=float, metavar=("LOW", "HIGH"),
                   help="y axis range of adaptation curves (e.g. when one method diverges)")
    p.add_argument("--methods", nargs="+", metavar="NAME",
                   help="only these curves: NAME (that method in every source) or RUN:NAME (in the source the legend calls RUN)")
    p.add_argument("--out", help="PNG to write (default adaptation_curves.png, or training_curves.png with --training)")
    _common(p)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("gap", help="fraction of the pretrained-to-oracle gap a method closes, from adaptation CSVs")
    p.add_argument("method_src", metavar="METHOD", help="run dir, eval dir or adaptation.csv holding the method's curve")
    p.add_argument("--low", dest="low_src", required=True, metavar="SRC", help="the same for the low end (the pretrained policy)")
    p.add_argument("--high", dest="high_src", required=True, metavar="SRC", help="the same for the high end (the oracle)")
    p.add_argument("--method-name", dest="method", default=None,
                   help="curve to take from METHOD (default its first: the evaluated run's, e.g. maml, promp, rl2)")
    p.add_argument("--low-name", dest="low", default="pretrain", help="curve to take from --low (default pretrain)")
    p.add_argument("--high-name", dest="high", default="oracle", help="curve to take from --high (default oracle)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    _common(p)
    p.set_defaults(func=cmd_gap)

    p = sub.add_parser("tune", help="choose test-time settings (eval.*) on validation tasks: the same grid for every method")
    p.add_argument("run_dir")
    p.add_argument("--grid", action="append", metavar="eval.KEY=V1,V2,...", help="values to try for one eval key; repeatable (all combinations)")
    p.add_argument("--seed", type=int, required=True, help="seed of the validation-task stream (must differ from eval.seed)")
    p.add_argument("--tasks", type=int, help="number of validation tasks (default eval.tasks)")
    p.add_argument("--steps", type=int, help="gradient steps 0..K; the choice is the best mean after step K (default eval.steps)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key for every combination; repeatable")
    p.add_argument("--out", metavar="DIR", help="where to write tune.csv (default RUN_DIR/tune)")
    _common(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("seeds", help="mean and spread across training seeds of adaptation curves (one evaluation per seed)")
    p.add_argument("sources", nargs="+", metavar="EVAL", help="run dirs, eval dirs or adaptation.csv files, one per seed")
    p.add_argument("--out", metavar="DIR", help="also write DIR/seeds.csv")
    p.add_argument("--digits", type=int, default=3, help="decimals printed (default 3)")
    _common(p)
    p.set_defaults(func=cmd_seeds)

    p = sub.add_parser("bench", help="speed benchmarks, one JSON line each (see BENCHMARKS.md)")
    p.add_argument("which", nargs="*", choices=["collect", "maml", "fvp", "sinusoid", "pearl"],
                   help="default: collect, maml and sinusoid")
    p.add_argument("--env", default="metarl/HalfCheetahVel-v0", help="collect: environment id")
    p.add_argument("--tasks", type=int, default=40, help="collect: tasks")
    p.add_argument("--episodes", type=int, default=20, help="collect: episodes per task")
    p.add_argument("--backend", default="auto", help="collect: vector env backend (auto, native, gym, subproc, threads, process_pool, ray)")
    p.add_argument("--env-kwarg", action="append", metavar="KEY=VALUE",
                   help="collect: environment keyword argument, e.g. env_name=push-v3; repeatable")
    p.add_argument("--workers", type=int, default=2, help="collect: worker processes (subproc, process_pool) or Ray actors")
    p.add_argument("--repeats", type=int, default=2,
                   help="collect: timed rounds (each figure once a round, rounds interleaved; best round each)")
    p.add_argument("--config", default=None,
                   help="maml, fvp, pearl: config to time (default experiments/navigation2d_maml.yaml for maml and fvp, "
                        "experiments/halfcheetah_vel_pearl.yaml for pearl)")
    p.add_argument("--compare", metavar="CONFIG",
                   help="maml: a second config timed in the same run (iterations alternating), with the ratio")
    p.add_argument("--iterations", type=int, default=None,
                   help="maml: timed iterations after one warm-up (default 3); pearl: timed gradient steps (default 20)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="maml, fvp, pearl: config overrides")
    p.add_argument("--threads", type=int, default=None, help="torch/MuJoCo threads (default: all cores)")
    p.add_argument("--reference", action="store_true",
                   help="sinusoid: also time a plain torch.func MAML of the same setting, interleaved, and print the ratio")
    _common(p)
    p.set_defaults(func=cmd_bench)
    return parser


@contextlib.contextmanager
def _one_line_warnings():
    """Show metarl's own warnings (a skipped checkpoint, a resume with other code) as one line; others as usual."""
    from metarl.common.checkpoint import CheckpointWarning
    from metarl.common.provenance import ProvenanceWarning

    with warnings.catch_warnings():
        previous = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, (CheckpointWarning, ProvenanceWarning)):
                print(f"metarl: warning: {message}", file=sys.stderr)
            else:
                previous(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Long commands (train, evaluate, tune) print a line per step of work; when stdout is a file (nohup,
    # a cluster job's log) Python would hold those lines in a block buffer until exit, so show each at once.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    try:
        return _run(args)
    except SystemExit as err:
        # usage errors raised as SystemExit("metarl: error: ..."): one line, exit status 2
        if isinstance(err.code, str):
            print(err.code, file=sys.stderr)
            return 2
        raise


def _run(args) -> int:
    args.imported_env_ids = _import_modules(args.imports)
    import metarl.envs  # noqa: F401  (registers the environments)
    import yaml

    from metarl.common.checkpoint import CheckpointError
    from metarl.common.config import ConfigError
    from metarl.common.config_yaml import yaml_error_line
    from metarl.experiment import RunError

    try:
        with _one_line_warnings():
            return args.func(args)
    except (ConfigError, RunError, CheckpointError) as err:
        print(f"metarl: error: {err}", file=sys.stderr)
        return 2
    except yaml.YAMLError as err:  # e.g. a run directory's config.yaml edited by hand
        print(f"metarl: error: malformed YAML{yaml_error_line(err)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, ModuleNotFoundError) as err:
        # Clear errors from environments and the collector (unknown env id, missing methods, an optional
        # package not installed: the message names the pip command).
        if os.environ.get("METARL_DEBUG"):
            raise
        print(f"metarl: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metarl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
