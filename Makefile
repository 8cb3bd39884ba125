# Two commands for a fresh machine: `make run` (the service) and `make test` (the checks).
# Both install the speech model first if it is missing; `make test` also installs the servers
# and browser its tests run (scripts/install-test-deps.sh) and the page's test tools (npm ci).

MODEL_DIR ?= $(or $(EARSHOT_MODEL_DIR),$(HOME)/.cache/earshot/models/whisper-tiny.en)
export EARSHOT_MODEL_DIR := $(MODEL_DIR)
CARGO ?= cargo

.PHONY: run test model lint bench test-deps fuzz

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

# Each fuzz target for FUZZ_SECS seconds (libFuzzer, nightly, cargo install cargo-fuzz); not part of
# `make test`. No sanitizer: what the targets reach is safe Rust (the model's unsafe code is not
# among it), where AddressSanitizer would halve the speed for nothing; debug assertions and
# overflow checks are on. New inputs go to fuzz/corpus/TARGET (ignored by git), crashes to
# fuzz/artifacts/TARGET; fuzz/seeds and fuzz/dicts hold starting inputs and keywords.
FUZZ_SECS ?= 300
FUZZ_TARGETS ?= control_message query_params pcm_decode engine_requests store_records
FUZZ_FLAGS ?= --sanitizer none --debug-assertions

fuzz:
	cd fuzz && for target in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$target && \
		$(CARGO) +nightly fuzz run $(FUZZ_FLAGS) $$target corpus/$$target $$(test -d seeds/$$target && echo seeds/$$target) -- \
			-max_total_time=$(FUZZ_SECS) $$(test -f dicts/$$target.dict && echo -dict=dicts/$$target.dict) \
			|| exit 1; \
	done
