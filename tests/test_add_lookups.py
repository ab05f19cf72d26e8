"""The Add's lookups on the C targets (host, rv32; codegen/add_plan.py): the fold, the pair table,
and the pair table read through byte maps when both inputs store levels. Each is bit-exact on
the host under ASan + UBSan, in its C loop on RV32 under qemu, and in its CORE-V block on the
CV32E40P RTL; the maps hold exactly the values the inputs can hold."""
import numpy as np
import pytest

import mcugen
from conftest import require_tool
from mcugen.codegen.add_plan import c_add_plan
from mcugen.ops import step_op
from mcugen.reference.interpreter import quantize_input, run_codes
from mcugen.verify import compare, verify_inputs
from test_gap8_kernels import residual_model

# (scheme, wbits, abits, Add followed by Relu, activation storage) -> (lookup, its variant: the
# fold's fold_table, the pair's pair_map)
LOOKUPS = {("uniform", 8, 8, True, "codes"): ("fold", 0),      # a uniform grid: the plain clamp
           ("power", 4, 8, True, "codes"): ("fold", 1),        # a power grid: the encoder's table
           ("power", 4, 4, False, "codes"): ("pair", 0),       # 4-bit codes index the pair table
           ("power", 4, 4, True, "levels"): ("pair", 1)}       # 4-bit levels: through the maps


def build(tmp_path, config, target="host", out=None):
    scheme, wbits, abits, relu, storage = config
    options = dict(scheme=scheme, wbits=wbits, abits=abits, input_range=(-2.0, 2.0),
                   first_last_bits="same", act_storage=storage)
    if storage == "levels":
        options.update(lanes="8", act_grid="power")
    return mcugen.build(str(residual_model(tmp_path, relu)), target=target, out=out, **options)


def add_step(project):
    return next(s for s in project.schedule.steps if s.kind == "add")


@pytest.mark.parametrize("config", list(LOOKUPS))
def test_add_lookups_are_bit_exact_on_the_host_under_the_sanitizers(config, tmp_path, host_cc):
    """Each lookup takes the Add's tables' place in model.c; 105 elements, so the loop of four
    ends in a remainder; verify's inputs saturate the codes at both ends."""
    project = build(tmp_path, config, out=tmp_path / "host")
    step = add_step(project)
    plan = project.plan[step.name]
    variant = plan["fold_table"] if plan["add_kernel"] == "fold" else plan["pair_map"]
    assert (plan["add_kernel"], variant) == LOOKUPS[config]
    source = (tmp_path / "host" / "model.c").read_text()
    assert f"{step.name}_table_a" not in source and f"{step.name}_{plan['add_kernel']}" in source
    result = compare(tmp_path / "host", project.schedule, verify_inputs(project.schedule, 200, seed=3),
                     sanitize=True)
    assert result.mismatches == 0, result.first


def test_the_maps_hold_a_row_for_each_value_an_input_can_hold(tmp_path):
    """Add.lower lists the levels each input stores (a_values, b_values); every value the
    reference writes to the Add's inputs is one of them, and the maps send the listed values,
    and only those, to distinct rows and columns of the pair table."""
    project = build(tmp_path, ("power", 4, 4, True, "levels"))
    step, schedule = add_step(project), project.schedule
    _, traced = run_codes(schedule, quantize_input(schedule, verify_inputs(schedule, 300, seed=4)),
                          trace=True)
    producers = {s.output: s.name for s in schedule.steps}
    plan = c_add_plan(schedule, step)
    maps = {"a": plan["lookup_consts"]["pair_rows"], "b": plan["lookup_consts"]["pair_cols"]}
    for key, buffer in zip("ab", step.inputs):
        listed = np.asarray(step.params[f"{key}_values"])
        held = np.unique(traced[producers[buffer]])
        assert np.isin(held, listed).all() and len(held) > len(listed) // 2
        entries = listed + step.params[f"{key}_offset"]
        used = maps[key][entries].astype(int)
        assert len(np.unique(used)) == len(listed)
        assert not np.delete(maps[key], entries).any()           # no other value has a row
    assert plan["pair_stride"] * len(step.params["a_values"]) == plan["lookup_consts"]["pair"].size


def test_the_reference_refuses_an_input_value_its_add_does_not_list(tmp_path):
    """What the maps rely on, checked on every reference run: a stored value outside
    a_values (here one between two levels) stops the run and names the step."""
    project = build(tmp_path, ("power", 4, 4, True, "levels"))
    step = add_step(project)
    shapes = [(1, *shape) for shape in step.params["in_shapes"]]
    a, b = step.params["a_values"], step.params["b_values"]
    held = [np.full(shapes[0], a[1]), np.full(shapes[1], b[1])]
    assert step_op("add").run_int(step, held).shape[0] == 1
    held[0].flat[7] = a[1] + 1
    assert a[1] + 1 not in a
    with pytest.raises(AssertionError, match=f"{step.name}: its input holds \\[{a[1] + 1}\\]"):
        step_op("add").run_int(step, held)


def test_codes_storage_lists_no_values_and_needs_no_maps(tmp_path):
    project = build(tmp_path, ("power", 4, 4, False, "codes"))
    step = add_step(project)
    assert "a_values" not in step.params and "b_values" not in step.params
    assert "pair_rows" not in project.plan[step.name]["lookup_consts"]


@pytest.mark.parametrize("config", [("uniform", 8, 8, True, "codes"), ("power", 4, 8, True, "codes"),
                                    ("power", 4, 4, True, "levels")])
def test_add_lookups_are_bit_exact_on_rv32_and_in_their_corev_blocks(config, tmp_path, host_cc):
    """The C loop on RV32IMC under qemu (many inputs); the CORE-V block (cv.setup's hardware
    loop, register-offset loads) on the RTL (a few)."""
    for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32", "g++", "verilator"):
        require_tool(tool)
    out = tmp_path / "rv32"
    project = build(tmp_path, config, target="rv32", out=out)
    kernel = project.plan[add_step(project).name]["add_kernel"]
    assert f"_{kernel}4(" in (out / "model.c").read_text()
    x = verify_inputs(project.schedule, 40, seed=8)
    for place, n in (("qemu", 40), ("rtl", 2)):
        result = compare(out, project.schedule, x[:n], on=place)
        assert result.n >= n and result.mismatches == 0, (place, result.first)
