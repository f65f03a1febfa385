# snirouter tasks. `just` is optional: every recipe is a plain command.

# Run the whole product locally (simulated tailscaled + 14 backends + router).
demo:
    cargo run --release -p snirouter -- demo

# The whole test suite (what CI runs).
test:
    cargo test --workspace

# Lints.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks against nginx, Caddy and HAProxy (installs them from apt if missing).
bench:
    bash bench/run.sh

# Validate a config file.
check config:
    cargo run -p snirouter -- check --config {{config}}
