//! Project automation: `cargo xtask ci | check | fmt | test | services`.

mod bench;

use std::process::Command;

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <ci|check|fmt|test|services|bench [--quick]>
  ci        fmt check, clippy -D warnings, docs -D warnings, every test (services required)
  check     fmt check, clippy and docs, no tests
  fmt       format the workspace
  test      every test (services required)
  services  start the local backend services that are down (Debian service commands)
  bench     run the benchmark matrix and write docs/benchmarks.md";

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "ci" => {
            check()?;
            test()
        }
        "check" => check(),
        "fmt" => cargo(&["fmt", "--all"], &[]),
        "test" => test(),
        "services" => services(),
        "bench" => bench::run(std::env::args().any(|a| a == "--quick")),
        _ => bail!("{USAGE}"),
    }
}

fn check() -> Result<()> {
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(
        &["doc", "--workspace", "--no-deps", "--all-features"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )
}

fn test() -> Result<()> {
    cargo(
        &["test", "--workspace", "--all-features"],
        &[("OMNIQ_TEST_REQUIRE_SERVICES", "1")],
    )
}

fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn services() -> Result<()> {
    let status = Command::new("bash")
        .arg(".ci/services")
        .status()
        .context("cannot run .ci/services")?;
    if !status.success() {
        bail!(".ci/services failed ({status})");
    }
    Ok(())
}
