"""A sweep on an existing dask.distributed cluster (`--scheduler tcp://HOST:PORT`), for spaces
too big for one machine. The optional extra `pip install mcugen[cluster]` brings dask.

The workers need mcugen (with its tools: the cross compiler and qemu when points are measured)
and must see the same paths as this machine: the model, and the explore directory, where
each point writes its project. The shared inputs go to every worker once."""
from __future__ import annotations

import uuid

from mcugen.errors import MCUGenError
from mcugen.explore.point import Context, run_point
from mcugen.explore.space import point_id

CONNECT_TIMEOUT = "10s"


def connect(address: str):
    """A dask Client on the scheduler at `address` (before the sweep touches its directory)."""
    try:
        # deferred: an optional dependency (pip install 'mcugen[cluster]')
        from distributed import Client
    except ImportError:
        raise MCUGenError("--scheduler needs dask.distributed: pip install 'mcugen[cluster]'") from None
    try:
        return Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise MCUGenError(f"cannot reach the dask scheduler at '{address}' ({exc}); start it "
                          f"(dask scheduler) or check --scheduler") from None


def run_on_cluster(client, context: Context, points: list[dict], on_done) -> None:
    # deferred: an optional dependency, present when a client was made
    from distributed import as_completed
    shared = client.scatter(context, broadcast=True)
    run = uuid.uuid4().hex[:12]       # keys unique on a scheduler other sweeps share
    futures = [client.submit(run_point, shared, point, pure=False,
                             key=f"mcugen-explore-{run}-{point_id(point)}")
               for point in points]
    try:
        for future in as_completed(futures):
            on_done(future.result())
    except BaseException:
        client.cancel(futures)
        raise
