"""Graph rewrites, each a small pass with a match and a transform, composed in named flows."""
from __future__ import annotations

from functools import partial

from mcugen.passes.rewrites import (cancel_transposes, drop_dead_nodes, drop_noop_transpose,
                                    fold_affine, fold_pad, fuse_activation, sink_activations)

FLOWS = {
    # order matters: an affine folds before an activation fuses onto the same producer
    "normalize": [drop_dead_nodes, sink_activations, cancel_transposes, fold_affine, fold_pad,
                  drop_noop_transpose, fuse_activation],
}


def run_flow(graph, flow="normalize", monotone_only=False):
    """monotone_only: fuse only non-decreasing activations, the others stay code-to-code tables
    (exact encoders only, or grids no index encoder can follow, like log2)."""
    for rewrite in FLOWS[flow]:
        if rewrite is fuse_activation:
            rewrite = partial(fuse_activation, monotone_only=monotone_only)
        while rewrite(graph):
            pass
    graph.toposort()
    return graph
