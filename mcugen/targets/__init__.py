"""The registered targets (mcugen/targets/base.py is the interface). The CLI's --target choices
and target options, the pipeline's dispatch, verify's build and run and the report's lines all
come from this list."""
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


def options_by_name(targets) -> dict:
    """Option name -> [(target name, its TargetOption)] over `targets`, in declaration order.
    A name is one `mcugen build` option, so the targets sharing it must declare the same kind
    of value (type, choices, flag); each keeps its own default and checks."""
    union = {}
    for target in targets:
        for option in target.options:
            takers = union.setdefault(option.name, [])
            if takers and _kind(takers[0][1]) != _kind(option):
                raise MCUGenError(f"the {takers[0][0]} and {target.name} targets declare "
                                  f"{option.flag} differently")
            takers.append((target.name, option))
    return union


def _kind(option):
    return option.type, option.choices, option.is_flag
