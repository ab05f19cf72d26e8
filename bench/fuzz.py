"""Fuzz mcugen with random valid ONNX graphs (tests/fuzz_graphs.py) and tabulate the outcomes.

    python bench/fuzz.py N [--start S] [--c-every K] [--jobs J] [--json out.json]
    python bench/fuzz.py --explain SEED [--save model.onnx]

Runs seeds S..S+N-1: each model is built uniform W8A8 (some power W8A8) and judged by
fuzz_graphs.check_case; the generated C is compiled and verified (`mcugen verify --n 20`) on
every K-th accepted case (K=1: all, 0: none). Prints the count per outcome, the refusals by
reason, and every failure class (internal error or wrong result) with its smallest seed, the
graph and the error. --explain prints one case's graph and, per tensor, how far simulated
quantization is from float (where a wrong result starts).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import fuzz_graphs  # noqa: E402
from mcugen.reference.float_ir import run_float  # noqa: E402


def run_seed(args):
    seed, with_c = args
    start = time.time()
    try:
        case = fuzz_graphs.make_case(seed)
    except fuzz_graphs.GeneratorError as exc:
        return {"seed": seed, "kind": "generator", "reason": "invalid model", "detail": str(exc),
                "graph": "", "tags": [], "seconds": time.time() - start}
    outcome = fuzz_graphs.check_case(case, with_c=with_c)
    return {"seed": seed, "kind": outcome.kind, "reason": outcome.reason, "detail": outcome.detail,
            "metrics": outcome.metrics, "graph": case.description, "tags": sorted(case.tags),
            "seconds": time.time() - start}


def run_all(seeds, c_every, jobs):
    """C verification on every c_every-th seed (the decision is by seed, so it is the same
    whatever the number of jobs); refused cases skip it anyway."""
    work = [(s, bool(c_every) and s % c_every == 0) for s in seeds]
    if jobs <= 1:
        for item in work:
            yield run_seed(item)
        return
    with ProcessPoolExecutor(jobs) as pool:
        yield from pool.map(run_seed, work)


def class_of(row):
    return f"{row['kind']}: {row['reason']}"


def suspect_tags(rows, all_rows):
    """Features present in most seeds of a failure class but rare overall: where to look."""
    overall = Counter(t for r in all_rows for t in r["tags"])
    here = Counter(t for r in rows for t in r["tags"])
    return [t for t, n in here.most_common() if n >= 0.8 * len(rows)
            and overall[t] <= 0.3 * len(all_rows) and not t.startswith(("opset", "names:", "scheme:"))]


def print_table(rows):
    kinds = Counter(r["kind"] for r in rows)
    print(f"\n## Outcomes of {len(rows)} cases\n")
    print("| outcome | cases |\n|---|---|")
    for kind in ("verified", "accepted", "refused", "internal", "wrong", "generator"):
        print(f"| {kind} | {kinds.get(kind, 0)} |")
    by_class = defaultdict(list)
    for r in rows:
        by_class[(r["kind"], r["reason"])].append(r)
    print("\n## Refused, by reason\n\n| cases | first seed | reason |\n|---|---|---|")
    for (kind, reason), group in sorted(by_class.items(), key=lambda kv: -len(kv[1])):
        if kind == "refused":
            print(f"| {len(group)} | {group[0]['seed']} | {reason} |")
    print("\n## Failure classes (internal error, wrong result, generator)\n")
    failures = [(k, g) for k, g in by_class.items() if k[0] in ("internal", "wrong", "generator")]
    for (kind, reason), group in sorted(failures, key=lambda kv: kv[1][0]["seed"]):
        first = group[0]
        print(f"### {kind}: {reason}\n- cases: {len(group)}; smallest seed {first['seed']}; "
              f"seeds {[r['seed'] for r in group[:12]]}")
        print(f"- graph: {first['graph']}")
        print(f"- error: {first['detail'].strip().splitlines()[-1] if first['detail'].strip() else ''}")
        print(f"- common features: {', '.join(suspect_tags(group, rows)) or '-'}\n")
    if not failures:
        print("none")


def explain(seed, save=None):
    """One case: its graph, the build, and per tensor the gap of simulated quantization to
    float (relative to the tensor's max |float|) on the calibration inputs."""
    import copy

    import numpy as np
    import onnx

    import mcugen
    case = fuzz_graphs.make_case(seed)
    path = Path(save or f"/tmp/fuzz_{seed}.onnx")
    onnx.save(case.model, str(path))
    print(f"seed {seed}: opset {case.model.opset_import[0].version}, scheme {case.scheme}, "
          f"input range {case.input_range}, saved to {path}\n{case.description}\n{sorted(case.tags)}")
    print(fuzz_graphs.check_case(case))
    project = mcugen.build(path, scheme=case.scheme, wbits=8, abits=8, input_range=case.input_range)
    qgraph, graph = project.qgraph, project.qgraph.graph
    x = fuzz_graphs.calibration_inputs(case)
    real = run_float(graph, x)
    simulated = {}

    def hook(tensor, value):
        enc = qgraph.encodings.get(tensor)
        simulated[tensor] = enc.decode(enc.encode(value)) if enc is not None else value
        return simulated[tensor]
    quantized = copy.copy(graph)
    quantized.nodes = [copy.copy(n) for n in graph.nodes]
    for node in quantized.nodes:
        if node.name in qgraph.weights:
            node.params = dict(node.params, weight=qgraph.weights[node.name].w_hat)
    run_float(quantized, x, hook)
    for node in graph.nodes:
        f, s = real[node.output], simulated[node.output]
        scale = float(np.abs(f).max()) or 1.0
        enc = qgraph.encodings.get(node.output)
        print(f"{node.name[:30]:30s} {node.op:12s} {str(node.attrs.get('activation')):24s} "
              f"max|float| {scale:9.4g}  sim gap {float(np.abs(f - s).max()) / scale:.4f}  "
              f"encoding {None if enc is None else (enc.bits, enc.signed, round(enc.range, 4))}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=200, help="number of cases")
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--c-every", type=int, default=1,
                        help="verify the C of every K-th seed (0: none)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--json", help="write every outcome here")
    parser.add_argument("--explain", type=int, help="explain one seed instead")
    parser.add_argument("--save", help="with --explain: where to save the model")
    args = parser.parse_args()
    if args.explain is not None:
        explain(args.explain, args.save)
        return 0
    rows, start = [], time.time()
    for row in run_all(range(args.start, args.start + args.n), args.c_every, args.jobs):
        rows.append(row)
        if row["kind"] in ("internal", "wrong", "generator"):
            print(f"seed {row['seed']}: {row['kind']}: {row['reason']}", flush=True)
    print(f"\n{len(rows)} cases in {time.time() - start:.0f} s "
          f"({sum(r['seconds'] for r in rows) / max(1, len(rows)):.2f} s per case)")
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if any(r["kind"] in ("internal", "wrong", "generator") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
