//! Connecting: errors are typed, and never show the URL's password.

mod common;

use omniq_mysql::MySqlBackend;
use omniq_storage::StoreErrorKind;

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_the_password_stays_hidden() {
    // Nothing listens on port 1.
    let err = MySqlBackend::connect("mysql://app:hunter2secret@127.0.0.1:1/omniq")
        .await
        .expect_err("no server");
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
    assert!(!err.to_string().contains("hunter2secret"), "{err}");
}

#[tokio::test]
async fn other_schemes_and_urls_without_a_database_are_invalid() {
    for url in ["postgres://h/db", "mysql://root@127.0.0.1:3306"] {
        let err = MySqlBackend::connect(url).await.expect_err(url);
        assert_eq!(err.kind(), StoreErrorKind::Invalid, "{url}: {err}");
    }
}

#[tokio::test]
async fn mariadb_urls_are_accepted() {
    let url = match common::fresh_database().await {
        Ok(url) => url,
        Err(err) if !omniq_storage::conformance::services_required() => {
            eprintln!("SKIPPED: MySQL unavailable ({err})");
            return;
        }
        Err(err) => panic!("cannot reach MySQL: {err}"),
    };
    let url = url.replacen("mysql://", "mariadb://", 1);
    let backend = MySqlBackend::connect(&url)
        .await
        .expect("mariadb:// connects");
    // Connecting again finds the migrations applied.
    MySqlBackend::connect(&url).await.expect("second connect");
    backend.close().await;
}

#[tokio::test]
async fn passwords_with_url_delimiters_stay_hidden() {
    for password in ["Zq/9kXw7", "Zq?9kXw7", "Zq#9kXw7", "Zq/9k?X#w7"] {
        let url = format!("mysql://app:{password}@127.0.0.1:1/omniq");
        let err = MySqlBackend::connect(&url).await.expect_err("no server");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("9k"), "{url}: {shown}");
    }
}
