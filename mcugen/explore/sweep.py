"""Running the points that are not finished yet: one after the other, in N local processes,
or on a dask.distributed cluster (cluster.py). Each record goes to `on_done` as soon as its
point finishes, in whatever order they finish; KeyboardInterrupt stops the workers and
propagates, so what finished is kept and the caller says how to resume."""
from __future__ import annotations

import multiprocessing
import signal

from mcugen.explore.cluster import run_on_cluster
from mcugen.explore.point import Context, run_point

_CONTEXT: Context | None = None     # a worker process's copy of the sweep's shared inputs


def run_points(context: Context, points: list[dict], on_done, jobs: int = 1, client=None) -> None:
    """client: a dask Client (cluster.connect) to run the points on instead of here."""
    if client is not None:
        run_on_cluster(client, context, points, on_done)
    elif jobs == 1 or len(points) <= 1:
        for point in points:
            on_done(run_point(context, point))
    else:
        _run_in_processes(context, points, on_done, min(jobs, len(points)))


def _run_in_processes(context: Context, points: list[dict], on_done, jobs: int) -> None:
    """Fresh interpreters (spawn): no state of the parent leaks into a point."""
    pool = multiprocessing.get_context("spawn").Pool(jobs, initializer=_start_worker,
                                                     initargs=(context,))
    try:
        for record in pool.imap_unordered(_run_in_worker, points, chunksize=1):
            on_done(record)
        pool.close()
    except BaseException:
        pool.terminate()      # Ctrl-C (or an error in on_done): unfinished points are dropped
        raise
    finally:
        pool.join()


def _start_worker(context: Context) -> None:
    """Ctrl-C is the parent's to handle: a worker that saw it would die with a traceback."""
    global _CONTEXT
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _CONTEXT = context


def _run_in_worker(point: dict) -> dict:
    return run_point(_CONTEXT, point)
