//! Second factors over real HTTP: TOTP enrolment, the sign-in in two
//! steps, replay and throttling, recovery codes, re-authentication with a
//! code, and the CLI's reset-mfa.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use latchkey::mfa::code_at;
use serde_json::json;

use crate::support::*;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The code for the step `offset` steps from now.
fn code(secret: &str, offset: i64) -> String {
    code_at(secret, (now() as i64 + offset * 30) as u64).unwrap()
}

async fn post(
    s: &TestApp,
    path: &str,
    cookie: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    post_json(s, path, Some(cookie), body).await
}

/// Sets TOTP up for the signed-in `cookie`: (secret, recovery codes).
async fn enrol(s: &TestApp, cookie: &str) -> (String, Vec<String>) {
    let (status, setup) = post(s, "/mfa/totp/setup", cookie, json!({})).await;
    assert_eq!(status, 200, "{setup}");
    let secret = setup["secret"].as_str().unwrap().to_owned();
    let url = setup["otpauth_url"].as_str().unwrap();
    assert!(
        url.starts_with("otpauth://totp/") && url.contains(&secret),
        "{url}"
    );
    let (status, body) = post(
        s,
        "/mfa/totp/confirm",
        cookie,
        json!({"code": code(&secret, 0)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let codes: Vec<String> = serde_json::from_value(body["recovery_codes"].clone()).unwrap();
    assert_eq!(codes.len(), 10);
    (secret, codes)
}

/// The right password of a user with a factor: 202 and the pending cookie.
async fn pending(s: &TestApp, user: &str) -> String {
    let res = sign_in(s, user, PASSWORD).await;
    assert_eq!(res.status(), 202);
    assert!(
        set_cookie(&res, s.cookie_name()).is_none(),
        "no session yet"
    );
    let name = format!("{}-mfa", s.cookie_name());
    let line = set_cookie(&res, &name).expect("a pending sign-in cookie");
    assert!(line.contains("HttpOnly"), "{line}");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["message"], "Second factor required.");
    assert!(body["methods"].as_array().unwrap().contains(&json!("totp")));
    format!("{name}={}", token_of(&line))
}

async fn complete(s: &TestApp, pending: &str, body: serde_json::Value) -> (u16, Option<String>) {
    let res = client()
        .post(s.url("/login/mfa"))
        .header("cookie", pending)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let cookie =
        set_cookie(&res, s.cookie_name()).map(|l| format!("{}={}", s.cookie_name(), token_of(&l)));
    (status, cookie)
}

#[tokio::test]
async fn totp_makes_sign_in_two_steps_and_codes_work_once() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let first = login(&s, "alice", PASSWORD).await;

    // A setup alone changes nothing.
    let (_, setup) = post(&s, "/mfa/totp/setup", &first, json!({})).await;
    assert!(setup["secret"].is_string());
    assert_eq!(sign_in(&s, "alice", PASSWORD).await.status(), 200);
    let (_, profile) = get_json(&s, "/profile", &first).await;
    assert_eq!(
        profile["mfa"],
        json!({"totp": false, "recovery_codes_left": 0, "passkeys": 0})
    );
    let (status, _) = post(&s, "/mfa/totp/confirm", &first, json!({"code": "12345"})).await;
    assert_eq!(status, 403, "a wrong code does not confirm");

    let (secret, codes) = enrol(&s, &first).await;
    let (_, profile) = get_json(&s, "/profile", &first).await;
    assert_eq!(
        profile["mfa"],
        json!({"totp": true, "recovery_codes_left": 10, "passkeys": 0})
    );

    // The password alone opens nothing but the second step.
    let p = pending(&s, "alice").await;
    assert_eq!(get_json(&s, "/profile", &p).await.0, 401);
    // The code that confirmed enrolment used its step up: a replay fails.
    assert_eq!(
        complete(&s, &p, json!({"code": code(&secret, 0)})).await.0,
        401
    );
    let (status, session) = complete(&s, &p, json!({"code": code(&secret, 1)})).await;
    assert_eq!(status, 200);
    let session = session.expect("a new session cookie");
    assert_eq!(get_json(&s, "/profile", &session).await.0, 200);
    // The pending sign-in is used up, and so is that code.
    assert_eq!(
        complete(&s, &p, json!({"code": code(&secret, 1)})).await.0,
        401
    );
    let p2 = pending(&s, "alice").await;
    assert_eq!(
        complete(&s, &p2, json!({"code": code(&secret, 1)})).await.0,
        401,
        "replay"
    );

    // A recovery code works once, however it is typed.
    let typed = codes[0].to_uppercase().replace('-', " ");
    assert_eq!(
        complete(&s, &p2, json!({"recovery_code": typed})).await.0,
        200
    );
    let p3 = pending(&s, "alice").await;
    assert_eq!(
        complete(&s, &p3, json!({"recovery_code": codes[0]}))
            .await
            .0,
        401
    );
    assert_eq!(
        complete(&s, &p3, json!({"code": codes[1]})).await.0,
        200,
        "in the code field too"
    );
    let (_, profile) = get_json(&s, "/profile", &session).await;
    assert_eq!(profile["mfa"]["recovery_codes_left"], 8);

    // New codes: the old ones die.
    let (status, body) = post(&s, "/mfa/recovery-codes", &session, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["recovery_codes"].as_array().unwrap().len(), 10);
    let p4 = pending(&s, "alice").await;
    assert_eq!(
        complete(&s, &p4, json!({"recovery_code": codes[2]}))
            .await
            .0,
        401
    );
    let fresh = body["recovery_codes"][0].as_str().unwrap();
    assert_eq!(
        complete(&s, &p4, json!({"recovery_code": fresh})).await.0,
        200
    );

    // Without a pending sign-in there is nothing to complete.
    assert_eq!(
        complete(&s, "", json!({"code": code(&secret, 0)})).await.0,
        401
    );
}

#[tokio::test]
async fn wrong_codes_are_throttled_and_secrets_are_sealed() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let cookie = login(&s, "alice", PASSWORD).await;
    let (secret, _) = enrol(&s, &cookie).await;
    let p = pending(&s, "alice").await;
    // Wrong codes of any shape are wrong codes: 401, counted (never a 422
    // that would tell the password step from the code step).
    for bad in [
        json!("000000"),
        json!(123456),
        json!("abc"),
        json!(["x"]),
        json!(null),
    ] {
        assert_eq!(complete(&s, &p, json!({"code": bad})).await.0, 401, "{bad}");
    }
    let res = client()
        .post(s.url("/login/mfa"))
        .header("cookie", &p)
        .json(&json!({"code": code(&secret, 1)}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429, "the right code after 5 wrong ones");
    assert!(res.headers().contains_key("retry-after"));

    // A copy of the database does not hand out the factor.
    let path = s.database.trim_start_matches("sqlite://");
    let db = std::fs::read(path).unwrap();
    let wal = std::fs::read(format!("{path}-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the TOTP secret is stored in the clear"
        );
    }
}

#[tokio::test]
async fn removing_a_factor_needs_recent_authentication_and_a_code_gives_it() {
    let s = TestApp::spawn(Options {
        args: vec!["--reauth-window".into(), "1s".into()],
        ..Options::default()
    })
    .await;
    s.add_user("alice", "user");
    let cookie = login(&s, "alice", PASSWORD).await;
    let (secret, _) = enrol(&s, &cookie).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let reauth = (
        403,
        json!({"detail": "Re-authentication required", "reauth": true}),
    );
    let res = delete(&s, "/mfa/totp", &cookie).await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        post(&s, "/mfa/totp/setup", &cookie, json!({})).await,
        reauth
    );
    assert_eq!(
        post(&s, "/mfa/recovery-codes", &cookie, json!({})).await,
        reauth
    );
    assert_eq!(
        post(&s, "/reauth", &cookie, json!({"code": "000000"})).await,
        (403, json!({"detail": "Invalid credentials"}))
    );
    assert_eq!(
        post(&s, "/reauth", &cookie, json!({"code": code(&secret, 1)})).await,
        (200, json!({"message": "Confirmed."}))
    );
    assert_eq!(delete(&s, "/mfa/totp", &cookie).await.status(), 204);
    assert_eq!(
        sign_in(&s, "alice", PASSWORD).await.status(),
        200,
        "one step again"
    );
}

#[tokio::test]
async fn reset_mfa_turns_factors_off_and_ends_sessions() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let cookie = login(&s, "alice", PASSWORD).await;
    enrol(&s, &cookie).await;
    assert_eq!(sign_in(&s, "alice", PASSWORD).await.status(), 202);
    let out = s.cli(&["reset-mfa", "alice"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get_json(&s, "/profile", &cookie).await.0, 401);
    assert_eq!(sign_in(&s, "alice", PASSWORD).await.status(), 200);
    let out = s.cli(&["reset-mfa", "nobody"], None);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn a_pending_sign_in_dies_with_a_password_change() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let cookie = login(&s, "alice", PASSWORD).await;
    let (secret, _) = enrol(&s, &cookie).await;
    let p = pending(&s, "alice").await;
    let out = s.cli(
        &["set-password", "alice", "--password-stdin"],
        Some("quartz lantern meadow bicycle\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The right code no longer completes a sign-in begun with the old password.
    assert_eq!(
        complete(&s, &p, json!({"code": code(&secret, 1)})).await.0,
        401
    );
}
