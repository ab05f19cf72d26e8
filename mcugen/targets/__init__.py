"""The registered targets (mcugen/targets/base.py is the interface). The CLI's --target choices,
the pipeline's dispatch and verify's build and run all come from this list."""
from __future__ import annotations

from mcugen.errors import MCUGenError
from mcugen.targets.c99 import HostTarget, Rv32Target
from mcugen.targets.gap8 import Gap8Target
from mcugen.targets.hls import HlsTarget

TARGETS = {t.name: t for t in (HostTarget(), Rv32Target(), Gap8Target(), HlsTarget())}


def get_target(name: str):
    if name not in TARGETS:
        raise MCUGenError(f"unknown target '{name}'; known: {', '.join(TARGETS)}")
    return TARGETS[name]


def target_of(schedule):
    """The target a generated project was built for (its schedule.json says)."""
    return get_target(schedule.meta.get("target", "host"))
