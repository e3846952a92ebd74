use std::rc::Rc;

use omniq_async::{TaskError, task};

#[task]
async fn hold(text: String) -> Result<usize, TaskError> {
    let shared = Rc::new(text);
    tokio::task::yield_now().await;
    Ok(shared.len())
}

fn main() {}
