"""One place that turns ``collector.backend`` into a collector object.

``ray`` and ``process_pool`` have collector classes of their own (:mod:`metarl.sampling.ray_collector`,
:mod:`metarl.sampling.process_pool`); every other backend is a vector env implementation of the plain
:class:`~metarl.sampling.collector.Collector`. The run's collector, the evaluation collectors and the
oracle's task-in-observation twin are all built here, so that one config gives them the same kind.
"""

from __future__ import annotations

from metarl.sampling.collector import Collector


def make_collector(env_id: str, *, backend: str = "auto", num_workers: int = 2, address: str | None = None,
                   **kwargs) -> Collector:
    """The collector of ``backend`` for ``env_id``; ``kwargs`` are :class:`Collector`'s (seed, env_kwargs,
    horizon, oracle, num_threads, rescale_actions). ``num_workers``: Ray actors, pool or subproc processes;
    ``address``: the Ray cluster (None: ``RAY_ADDRESS`` or a local Ray)."""
    if backend == "ray":
        from metarl.sampling.ray_collector import RayCollector

        return RayCollector(env_id, num_workers=num_workers, address=address, **kwargs)
    if backend == "process_pool":
        from metarl.sampling.process_pool import ProcessPoolCollector

        return ProcessPoolCollector(env_id, num_workers=num_workers, **kwargs)
    return Collector(env_id, backend=backend, num_workers=num_workers, **kwargs)


def make_evaluation_collector(env_id: str, *, backend: str, num_workers: int, num_threads: int | None,
                              **kwargs) -> Collector:
    """A collector for evaluating a run trained on ``backend`` (its ``collector.num_workers`` and
    ``collector.num_threads``): the same backend, except that a Ray run evaluates in this process with
    ``auto`` (the same batches; each method and each periodic meta-test gets a fresh collector, which on
    Ray would be a fresh set of actors each time). A pool keeps the run's threads per worker (None: the
    cores divided among the workers); in-process backends step on every core, whatever the run used."""
    backend = "auto" if backend == "ray" else backend
    return make_collector(env_id, backend=backend, num_workers=num_workers,
                          num_threads=num_threads if backend == "process_pool" else None, **kwargs)
