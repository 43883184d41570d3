# The two commands: `make demo` (a whole dispatch on the local emulator) and `make test`.
# Both install what they need: the pinned AWS emulator into a project-local virtualenv.

PYTHON ?= python3
VENV := .venv
# The pinned Python tools: the AWS emulator and the template linter (cargo-lambda, for
# `make package` only, is installed by that target).
PY_TOOLS := moto[server]==5.2.5 cfn-lint==1.58.0
TOOLS := $(VENV)/tools.installed
# Every Lambda function package, as deployed by infra/template.json.
FUNCTIONS := $(notdir $(wildcard functions/*))
CARGO_LAMBDA_VERSION := 1.9.2

.PHONY: demo up token test bench venv lint package clean fuzz iam-report

demo: $(TOOLS)
	cargo run --quiet -p local -- demo

up: $(TOOLS)
	cargo run --quiet -p local -- up $(PORT)

# A token the API of `make up` accepts: make token WHO=ann ROLES=MASSDISPATCH,MASSDISPATCHSEND
token:
	@cargo run --quiet -p local -- token $(or $(WHO),operator) $(or $(ROLES),MASSDISPATCH$(comma)MASSDISPATCHSEND) $(MINUTES)

comma := ,

test: $(TOOLS)
	rm -rf .local/iam
	cargo test --workspace -- --test-threads=1

# Each function role's grants against what the last `make test` (or `make demo`) used.
iam-report:
	cargo run --quiet -p local -- iam-report

bench: $(TOOLS)
	cargo bench --bench validation
	cargo bench --bench letters
	cargo bench --bench coldstart
	cargo bench --bench dispatch

venv: $(TOOLS)

$(TOOLS): Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(foreach p,$(PY_TOOLS),'$(p)')
	echo '$(PY_TOOLS)' > $@

# Zips for Lambda (provided.al2023, arm64) in dist/<function>.zip, as the template's
# ArtifactBucket/ArtifactPrefix expect them. cargo-lambda brings zig as its cross linker.
package: $(TOOLS)
	rustup target add aarch64-unknown-linux-gnu
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'cargo-lambda==$(CARGO_LAMBDA_VERSION)'
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda build --release --arm64 --output-format zip $(foreach f,$(FUNCTIONS),-p $(f))
	mkdir -p dist
	for f in $(FUNCTIONS); do cp target/lambda/$$f/bootstrap.zip dist/$$f.zip; done
	ls -l dist

# Fuzzing on the stable toolchain: cargo-fuzz with RUSTC_BOOTSTRAP=1 and no sanitizer (a
# nightly toolchain cannot be fetched here). make fuzz TARGET=list|template|events FUZZ_SECONDS=600
# New inputs go to fuzz/corpus/<target> (ignored by git); the committed seeds are only read;
# a crash is saved in fuzz/artifacts/<target>/.
CARGO_FUZZ_VERSION := 0.13.2
TARGET ?= list
FUZZ_SECONDS ?= 600
FUZZ_SEEDS_list := ../tests/corpus/lists
FUZZ_SEEDS_events := ../events ../tests/corpus/events
fuzz:
	cargo fuzz --version 2>/dev/null | grep -q '$(CARGO_FUZZ_VERSION)' || cargo install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION)
	mkdir -p fuzz/corpus/$(TARGET)
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $(TARGET) --sanitizer none -O corpus/$(TARGET) $(FUZZ_SEEDS_$(TARGET)) -- -max_len=65536 -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

clean:
	rm -rf $(VENV) .local dist
	cargo clean
