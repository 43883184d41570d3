# The two commands: `make demo` (a whole dispatch on the local emulator) and `make test`.
# Both install what they need: the pinned AWS emulator into a project-local virtualenv.

PYTHON ?= python3
VENV := .venv
MOTO := $(VENV)/bin/moto_server
MOTO_VERSION := 5.2.5

.PHONY: demo up test bench venv lint clean

demo: $(MOTO)
	cargo run --quiet -p local -- demo

up: $(MOTO)
	cargo run --quiet -p local -- up $(PORT)

test: $(MOTO)
	cargo test --workspace -- --test-threads=1

bench: $(MOTO)
	cargo bench --bench dispatch

venv: $(MOTO)

$(MOTO):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==$(MOTO_VERSION)'

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

clean:
	rm -rf $(VENV) .local
	cargo clean
