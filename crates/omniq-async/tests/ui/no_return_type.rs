use omniq_async::task;

#[task]
async fn ping(host: String) {
    let _ = host;
}

fn main() {}
