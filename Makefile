# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: install demo demo-web test bench bench-peers soak fuzz clean

$(STAMP): pyproject.toml scripts/install.sh clients/web/package-lock.json
	bash scripts/install.sh $(PY) $(VENV)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edge-fl simulate --config examples/configs/keyboard_demo.json --out $(OUT)/demo --fresh

# the keyboard demo with a browser tab as the device: open the URL it prints
demo-web: $(STAMP)
	$(BIN)/python examples/web_demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

# the same FedAvg task in our simulator and in Flower 1.41 (installed into its own venv
# under build/, never into the product's): docs/benchmarks-peers.md
PEERS_VENV := build/peers-venv
$(PEERS_VENV)/.installed: bench/peers/install_flower.sh
	bash bench/peers/install_flower.sh $(PY) $(PEERS_VENV)
	touch $@

bench-peers: $(STAMP) $(PEERS_VENV)/.installed
	$(BIN)/python -m bench.peers.compare --flower-python $(PEERS_VENV)/bin/python

# longer runs than `make test` holds: kill -9 at many points, and coverage-guided fuzzing
soak: $(STAMP)
	$(BIN)/python -m pytest -q -s tests/aggregator/test_crash_recovery.py tests/aggregator/test_network_faults.py --kill-points 5,15,30,60,90,120,160,200

fuzz: $(STAMP)
	$(BIN)/python fuzz/fuzz_decoder.py -max_total_time=$${FUZZ_SECONDS:-300} -print_final_stats=1


clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .hypothesis
