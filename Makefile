# The front door: `make run` starts the server, `make test` runs every test.
# Both first install the system packages that are missing (see
# scripts/install-deps.sh: pkg-config, libopus-dev, libasound2-dev, cmake,
# postgresql and nats-server (for the store and cluster tests) with
# apt-get; pytest and mypy with pip) and build
# the library with speaker/microphone support (the `device` feature).
# `make run-musl` starts chinwagd built against musl (see below).

CARGO ?= cargo
FEATURES ?= --features chinwag/device
# The musl build of chinwagd (`make run-musl`): static, and an idle
# connection costs half the memory it does with glibc (README, "idle
# memory"; docs/operations.md, "The musl build").
MUSL_TARGET = x86_64-unknown-linux-musl

.PHONY: all deps build run test deps-musl build-musl run-musl test-musl
all: build

deps:
	scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace $(FEATURES)

# chinwagd on its embedded default: ./chinwag.db, listeners on 127.0.0.1.
run: deps
	$(CARGO) run --release -p chinwagd

# The second line: what only an optimised chinwagd shows (an idle
# connection thread's stack depth, issue 13), checked on the release build.
test: deps
	$(CARGO) test --workspace $(FEATURES)
	$(CARGO) test --release -p chinwagd --test process an_idle_chatos_thread_holds_little_more_stack_than_a_parked_one

# chinwagd built against musl, at target/x86_64-unknown-linux-musl/release/
# chinwagd. Its own deps step installs only musl-tools and Rust's musl
# target (`scripts/install-deps.sh --musl`); `make run` and `make test`
# never need them.
deps-musl:
	scripts/install-deps.sh --musl

build-musl: deps-musl
	$(CARGO) build --release -p chinwagd --target $(MUSL_TARGET)

run-musl: deps-musl
	$(CARGO) run --release -p chinwagd --target $(MUSL_TARGET)

# What only a musl build shows, optimised as it ships: an idle connection
# thread's stack within one page (tests/process.rs) and the delivery
# queues' buffers (net.rs). `make test` covers the rest with glibc.
test-musl: deps-musl
	$(CARGO) test --release -p chinwagd --target $(MUSL_TARGET) --lib --test process
