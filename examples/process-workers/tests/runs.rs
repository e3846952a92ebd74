//! The example runs: the primes are counted in child processes and the runaway task is
//! killed at its timeout.

#[test]
fn the_example_runs() {
    let dir = std::env::temp_dir().join(format!("omniq-process-example-{}", std::process::id()));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_example-process-workers"))
        .env("OMNIQ_BASE_DIR", &dir)
        .output()
        .expect("run the example");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("2262 primes below 20000"), "{stdout}");
    assert!(
        stdout.contains("runaway task: timeout: attempt ran past its timeout"),
        "{stdout}"
    );
    let parent = stdout
        .lines()
        .find_map(|line| line.strip_prefix("parent process "))
        .expect("the parent's pid");
    assert!(
        !stdout.contains(&format!("(child process {parent})")),
        "a task ran in the parent: {stdout}"
    );
}
