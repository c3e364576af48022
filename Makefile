# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: install demo demo-web lint test test-fast bench soak fuzz clean

$(STAMP): pyproject.toml scripts/install.sh clients/web/package-lock.json
	bash scripts/install.sh $(PY) $(VENV)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edge-fl simulate --config examples/configs/keyboard_demo.json --out $(OUT)/demo --fresh

# the keyboard demo with a browser tab as the device: open the URL it prints
demo-web: $(STAMP)
	$(BIN)/python examples/web_demo.py

# ruff lint and format check (settings in pyproject.toml); `make test` runs it first
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q tests

# the fast tier (under a minute on 2 quiet cores): the wire format and its vectors,
# the device's pure parts, the aggregator's maths, coordinator and settings, and the
# import rules; no server, no training. `make test` runs everything.
FAST_TESTS := tests/edge_sdk/protocol tests/vectors tests/test_import_cycles.py \
	tests/edge_sdk/test_batching.py tests/edge_sdk/test_vocabulary.py \
	tests/edge_sdk/test_example_store.py tests/edge_sdk/test_import_boundaries.py \
	tests/aggregator/test_coordinator.py tests/aggregator/test_numerics.py \
	tests/aggregator/test_numerics_of_parts.py tests/aggregator/test_settings.py \
	tests/aggregator/test_import_boundaries.py tests/test_readme.py

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(FAST_TESTS)

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

# longer runs than `make test` holds: kill -9 at many points, and coverage-guided fuzzing
soak: $(STAMP)
	$(BIN)/python -m pytest -q -s tests/aggregator/test_crash_recovery.py tests/aggregator/test_network_faults.py --kill-points 5,15,30,60,90,120,160,200

fuzz: $(STAMP)
	$(BIN)/python fuzz/fuzz_decoder.py -max_total_time=$${FUZZ_SECONDS:-300} -print_final_stats=1


clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .hypothesis
