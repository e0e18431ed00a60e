#!/bin/sh
# Wheels of what benchmarks/gpu_throughput.py needs beyond a bare GPU image (torch, timm, PyYAML): pydantic, which
# the method files import for their config sections. Downloads the versions installed here, for CPython 3.12 on
# x86-64 Linux, into .whl/ (ignored by git). On the GPU machine, before the benchmark:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
set -e
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
  "pydantic==$(version pydantic)" "pydantic_core==$(version pydantic_core)" "annotated_types==$(version annotated_types)" \
  "typing_inspection==$(version typing_inspection)" "typing_extensions==$(version typing_extensions)"
ls .whl
