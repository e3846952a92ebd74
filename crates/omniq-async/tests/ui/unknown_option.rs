use omniq_async::{TaskError, task};

#[task(qeue = "images")]
async fn resize(path: String) -> Result<String, TaskError> {
    Ok(path)
}

fn main() {}
