use omniq_async::task;

#[task]
async fn count(text: String) -> usize {
    text.len()
}

fn main() {}
