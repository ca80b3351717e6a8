//! Passkeys over real HTTP with a software authenticator (keys made in
//! this process by `webauthn-authenticator-rs`): registration, the second
//! step of a sign-in, passwordless sign-in, and what must be refused.
//!
//! The software authenticator makes no discoverable credentials and sends
//! no user handle; for passwordless sign-in the test plays the part of a
//! browser with a discoverable credential: it names its credential in the
//! request and adds the user handle the server gave at registration (the
//! handle is not signed, by the WebAuthn design).

use serde_json::json;
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url, WebauthnAuthenticator,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use crate::support::*;

const ORIGIN: &str = "https://login.example.com";

async fn app() -> TestApp {
    app_on(Options::default()).await
}

async fn app_on(mut opts: Options) -> TestApp {
    opts.args
        .extend(["--public-url".to_owned(), ORIGIN.to_owned()]);
    TestApp::spawn(opts).await
}

fn key() -> WebauthnAuthenticator<SoftPasskey> {
    WebauthnAuthenticator::new(SoftPasskey::new(true))
}

struct Registered {
    id: String,
    user_handle: String,
}

async fn register(
    s: &TestApp,
    cookie: &str,
    k: &mut WebauthnAuthenticator<SoftPasskey>,
    name: &str,
) -> Registered {
    let (status, options) = post_json(s, "/webauthn/register/start", Some(cookie), json!({})).await;
    assert_eq!(status, 200, "{options}");
    let user_handle = options["publicKey"]["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ccr: CreationChallengeResponse = serde_json::from_value(options).unwrap();
    let cred = k.do_registration(Url::parse(ORIGIN).unwrap(), ccr).unwrap();
    let mut body = serde_json::to_value(&cred).unwrap();
    body["name"] = json!(name);
    let (status, info) =
        post_json(s, "/webauthn/register/finish", Some(cookie), body.clone()).await;
    assert_eq!(status, 201, "{info}");
    assert_eq!(info["name"], name);
    // The challenge was used up: the same response again is refused.
    let (again, _) = post_json(s, "/webauthn/register/finish", Some(cookie), body).await;
    assert_eq!(again, 400);
    Registered {
        id: info["id"].as_str().unwrap().to_owned(),
        user_handle,
    }
}

/// The right password of a user with a passkey: the pending sign-in's
/// cookie pair and the 202's body.
async fn pending_sign_in(s: &TestApp, user: &str) -> (String, serde_json::Value) {
    let res = sign_in(s, user, PASSWORD).await;
    assert_eq!(res.status(), 202);
    let name = format!("{}-mfa", s.cookie_name());
    let pending = format!("{name}={}", token_of(&set_cookie(&res, &name).unwrap()));
    (pending, res.json().await.unwrap())
}

/// `/webauthn/login/start` with `cookie`: the options and the ceremony cookie.
async fn login_start(s: &TestApp, cookie: &str) -> (RequestChallengeResponse, String) {
    let res = post(s, "/webauthn/login/start", cookie, json!({})).await;
    assert_eq!(res.status(), 200);
    let name = format!("{}-webauthn", s.cookie_name());
    let line = set_cookie(&res, &name).expect("a ceremony cookie");
    let ceremony = format!("{name}={}", token_of(&line));
    let options: serde_json::Value = res.json().await.unwrap();
    (serde_json::from_value(options).unwrap(), ceremony)
}

/// Signs with `k` as a discoverable credential would: naming `as_id` and
/// giving `user_handle`.
fn assert_as(
    k: &mut WebauthnAuthenticator<SoftPasskey>,
    mut rcr: RequestChallengeResponse,
    own_id: &str,
    origin: &str,
) -> serde_json::Value {
    if rcr.public_key.allow_credentials.is_empty() {
        let allow = json!([{"type": "public-key", "id": own_id}]);
        rcr.public_key.allow_credentials = serde_json::from_value(allow).unwrap();
    }
    let cred = k
        .do_authentication(Url::parse(origin).unwrap(), rcr)
        .unwrap();
    serde_json::to_value(&cred).unwrap()
}

fn with_handle(mut assertion: serde_json::Value, handle: &str) -> serde_json::Value {
    assertion["response"]["userHandle"] = json!(handle);
    assertion
}

async fn finish(s: &TestApp, cookies: &str, assertion: serde_json::Value) -> (u16, Option<String>) {
    let res = post(s, "/webauthn/login/finish", cookies, assertion).await;
    let status = res.status().as_u16();
    let session = set_cookie(&res, s.cookie_name())
        .filter(|l| !l.contains("Max-Age=0"))
        .map(|l| format!("{}={}", s.cookie_name(), token_of(&l)));
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    if status == 200 {
        assert_eq!(body, json!({"message": "Login successful!"}));
    } else {
        assert!(body["detail"].is_string(), "{body}");
    }
    (status, session)
}

#[tokio::test]
async fn register_list_rename_and_delete() {
    let s = app().await;
    s.add_user("alice", "user");
    let cookie = login(&s, "alice", PASSWORD).await;
    let mut k = key();
    let reg = register(&s, &cookie, &mut k, "Laptop").await;
    let (status, list) = get_json(&s, "/webauthn/credentials", &cookie).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], reg.id.as_str());
    assert!(list[0]["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(list[0]["last_used_at"], json!(null));
    let (_, profile) = get_json(&s, "/profile", &cookie).await;
    assert_eq!(profile["mfa"]["passkeys"], 1);

    let res = client()
        .patch(s.url(&format!("/webauthn/credentials/{}", reg.id)))
        .header("cookie", &cookie)
        .json(&json!({"name": "Work laptop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (_, list) = get_json(&s, "/webauthn/credentials", &cookie).await;
    assert_eq!(list[0]["name"], "Work laptop");

    // Bad input: a 4xx with a detail, never a 5xx, and nothing registered.
    for bad in [
        json!({}),
        json!({"id": 5, "rawId": [1, 2], "response": "x", "type": "public-key"}),
        json!({"name": "x".repeat(10_000)}),
    ] {
        let (status, body) = post_json(&s, "/webauthn/register/finish", Some(&cookie), bad).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["detail"].is_string());
    }
    let res = delete(&s, "/webauthn/credentials/not-a-credential", &cookie).await;
    assert_eq!(res.status(), 404);
    let res = delete(&s, &format!("/webauthn/credentials/{}", reg.id), &cookie).await;
    assert_eq!(res.status(), 204);
    let (_, list) = get_json(&s, "/webauthn/credentials", &cookie).await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn passwordless_sign_in_and_what_it_refuses() {
    let s = app().await;
    s.add_user("alice", "user");
    s.add_user("bob", "user");
    let alice = login(&s, "alice", PASSWORD).await;
    let bob = login(&s, "bob", PASSWORD).await;
    let (mut ka, mut kb) = (key(), key());
    let ra = register(&s, &alice, &mut ka, "A").await;
    let rb = register(&s, &bob, &mut kb, "B").await;

    // A discoverable sign-in: no username, no password.
    let (rcr, ceremony) = login_start(&s, "").await;
    assert!(
        rcr.public_key.allow_credentials.is_empty(),
        "any discoverable credential"
    );
    let assertion = with_handle(assert_as(&mut ka, rcr, &ra.id, ORIGIN), &ra.user_handle);
    let (status, session) = finish(&s, &ceremony, assertion.clone()).await;
    assert_eq!(status, 200);
    let session = session.expect("a new session");
    let (_, profile) = get_json(&s, "/profile", &session).await;
    assert_eq!(profile["username"], "alice");
    // The same assertion again: the ceremony is used up.
    assert_eq!(finish(&s, &ceremony, assertion.clone()).await.0, 401);
    // And with a fresh ceremony, the old challenge does not verify.
    let (_, fresh) = login_start(&s, "").await;
    assert_eq!(
        finish(&s, &fresh, assertion).await.0,
        401,
        "replayed challenge"
    );

    // Another key's signature under alice's credential id: refused.
    let (rcr, ceremony) = login_start(&s, "").await;
    let mut forged = assert_as(&mut kb, rcr, &rb.id, ORIGIN);
    forged["id"] = json!(ra.id);
    forged["rawId"] = json!(ra.id);
    let forged = with_handle(forged, &ra.user_handle);
    assert_eq!(finish(&s, &ceremony, forged).await.0, 401);

    // bob's key with alice's user handle: refused.
    let (rcr, ceremony) = login_start(&s, "").await;
    let mixed = with_handle(assert_as(&mut kb, rcr, &rb.id, ORIGIN), &ra.user_handle);
    assert_eq!(finish(&s, &ceremony, mixed).await.0, 401);

    // A page on another origin (a phishing subdomain): refused.
    let (rcr, ceremony) = login_start(&s, "").await;
    let phished = with_handle(
        assert_as(&mut ka, rcr, &ra.id, "https://phish.login.example.com"),
        &ra.user_handle,
    );
    assert_eq!(finish(&s, &ceremony, phished).await.0, 401);

    // A deleted credential: refused.
    let res = delete(&s, &format!("/webauthn/credentials/{}", rb.id), &bob).await;
    assert_eq!(res.status(), 204);
    let (rcr, ceremony) = login_start(&s, "").await;
    let gone = with_handle(assert_as(&mut kb, rcr, &rb.id, ORIGIN), &rb.user_handle);
    assert_eq!(finish(&s, &ceremony, gone).await.0, 401);

    // Garbage: 4xx with a detail, never a 5xx.
    let (_, ceremony) = login_start(&s, "").await;
    assert_eq!(finish(&s, &ceremony, json!({"id": "x"})).await.0, 401);
    assert_eq!(finish(&s, "", json!({})).await.0, 401, "no ceremony");
}

#[tokio::test]
async fn a_passkey_is_a_second_factor_after_the_password() {
    let s = app().await;
    s.add_user("alice", "user");
    let cookie = login(&s, "alice", PASSWORD).await;
    let mut k = key();
    let reg = register(&s, &cookie, &mut k, "Key").await;

    let (pending, body) = pending_sign_in(&s, "alice").await;
    assert_eq!(body["methods"], json!(["webauthn"]));

    // The pending sign-in's passkey ceremony names the user's credentials.
    let (rcr, ceremony) = login_start(&s, &pending).await;
    assert_eq!(rcr.public_key.allow_credentials.len(), 1);
    let assertion = assert_as(&mut k, rcr, &reg.id, ORIGIN);
    let both = format!("{pending}; {ceremony}");
    let (status, session) = finish(&s, &both, assertion).await;
    assert_eq!(status, 200);
    assert_eq!(get_json(&s, "/profile", &session.unwrap()).await.0, 200);
    // The pending sign-in is used up: its cookie now starts only a
    // passwordless ceremony (no credentials named).
    let (again, _) = login_start(&s, &pending).await;
    assert!(again.public_key.allow_credentials.is_empty());
    let (_, list) = get_json(&s, "/webauthn/credentials", &cookie).await;
    assert!(list[0]["last_used_at"].is_string(), "use is recorded");
}

#[tokio::test]
async fn a_ceremony_begun_on_one_instance_finishes_on_another() {
    let (Some(pg), Some(redis)) = (postgres_url(), redis_url()) else {
        return;
    };
    let opts = Options {
        database: Some(pg),
        sessions: Some(redis),
        ..Options::default()
    };
    let a = app_on(opts.clone()).await;
    let b = app_on(opts).await;
    a.add_user("alice", "user");
    let cookie = login(&a, "alice", PASSWORD).await;
    let mut k = key();
    // Registration: started on A, finished on B.
    let (_, options) = post_json(&a, "/webauthn/register/start", Some(&cookie), json!({})).await;
    let handle = options["publicKey"]["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ccr: CreationChallengeResponse = serde_json::from_value(options).unwrap();
    let cred = k.do_registration(Url::parse(ORIGIN).unwrap(), ccr).unwrap();
    let (status, info) = post_json(
        &b,
        "/webauthn/register/finish",
        Some(&cookie),
        serde_json::to_value(&cred).unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{info}");
    let id = info["id"].as_str().unwrap().to_owned();
    // Passwordless sign-in: started on B, finished on A.
    let (rcr, ceremony) = login_start(&b, "").await;
    let assertion = with_handle(assert_as(&mut k, rcr, &id, ORIGIN), &handle);
    let (status, session) = finish(&a, &ceremony, assertion).await;
    assert_eq!(status, 200);
    assert_eq!(get_json(&b, "/profile", &session.unwrap()).await.0, 200);
}

#[tokio::test]
async fn a_passkey_does_not_complete_a_sign_in_begun_before_a_password_change() {
    let s = app().await;
    s.add_user("alice", "user");
    let cookie = login(&s, "alice", PASSWORD).await;
    let mut k = key();
    let reg = register(&s, &cookie, &mut k, "Key").await;
    let (pending, _) = pending_sign_in(&s, "alice").await;
    let (rcr, ceremony) = login_start(&s, &pending).await;
    let out = s.cli(
        &["set-password", "alice", "--password-stdin"],
        Some("quartz lantern meadow bicycle\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let assertion = assert_as(&mut k, rcr, &reg.id, ORIGIN);
    let (status, session) = finish(&s, &format!("{pending}; {ceremony}"), assertion).await;
    assert_eq!((status, session), (401, None));
}
