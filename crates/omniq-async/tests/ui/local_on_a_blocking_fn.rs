use omniq_async::{TaskError, task};

#[task(local)]
fn count(text: String) -> Result<usize, TaskError> {
    Ok(text.len())
}

fn main() {}
