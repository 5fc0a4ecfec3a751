# The front door: `make run` starts the server, `make test` runs every test.
# Both first install the system packages that are missing (see
# scripts/install-deps.sh: pkg-config, libopus-dev, libasound2-dev, cmake,
# postgresql and nats-server (for the store and cluster tests) with
# apt-get; pytest and mypy with pip) and build
# the library with speaker/microphone support (the `device` feature).

CARGO ?= cargo
FEATURES ?= --features chinwag/device

.PHONY: all deps build run test
all: build

deps:
	scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace $(FEATURES)

# chinwagd on its embedded default: ./chinwag.db, listeners on 127.0.0.1.
run: deps
	$(CARGO) run --release -p chinwagd

test: deps
	$(CARGO) test --workspace $(FEATURES)
