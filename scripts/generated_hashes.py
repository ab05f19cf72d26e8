"""Hash every generated source file of the shared models and the examples, for each C target
and a few configurations: run at two commits and compare the JSON files to show that a
refactoring left the generated code byte-identical.

    PYTHONPATH=. python scripts/generated_hashes.py before.json   # at the old commit
    PYTHONPATH=. python scripts/generated_hashes.py after.json    # at the new one; then diff
"""
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from mcugen.pipeline import build

SHARED = Path(__file__).resolve().parents[1] / "models"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MODELS = sorted(SHARED.glob("*.onnx")) + [EXAMPLES / "digits_cnn.onnx", EXAMPLES / "act_digits.onnx"]
CONFIGS = {"w8a8": dict(), "w4a4": dict(wbits=4, abits=4), "w4a8codes": dict(wbits=4, abits=8, weight_storage="codes"),
           "uni": dict(scheme="uniform")}
out = {}
for model in MODELS:
    for target in ("host", "rv32", "gap8"):
        for cname, cfg in CONFIGS.items():
            if target == "gap8" and cfg.get("weight_storage") == "codes":
                continue
            if target == "rv32" and cname == "uni":
                continue
            with tempfile.TemporaryDirectory() as tmp:
                d = Path(tmp) / "p"
                try:
                    build(model, target=target, out=d, **cfg)
                except Exception as e:
                    out[f"{Path(model).stem}/{target}/{cname}"] = f"error {e}"
                    continue
                for f in sorted(d.rglob("*")):
                    if f.is_file() and f.name not in ("report.json", "schedule.json", "constants.npz"):
                        out[f"{Path(model).stem}/{target}/{cname}/{f.relative_to(d)}"] = hashlib.sha256(f.read_bytes()).hexdigest()
            print(model, target, cname, flush=True, file=sys.stderr)
Path(sys.argv[1]).write_text(json.dumps(out, indent=0, sort_keys=True))
