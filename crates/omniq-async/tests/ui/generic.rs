use omniq_async::{TaskError, task};

#[task]
async fn echo<T: Clone>(value: T) -> Result<T, TaskError> {
    Ok(value)
}

fn main() {}
