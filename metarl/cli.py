"""The ``metarl`` command line: ``envs``, ``config``, ``train``, ``evaluate``.

Expected errors (bad config, unknown env, run-directory problems) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path


def _import_modules(names: list[str]) -> None:
    for name in names or []:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise SystemExit(f"metarl: error: --import {name}: {err}") from None


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

    from metarl.vector import env_class, registered_task_env_ids

    ids = registered_task_env_ids(None if args.all else "metarl")
    for env_id in ids:
        spec = gym.spec(env_id)
        try:
            env = gym.make(env_id, disable_env_checker=True).unwrapped
        except Exception as err:  # a broken third-party env must not hide the others
            print(f"{env_id}: cannot be made ({type(err).__name__}: {err})")
            continue
        if not callable(getattr(env, "sample_tasks", None)):
            continue
        import numpy as np

        example = env.sample_tasks(1, np.random.default_rng(0))[0]
        native = "native batched" if getattr(env_class(env_id), "batched_env_class", None) else "gym loop"
        kind = "supervised (H=1)" if getattr(env, "supervised_loss", None) is not None else "RL"
        print(f"{env_id}")
        print(f"  horizon H     : {spec.max_episode_steps}   [{kind}; collector: {native}]")
        print(f"  observation   : {env.observation_space}")
        print(f"  action        : {env.action_space}")
        print(f"  task          : {example}")
        env.close()
    return 0


def cmd_config(args) -> int:
    from metarl.config import describe, load_config

    cfg = load_config(args.config, _overrides(args))
    print(describe(cfg))
    return 0


def cmd_train(args) -> int:
    from metarl.config import describe, load_config
    from metarl.train import load_run_config, train

    if args.resume:
        if args.config is not None and Path(args.config).is_dir() and args.run_dir is None:
            args.run_dir = args.config  # `metarl train --resume RUN_DIR`
        if args.run_dir is None:
            raise SystemExit("metarl: error: --resume needs the run directory (metarl train --resume RUN_DIR)")
        cfg = load_run_config(args.run_dir)
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
    from metarl.evaluate import evaluate_run

    evaluate_run(
        args.run_dir,
        steps=args.steps,
        tasks=args.tasks,
        seed=args.seed,
        checkpoint=args.checkpoint,
        overrides=args.set or [],
        compare=args.compare or [],
    )
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
    _common(p)
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _import_modules(args.imports)
    import metarl  # noqa: F401  (registers the environments)
    from metarl.checkpoint import CheckpointError
    from metarl.config import ConfigError
    from metarl.train import RunError

    try:
        return args.func(args)
    except (ConfigError, RunError, CheckpointError) as err:
        print(f"metarl: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as err:
        # Clear errors from environments and the collector (unknown env id, missing methods).
        if os.environ.get("METARL_DEBUG"):
            raise
        print(f"metarl: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metarl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
