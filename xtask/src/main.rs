//! Project automation: `cargo xtask ci | check | fmt | test | services`.

mod bench;

use std::process::Command;

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <ci|check|features|fmt|test|services|bench [--quick]>
  ci        fmt check, clippy -D warnings, docs -D warnings, each backend feature alone and
            none, every test (services required)
  check     fmt check, clippy and docs, no tests
  features  build the facades with no backend feature and with each one alone
  fmt       format the workspace
  test      every test (services required)
  services  start the local backend services that are down (Debian service commands)
  bench     run the benchmark matrix and write docs/benchmarks.md";

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "ci" => {
            check()?;
            features()?;
            test()
        }
        "check" => check(),
        "features" => features(),
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

/// The facades' backend features: each must build alone, and the build with none must too
/// (a feature-gated item used without its gate shows up only in these builds, never in the
/// all-features one).
const BACKEND_FEATURES: &[&str] = &[
    "memory", "sqlite", "postgres", "mysql", "redis", "nats", "file", "amqp", "sqs",
    // Not a backend, but a feature that changes what the worker builds.
    "otel",
];

fn features() -> Result<()> {
    // `omniq` forwards each feature to `omniq-async`, so checking it checks both facades.
    // Clippy's `-D warnings` reaches the workspace crates only, so dependencies are not
    // rebuilt for it; an import unused without some feature fails here.
    let no_features = ["clippy", "--package", "omniq", "--no-default-features"];
    cargo(&[&no_features[..], &["--", "-D", "warnings"]].concat(), &[])?;
    for feature in BACKEND_FEATURES {
        cargo(
            &[
                &no_features[..],
                &["--features", feature, "--", "-D", "warnings"],
            ]
            .concat(),
            &[],
        )?;
    }
    Ok(())
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
