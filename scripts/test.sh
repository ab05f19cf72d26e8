#!/usr/bin/env bash
# Install everything the tests need (Debian packages for the compilers, the package with its
# test extras), then run the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v cc >/dev/null || missing+=(gcc)
command -v make >/dev/null || missing+=(make)
command -v g++ >/dev/null || missing+=(g++)      # the hls target's C simulation
# the RV32 target: cross compiler, picolibc and qemu (Debian packages)
command -v riscv64-unknown-elf-gcc >/dev/null || missing+=(gcc-riscv64-unknown-elf)
[ -f /usr/lib/picolibc/riscv64-unknown-elf/picolibc.specs ] || missing+=(picolibc-riscv64-unknown-elf)
command -v qemu-system-riscv32 >/dev/null || missing+=(qemu-system-misc)
# the cv32e40p board: the CORE-V CV32E40P RTL (a PyPI package) simulated by Verilator
command -v verilator >/dev/null || missing+=(verilator)
# explore's index.html, opened in a real headless browser (driven by playwright, which
# downloads no browser of its own)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

python3 -m pip install -q --disable-pip-version-check -e ".[test]"
# every skip fails the run (tests/conftest.py); MCUGEN_ALLOW_SKIPS=1 accepts them
export MCUGEN_SKIPS=fail
# one pytest-xdist worker a core (MCUGEN_TEST_WORKERS=N to choose; 0 runs serially). loadgroup:
# tests are handed out one by one, except those sharing a module-scoped fixture or memo, which
# go to one worker together (tests/conftest.py). Arguments given here come after, so they win
# (`-n 0`, `--dist load`, ...).
exec python3 -m pytest -q -rs -n "${MCUGEN_TEST_WORKERS:-auto}" --dist loadgroup "$@"
