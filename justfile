# Short names for the project's commands. `just --list` shows them.

# Run the quickstart on the embedded SQLite default.
quickstart:
    cargo run --example quickstart

# fmt check, clippy -D warnings, docs, and every test (services required).
ci:
    cargo xtask ci

# Every test.
test:
    cargo test --workspace --all-features

# fmt check, clippy and docs, no tests.
check:
    cargo xtask check

# Format the workspace.
fmt:
    cargo fmt --all

# Start the local backend services that are down.
services:
    cargo xtask services
