//! The example runs and says what it promises: the payload sizes, the invoice of a customer
//! loaded by key, and the readable, permanent failure of a deleted customer's task.

#[test]
fn the_example_runs() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_example-model-refs"))
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sizes = stdout
        .lines()
        .find(|line| line.starts_with("payload with the whole customer: "))
        .unwrap_or_else(|| panic!("no sizes: {stdout}"));
    let numbers: Vec<usize> = sizes
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        matches!(numbers.as_slice(), [.., whole, by_key] if by_key * 10 < *whole),
        "{sizes}"
    );
    assert!(
        stdout.contains("invoice of 12.50 sent to Ada Lovelace <ada@example.com>"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "failed for good after 1 of 3 attempts: customer 2 does not exist \
             (deleted, or not visible to the worker)"
        ),
        "{stdout}"
    );
}
