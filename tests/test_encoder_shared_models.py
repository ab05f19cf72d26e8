"""Every shared model with every encoder that applies (threshold, lut, pade; auto is the default
the other tests build with), power W4A8, bit-exact on the host, on RV32 under qemu and in the
GAP8 emulation. qemu and the emulation run few inputs: the host runs many."""
import pytest

import mcugen
from conftest import MODELS, require_tool, shared_model
from mcugen.verify import compare, verify_inputs

ENCODERS = ("threshold", "lut", "pade")


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("name", list(MODELS))
def test_shared_model_is_bit_exact_with_each_encoder_on_every_target(name, encoder, tmp_path, host_cc):
    for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32"):
        require_tool(tool)
    options = dict(wbits=4, abits=8, input_range=MODELS[name], encoder=encoder)
    host = mcugen.build(shared_model(name), target="host", out=tmp_path / "host", **options)
    used = {s.params["encoder"] for s in host.schedule.steps if "encoder" in s.params}
    assert used == {encoder}
    x = verify_inputs(host.schedule, 40, seed=8)
    assert compare(tmp_path / "host", host.schedule, x).mismatches == 0
    rv32 = mcugen.build(shared_model(name), target="rv32", out=tmp_path / "rv32", **options)
    result = compare(tmp_path / "rv32", rv32.schedule, x[:2], on="qemu")
    assert result.n == 2 and result.mismatches == 0, result.first
    gap8 = mcugen.build(shared_model(name), target="gap8", out=tmp_path / "gap8", **options)
    result = compare(tmp_path / "gap8", gap8.schedule, x[:3])
    assert result.mismatches == 0, result.first
