//! Recovery with mail, end to end: routes → durable outbox → a real SMTP
//! server (aiosmtpd) → the link in the mail → the routes again.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::smtp::{Received, Sink};
use crate::support::*;

const NEW_PASSWORD: &str = "quartz lantern meadow bicycle";
const SENT: &str = "If that address has an account, a reset link is on its way.";

async fn mail_app(smtp: &Sink, extra: &[&str]) -> TestApp {
    let mut args: Vec<String> = vec![
        "--smtp-url".into(),
        smtp.url(),
        "--public-url".into(),
        "https://login.example.com".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    TestApp::spawn(Options {
        args,
        ..Options::default()
    })
    .await
}

async fn forgot(s: &impl Target, email: &str) -> reqwest::Response {
    client()
        .post(s.url("/password/forgot"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap()
}

/// The token of the link on a line of its own in the mail's text.
fn token_in(mail: &Received, path: &str) -> String {
    let text = mail.text.as_deref().expect("a text part");
    let prefix = format!("https://login.example.com{path}?token=");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} line in:\n{text}"))
        .to_owned()
}

#[tokio::test]
async fn forgot_password_mails_a_link_that_resets_once() {
    let Some(smtp) = Sink::start() else { return };
    let s = mail_app(&smtp, &[]).await;
    s.add_user_with_email("alice", "alice@example.com");
    let session = login(&s, "alice", PASSWORD).await;

    // Known and unknown addresses: the same status and body.
    for email in ["ALICE@example.com", "nobody@example.com"] {
        let res = forgot(&s, email).await;
        assert_eq!(res.status(), 202);
        assert_eq!(
            res.json::<serde_json::Value>().await.unwrap(),
            json!({"message": SENT})
        );
    }
    let got = smtp.wait_for(1).await;
    assert_eq!(got.len(), 1, "only the account's address gets mail");
    assert_eq!(got[0].to, "alice@example.com");
    assert_eq!(got[0].subject, "Reset your password");
    assert!(got[0]
        .html
        .as_deref()
        .unwrap()
        .contains("/password/reset?token="));
    let token = token_in(&got[0], "/password/reset");

    let res = client()
        .post(s.url("/password/reset"))
        .json(&json!({"token": token, "new_password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(get_json(&s, "/profile", &session).await.0, 401);
    let again = client()
        .post(s.url("/password/reset"))
        .json(&json!({"token": token, "new_password": "yet another fine passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400);
    // A notice follows every password change.
    let got = smtp.wait_for(2).await;
    assert!(
        got.iter()
            .any(|m| m.subject == "Your password was changed" && m.to == "alice@example.com"),
        "{got:?}"
    );
    assert_eq!(sign_in(&s, "alice", NEW_PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn forgot_password_is_throttled_per_target_and_per_client() {
    let Some(smtp) = Sink::start() else { return };
    let s = mail_app(&smtp, &[]).await;
    for _ in 0..5 {
        assert_eq!(forgot(&s, "target@example.com").await.status(), 202);
    }
    let res = forgot(&s, "target@example.com").await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert!(res.json::<serde_json::Value>().await.unwrap()["detail"].is_string());
    // The same client is past its own limit too, whatever the address.
    assert_eq!(forgot(&s, "other@example.com").await.status(), 429);
    // Not an address: 422 (checked before anything is counted).
    assert_eq!(forgot(&s, "not an address").await.status(), 422);
}

#[tokio::test]
async fn forgot_password_answers_in_the_same_time_for_every_address() {
    let Some(smtp) = Sink::start() else { return };
    let s = mail_app(&smtp, &["--max-failures-per-user-address", "1000"]).await;
    s.add_user_with_email("alice", "alice@example.com");
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..30 {
        for (email, times) in [
            ("alice@example.com", &mut known),
            ("nobody@example.com", &mut unknown),
        ] {
            let started = Instant::now();
            let res = forgot(&s, email).await;
            times.push(started.elapsed());
            assert_eq!(res.status(), 202, "round {i}");
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64()
    };
    let (k, u) = (median(&mut known), median(&mut unknown));
    let ratio = k.max(u) / k.min(u);
    println!(
        "forgot medians: known {:.2} ms, unknown {:.2} ms, ratio {ratio:.2}",
        k * 1e3,
        u * 1e3
    );
    assert!(ratio < 1.3, "known {k}, unknown {u}");
    // Every request for the real address did send a link.
    assert_eq!(smtp.wait_for(30).await.len(), 30);
}

#[tokio::test]
async fn changing_the_address_needs_the_new_one_to_confirm() {
    let Some(smtp) = Sink::start() else { return };
    let s = mail_app(&smtp, &[]).await;
    s.add_user_with_email("alice", "alice@example.com");
    let alice = login(&s, "alice", PASSWORD).await;
    let (status, body) = post_json(
        &s,
        "/email",
        Some(&alice),
        json!({"email": "new@example.com"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let got = smtp.wait_for(2).await;
    let verify = got
        .iter()
        .find(|m| m.to == "new@example.com")
        .expect("a link to the new address");
    assert_eq!(verify.subject, "Confirm your email address");
    let notice = got
        .iter()
        .find(|m| m.to == "alice@example.com")
        .expect("a notice to the old one");
    assert_eq!(notice.subject, "Your email address is being changed");
    assert!(notice.text.as_deref().unwrap().contains("new@example.com"));

    // Nothing changes until the link is used; reading it changes nothing.
    assert_eq!(
        get_json(&s, "/profile", &alice).await.1["email"],
        "alice@example.com"
    );
    let token = token_in(verify, "/email/verify");
    assert_eq!(
        get_json(&s, &format!("/email/verify?token={token}"), "").await,
        (200, json!({"valid": true}))
    );
    let (status, body) = post_json(&s, "/email/verify", None, json!({"token": token})).await;
    assert_eq!((status, body), (200, json!({"message": "Email verified."})));
    let (_, profile) = get_json(&s, "/profile", &alice).await;
    assert_eq!(
        (profile["email"].clone(), profile["email_verified"].clone()),
        (json!("new@example.com"), json!(true))
    );
    let (status, _) = post_json(&s, "/email/verify", None, json!({"token": token})).await;
    assert_eq!(status, 400, "a link works once");

    // An address another account has: the same 202, and no mail at all.
    s.add_user_with_email("bob", "bob@example.com");
    let before = smtp.count();
    let (status, _) = post_json(
        &s,
        "/email",
        Some(&alice),
        json!({"email": "BOB@example.com"}),
    )
    .await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.count(), before);
    let (status, _) = post_json(&s, "/email", Some(&alice), json!({"email": "nope"})).await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn logs_hold_no_reset_token_no_link_and_no_totp_secret() {
    let Some(smtp) = Sink::start() else { return };
    let s = Server::start(Options {
        args: vec![
            "--smtp-url".into(),
            smtp.url(),
            "--public-url".into(),
            "https://login.example.com".into(),
        ],
        ..Options::default()
    });
    s.add_user_with_email("alice", "alice@example.com");
    assert_eq!(forgot(&s, "alice@example.com").await.status(), 202);
    let mail = smtp.wait_for(1).await;
    let token = token_in(&mail[0], "/password/reset");
    // Reading and using the link, a wrong code, TOTP set up and confirmed.
    assert_eq!(
        get_json(&s, &format!("/password/reset?token={token}"), "")
            .await
            .0,
        200
    );
    let (status, _) = post_json(
        &s,
        "/password/reset",
        None,
        json!({"token": token, "new_password": NEW_PASSWORD}),
    )
    .await;
    assert_eq!(status, 200);
    let cookie = login(&s, "alice", NEW_PASSWORD).await;
    let (_, setup) = post_json(&s, "/mfa/totp/setup", Some(&cookie), json!({})).await;
    let secret = setup["secret"].as_str().unwrap().to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = latchkey::mfa::code_at(&secret, now).unwrap();
    let (status, codes) = post_json(
        &s,
        "/mfa/totp/confirm",
        Some(&cookie),
        json!({"code": code}),
    )
    .await;
    assert_eq!(status, 200);
    s.wait_log("totp_enabled", Duration::from_secs(5));
    let log = s.log();
    assert!(
        log.contains("password_reset"),
        "the reset is audited:\n{log}"
    );
    for secret_thing in [
        token.as_str(),
        secret.as_str(),
        codes["recovery_codes"][0].as_str().unwrap(),
        "password/reset?token=",
    ] {
        assert!(
            !log.contains(secret_thing),
            "the log holds {secret_thing:?}:\n{log}"
        );
    }
}
