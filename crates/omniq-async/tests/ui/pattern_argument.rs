use omniq_async::{TaskError, task};

#[task]
async fn add((a, b): (i64, i64)) -> Result<i64, TaskError> {
    Ok(a + b)
}

fn main() {}
