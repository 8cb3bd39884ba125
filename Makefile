# Two commands for a fresh machine: `make run` (the service) and `make test` (the checks).
# Both install the speech model first if it is missing; `make test` also installs the servers
# and browser its tests run (scripts/install-test-deps.sh) and the page's test tools (npm ci).

MODEL_DIR ?= $(or $(EARSHOT_MODEL_DIR),$(HOME)/.cache/earshot/models/whisper-tiny.en)
export EARSHOT_MODEL_DIR := $(MODEL_DIR)
CARGO ?= cargo

.PHONY: run test model lint bench test-deps

model:
	@test -f "$(MODEL_DIR)/model.safetensors" || \
		$(CARGO) run --release -p earshot-cli -- model fetch --model-dir "$(MODEL_DIR)"

run: model
	$(CARGO) run --release -p earshot-cli -- serve

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

test-deps:
	@scripts/install-test-deps.sh

test: model test-deps lint
	$(CARGO) test --release --workspace
	cd web && npm ci --no-audit --no-fund && npm test && npm run test:browser

bench: model
	$(CARGO) run --release -p earshot-cli --example engine_bench -- --streams 1,2,4,8
