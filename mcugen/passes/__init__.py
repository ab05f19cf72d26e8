"""Graph rewrites, each a small pass with a match and a transform, composed in named flows."""
from __future__ import annotations

from mcugen.passes.rewrites import (drop_dead_nodes, drop_noop_transpose, fold_affine,
                                    fold_pad, fuse_activation, sink_reshape)

FLOWS = {
    # order matters: an affine folds before an activation fuses onto the same producer
    "normalize": [drop_dead_nodes, sink_reshape, fold_affine, fold_pad, drop_noop_transpose, fuse_activation],
}


def run_flow(graph, flow="normalize"):
    for rewrite in FLOWS[flow]:
        while rewrite(graph):
            pass
    graph.toposort()
    return graph
