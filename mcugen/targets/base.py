"""The Target seam: what a target does with a target-neutral Schedule.

A target plans its kernels for a board (loop structure, tiles, pipelining), checks that the
plan fits the board, renders the project, builds and runs it for verify/simulate, and adds
its own report columns. The pipeline, the CLI and verify only talk to this interface; the
registry (mcugen/targets/__init__.py) lists the targets.
"""
from __future__ import annotations

import importlib

import numpy as np

from mcugen.errors import MCUGenError
from mcugen.runners import HOST_TIMEOUT, build_harness, locate_mismatch, qemu_timeout, run_harness


class Target:
    name = ""
    default_board = ""
    description = ""
    codegen = ""                     # the mcugen.codegen module that renders the project
    runs_on = ("host",)              # where verify and simulate can run the built project
    # its C harness is a host program (model_test) whose raw outputs a caller can read: explore
    # then evaluates and measures points by running the generated code itself
    host_harness = False
    product_tables = True            # may the lowering realize MACs with product tables
    packed_weights = True            # may weights be stored as packed codes
    storage_first = "decoded"        # the weight storage `auto` tries first
    makefile = "Makefile"            # what verify and simulate run make on (C targets)

    def check_options(self, options: dict) -> dict:
        """The target's own options, checked, with defaults filled in (none for most)."""
        if options:
            raise MCUGenError(f"the {self.name} target takes no option "
                              f"{', '.join('--' + k for k in options)}")
        return {}

    # ---- plan and fit -------------------------------------------------------------------------
    def plan(self, schedule, board, options=None) -> dict:
        """The target's plan of its kernels; the C targets' is step name -> that step's kernel
        plan (merged over step.params when rendering)."""
        return {}

    def needs(self, schedule, board, plan, weights_in) -> dict:
        """memory or resource -> (amount needed, what it holds), against board budgets."""
        flash = (sum(schedule.step_consts_bytes(s) for s in schedule.steps)
                 + sum(p.get("layout_extra_bytes", 0) for p in plan.values()))
        stack = max((p.get("stack_bytes", 0) for p in plan.values()), default=0)
        needs = {"flash": (flash, "weights and tables"),
                 "ram": (schedule.arena_bytes + stack, "activation arena, kernel stack buffers")}
        if weights_in in ("ram", "l2"):
            needs["ram"] = (needs["ram"][0] + flash, needs["ram"][1] + " and weights")
        return needs

    def budget(self, board, resource) -> int:
        return int(board["memory"][resource]["bytes"])

    def shortfalls(self, schedule, board, plan, weights_in=None) -> list:
        """(resource, phrase) for every budget the plan exceeds."""
        weights_in = weights_in or board.get("weights_in")
        out = []
        for what, (need, holds) in self.needs(schedule, board, plan, weights_in).items():
            have = self.budget(board, what)
            if need > have:
                out.append((what, self.shortfall_phrase(what, need, have, holds)))
        return out

    def shortfall_phrase(self, what, need, have, holds) -> str:
        return f"{what} needs {need:,} B ({holds}) of {have:,} B"

    def weights_placement(self, schedule, board, plan) -> str:
        return board.get("weights_in", "flash")

    def cost_spec(self, measure: str) -> dict | None:
        """The cost a run `measure` (qemu, rtl, none) gives a point of this target: the column
        and its label, or None. The counters the C harness reads by default."""
        first = "one inference on the first evaluation input"
        if measure == "qemu":
            return {"column": "instructions", "label": "instructions, measured on qemu RV32IMC "
                    "(minstret), " + first}
        if measure == "rtl":
            return {"column": "cycles", "label": "cycles, measured on the CV32E40P RTL (ideal "
                    "memory), " + first}
        return None

    def fit_advice(self) -> str:
        return ("code adds a few KB more. Try a smaller model, lower --wbits, or a bigger board "
                "(mcugen boards)")

    # ---- emit -----------------------------------------------------------------------------------
    def render(self, schedule, model_file, board, plan) -> dict:
        return importlib.import_module(f"mcugen.codegen.{self.codegen}").render(
            schedule, model_file, board, plan)

    def report_extras(self, report, schedule, board, plan) -> None:
        """Add this target's columns and totals to the report (in place)."""
        stack = max((p.get("stack_bytes", 0) for p in plan.values()), default=0)
        report["totals"]["kernel_stack_bytes"] = stack

    # ---- build and run (verify, simulate) ------------------------------------------------------
    def check_run_place(self, on, schedule=None):
        if on not in self.runs_on:
            raise MCUGenError(f"a project for the {self.name} target runs on "
                              f"{' or '.join(self.runs_on)}, not '{on}'")

    def build(self, project, variant="", sanitize=False, trace=False, on="host"):
        """Compile the project's harness; returns what `run` executes."""
        return build_harness(project, variant, sanitize=sanitize, trace=trace, on=on,
                             makefile=self.makefile)

    def run(self, exe, schedule, x: np.ndarray, on="host", timeout=None, trace_bytes=0):
        """Float inputs (N, ...) -> RunResult with the raw int32 outputs (N, n_out)."""
        if timeout is None:
            timeout = qemu_timeout(schedule, len(x)) if on == "qemu" else HOST_TIMEOUT
        n_out = int(np.prod(schedule.output["shape"]))
        return run_harness(exe, x, n_out, trace_bytes=trace_bytes, on=on, timeout=timeout)

    def locate_mismatch(self, project, schedule, x1, index) -> str:
        return locate_mismatch(project, schedule, x1, index, makefile=self.makefile)
