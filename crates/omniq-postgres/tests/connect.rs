//! Connecting: errors never show the URL's password, whatever characters it holds. None of
//! these needs a server.

use omniq_postgres::PgBackend;

#[tokio::test]
async fn passwords_with_url_delimiters_stay_hidden() {
    for password in ["Zq/9kXw7", "Zq?9kXw7", "Zq#9kXw7", "Zq/9k?X#w7"] {
        // Nothing listens on port 1.
        let url = format!("postgres://app:{password}@127.0.0.1:1/omniq");
        let err = PgBackend::connect(&url).await.expect_err("no server");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("9k"), "{url}: {shown}");
    }
}
