"""The Target seam: what a target does with a target-neutral Schedule.

A target plans its kernels for a board (loop structure, tiles, pipelining), checks that the
plan fits the board, renders the project, builds and runs it for verify/simulate, and adds
its own report columns and lines. It declares what it has: its own build options (`options`,
which become `mcugen build` options), where its projects run (`runs_on`, names in
runners.RUN_PLACES), whether its harness is a host program, the cost a run gives. The
pipeline, the CLI, verify and the report only talk to this interface; the registry
(mcugen/targets/__init__.py) lists the targets.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np

from mcugen.errors import MCUGenError
from mcugen.runners import (HOST_TIMEOUT, RUN_PLACES, build_harness, locate_mismatch,
                            qemu_timeout, run_harness)

TYPE_PHRASES = {int: "a whole number", float: "a number"}


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def and_list(words) -> str:
    """a, b and c"""
    words = list(words)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


@dataclass(frozen=True)
class TargetOption:
    """One of a target's own build options: `--NAME` on `mcugen build` (shared by the targets
    that declare the same name), `target_options[NAME]` in the API. A flag is a bool; otherwise
    the value is one of `choices` or, without choices, of `type`."""
    name: str
    help: str
    type: type = int
    default: object = None
    choices: tuple = ()
    is_flag: bool = False

    @property
    def flag(self) -> str:
        return flag_of(self.name)

    def check(self, value):
        """The value, checked against the declaration (a one-line error names the option)."""
        if self.is_flag:
            return bool(value)
        if self.choices:
            if value not in self.choices:
                raise MCUGenError(f"{self.flag} takes {' or '.join(self.choices)} (got '{value}')")
            return value
        if not isinstance(value, self.type) or isinstance(value, bool):
            phrase = TYPE_PHRASES.get(self.type, f"a {self.type.__name__}")
            raise MCUGenError(f"{self.flag} must be {phrase} (got {value!r})")
        return value


class Target:
    name = ""
    default_board = ""
    description = ""
    codegen = ""                     # the mcugen.codegen module that renders the project
    runs_on = ("host",)              # where verify and simulate can run it: runners.RUN_PLACES
    options = ()                     # its own build options (TargetOption), none for most
    # its C harness is a host program (model_test) whose raw outputs a caller can read: explore
    # then evaluates and measures points by running the generated code itself
    host_harness = False
    product_tables = True            # may the lowering realize MACs with product tables
    packed_weights = True            # may weights be stored as packed codes
    # the exact encoders --encoder auto takes on grids of fewer than 7 bits, the first that
    # builds (lower/encoders): on a processor one multiply and one compare beat a branch per bit
    exact_encoders = ("bracket", "threshold")
    storage_first = "decoded"        # the weight storage `auto` tries first
    makefile = "Makefile"            # what verify and simulate run make on (C targets)

    def check_options(self, given: dict) -> dict:
        """The target's own options (target_options), checked against its declared `options`,
        with the defaults filled in."""
        declared = {option.name: option for option in self.options}
        unknown = [flag_of(name) for name in given if name not in declared]
        if unknown:
            takes = (f"takes {and_list(o.flag for o in self.options)}, not" if self.options
                     else "takes no option")
            raise MCUGenError(f"the {self.name} target {takes} {', '.join(unknown)}")
        return {name: option.check(given.get(name, option.default))
                for name, option in declared.items()}

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

    def report_lines(self, report) -> list:
        """This target's lines of the text report (its tables), after the per-layer table."""
        return []

    # ---- build and run (verify, simulate) ------------------------------------------------------
    def run_choices(self) -> tuple:
        """The `--on` values that select where this target's projects run."""
        return tuple(RUN_PLACES[name].on for name in self.runs_on)

    def run_place(self, on):
        """The RunPlace that `--on ON` selects for this target's projects."""
        for name in self.runs_on:
            if RUN_PLACES[name].on == on:
                return RUN_PLACES[name]
        raise MCUGenError(f"a project for the {self.name} target runs on "
                          f"{' or '.join(self.run_choices())}, not '{on}'")

    def check_run_place(self, on, schedule=None):
        self.run_place(on)

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
