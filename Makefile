# Everything runs in a local virtual environment, made on first use from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install sweep test bench bench-gpu bench-cluster bench-selection bench-faults

$(BIN)/selfsup: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/selfsup

# The main job: a label-free VICReg sweep on MNIST-1D (8 trials), then `selfsup ui` to browse it.
sweep: install
	$(BIN)/selfsup sweep examples/mnist1d_vicreg_sweep.yaml

# The test suite: unit tests and integration tests on a real local Ray cluster and real MLflow.
test: install
	$(BIN)/python -m pytest

# Platform overhead of a sweep: share of each trial's wall time spent in training steps.
bench: install
	$(BIN)/python benchmarks/sweep_overhead.py

# Step throughput of every method at its paper configuration on one GPU: compiled engine vs eager bf16 vs eager fp32.
bench-gpu: install
	$(BIN)/python benchmarks/gpu_throughput.py

# The main sweep on a 3-node Ray cluster (ray job submit, MLflow on PostgreSQL, S3 checkpoints) vs the embedded default.
bench-cluster: install
	$(BIN)/python benchmarks/cluster_sweep.py

# The label-free selection benchmark: 12 cells (5 methods x 4 datasets) x 12 trials; docs/selection.md.
bench-selection: install
	$(BIN)/python benchmarks/selection.py

# Faults, measured: 20 runs whose Ray Train worker is killed mid-epoch, 6 with a damaged checkpoint too;
# sweeps whose driver is killed (then resumed), whose tracking server goes down 30 s; leaks of a 30-trial sweep.
bench-faults: install
	$(BIN)/python benchmarks/faults.py
