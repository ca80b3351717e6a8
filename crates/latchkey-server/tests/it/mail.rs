//! `serve`'s mail flags through the real binary: where mail goes is
//! logged without the SMTP password, the mail metrics are exported, and a
//! bad `--smtp-url` is a usage error that does not echo the password.
//! Delivery itself (queue, retries, two instances) is tested against a
//! real SMTP server in the server's unit tests (`src/mail/tests.rs`).

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn serve_names_its_smtp_server_without_the_password() {
    let mut s = Server::start(Options {
        env: vec![
            (
                "LATCHKEY_SMTP_URL".into(),
                "smtps://ops%40example.com:Pw-Kept%21Secret@127.0.0.1:2465".into(),
            ),
            ("LATCHKEY_MAIL_FROM".into(), "latchkey@example.com".into()),
            (
                "LATCHKEY_PUBLIC_URL".into(),
                "https://login.example.com".into(),
            ),
        ],
        ..Options::default()
    });
    s.wait_log(
        "mail goes out through smtps://ops%40example.com:***@127.0.0.1:2465 from latchkey@example.com",
        Duration::from_secs(5),
    );
    let metrics = client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "latchkey_mail_queue_depth",
        "latchkey_mail_sent_total",
        "latchkey_mail_send_failures_total",
        "latchkey_mail_given_up_total",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    // The sender stops with the server, promptly.
    assert!(s.terminate().success());
    let log = s.log();
    assert!(!log.contains("Pw-Kept") && !log.contains("Secret"), "{log}");
}

#[test]
fn a_bad_smtp_url_is_a_usage_error_without_the_password() {
    let dir = TempDir::new();
    let out = Command::new(bin())
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--database",
            &dir.sqlite_url(),
        ])
        .env("LATCHKEY_SECRET_KEY", SECRET)
        .env(
            "LATCHKEY_SMTP_URL",
            "smtp://ops:Pw-Kept-Secret@relay.example:25",
        )
        .env_remove("LATCHKEY_MAIL_FROM")
        .stdin(Stdio::null())
        .output()
        .expect("run latchkey");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: invalid --smtp-url") && first.contains("smtp+starttls://"),
        "{err}"
    );
    assert!(!err.contains("Pw-Kept"), "{err}");
}

#[test]
fn smtp_without_a_public_url_is_a_usage_error() {
    let dir = TempDir::new();
    let out = Command::new(bin())
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--database",
            &dir.sqlite_url(),
        ])
        .args(["--smtp-url", "smtp://127.0.0.1:2525"])
        .env("LATCHKEY_SECRET_KEY", SECRET)
        .env_remove("LATCHKEY_MAIL_FROM")
        .stdin(Stdio::null())
        .output()
        .expect("run latchkey");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: --smtp-url needs --public-url"),
        "{err}"
    );
}
