"""Jinja2 with StrictUndefined over the Schedule. The filters only format (C literals and
types); every number comes from the Schedule."""
from __future__ import annotations

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from mcugen.ir.schedule import CTYPES
from mcugen.resources import data_dir


def c_array(values, per_line=16) -> str:
    flat = [str(int(v)) for v in np.asarray(values).reshape(-1)]
    lines = [", ".join(flat[i:i + per_line]) for i in range(0, len(flat), per_line)]
    return ",\n    ".join(lines)


def c_double(value) -> str:
    return repr(float(value))


def c_doubles(values, per_line=4) -> str:
    flat = [repr(float(v)) for v in np.asarray(values).reshape(-1)]
    lines = [", ".join(flat[i:i + per_line]) for i in range(0, len(flat), per_line)]
    return ",\n    ".join(lines)


def ctype_of(value) -> str:
    """A numpy array or a dtype name -> its C type."""
    name = value if isinstance(value, str) else str(value.dtype)
    return CTYPES[name]


def environment(target: str) -> Environment:
    # the target's own templates first, then the snippets every target shares
    templates = data_dir("templates")
    env = Environment(loader=FileSystemLoader([str(templates / target), str(templates / "common")]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters.update(c_array=c_array, c_double=c_double, c_doubles=c_doubles, ctype=ctype_of)
    return env


def render_all(target: str, files: dict, context: dict) -> dict:
    """{output name: template name} -> {output name: text}."""
    env = environment(target)
    return {out: env.get_template(tpl).render(**context) for out, tpl in files.items()}
