# The two set-up commands: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/hdf5-to-records
DEMO_DIR ?= demo

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,beam,dask]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m hdf5_to_records.samples $(DEMO_DIR)/sample.h5 --rows 300
	$(CLI) inspect $(DEMO_DIR)/sample.h5
	$(CLI) convert --config configs/demo.yaml --overwrite
	$(CLI) verify $(DEMO_DIR)/records --deep
	$(CLI) info $(DEMO_DIR)/records
	$(CLI) bench $(DEMO_DIR)/records --split train --batch-size 32 --epochs 3
	$(CLI) convert --config configs/demo.yaml --mode index --no-shuffle --output $(DEMO_DIR)/index --overwrite
	$(CLI) verify $(DEMO_DIR)/index --deep
	$(CLI) info $(DEMO_DIR)/index
	$(CLI) bench $(DEMO_DIR)/index --split train --batch-size 32 --epochs 3
	$(CLI) convert --config configs/demo.yaml --output $(DEMO_DIR)/tasks --overwrite --num-tasks 2 --task-index 0
	$(CLI) convert --config configs/demo.yaml --output $(DEMO_DIR)/tasks --overwrite --num-tasks 2 --task-index 1
	$(CLI) finalize $(DEMO_DIR)/tasks
	$(CLI) verify $(DEMO_DIR)/tasks

test: $(VENV)/.installed
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check hdf5_to_records reader tests benchmarks
	$(VENV)/bin/ruff format --check hdf5_to_records reader tests benchmarks

bench: $(VENV)/.installed
	$(PY) benchmarks/convert_bench.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) benchmarks/_work
