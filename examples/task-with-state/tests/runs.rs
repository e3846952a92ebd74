//! The example runs and says what it promises: a stored signup, and the sqlx error of the
//! second task after its two attempts.

#[test]
fn the_example_runs() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_example-task-with-state"))
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("signup stored with id 1"), "{stdout}");
    assert!(
        stdout.contains("count_invoices failed after 2 attempts: error returned from database"),
        "{stdout}"
    );
    assert!(stdout.contains("no such table: invoices"), "{stdout}");
}
