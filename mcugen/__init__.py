"""mcugen: power-quantized, integer-only code generation from ONNX, bit-exact against its reference."""
from mcugen.errors import MCUGenError
from mcugen.version import __version__


def build(model, target="host", out=None, **options):
    """Quantize, lower and (when `out` is given) emit a project; returns a Project."""
    # deferred: importing any submodule runs this file first; all of mcugen loads on a build
    from mcugen.pipeline import build as _build
    return _build(model, target=target, out=out, **options)


__all__ = ["build", "MCUGenError", "__version__"]
