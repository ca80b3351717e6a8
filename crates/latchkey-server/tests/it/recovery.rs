//! Account recovery without mail: addresses set by the CLI, reset links
//! printed by `latchkey user reset-link`, the reset routes, and recent
//! authentication (`/reauth`) in front of sensitive actions. The mailed
//! flows are in `mail.rs`.

use serde_json::json;

use crate::support::*;

const NEW_PASSWORD: &str = "quartz lantern meadow bicycle";

/// The link `latchkey user reset-link` prints, and its token.
fn reset_link(s: &impl Target, name: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "reset-link",
        name,
        "--public-url",
        "https://login.example.com/",
    ];
    args.extend_from_slice(extra);
    let out = s.cli(&args, None);
    assert!(
        out.status.success(),
        "reset-link failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let token = link
        .strip_prefix("https://login.example.com/password/reset?token=")
        .unwrap_or_else(|| panic!("unexpected link {link:?}"))
        .to_owned();
    assert!(token.len() >= 22, "at least 128 bits: {token}");
    (link, token)
}

async fn reset(s: &TestApp, token: &str, password: &str) -> (u16, serde_json::Value) {
    let body = json!({ "token": token, "new_password": password });
    let res = s
        .send(client().post(s.url("/password/reset")).json(&body))
        .await;
    assert!(
        set_cookie(&res, s.cookie_name()).is_none(),
        "a reset signs nobody in"
    );
    (res.status().as_u16(), res.json().await.unwrap())
}

async fn pj(
    s: &TestApp,
    path: &str,
    cookie: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    post_json(s, path, Some(cookie), body.clone()).await
}

async fn link_state(s: &TestApp, token: &str) -> (u16, serde_json::Value) {
    get_json(s, &format!("/password/reset?token={token}"), "").await
}

#[tokio::test]
async fn a_printed_reset_link_works_once_and_ends_every_session() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let session = login(&s, "alice", PASSWORD).await;
    let (_, token) = reset_link(&s, "alice", &[]);

    // Reading the link (a mail scanner) never uses it up.
    for _ in 0..2 {
        assert_eq!(link_state(&s, &token).await, (200, json!({"valid": true})));
        let head = client()
            .head(s.url(&format!("/password/reset?token={token}")))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200);
    }
    // A password the rules refuse leaves the link working.
    let (status, body) = reset(&s, &token, "short").await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("15"), "{body}");
    assert_eq!(link_state(&s, &token).await.0, 200);

    assert_eq!(
        reset(&s, &token, NEW_PASSWORD).await,
        (200, json!({"message": "Password changed."}))
    );
    assert_eq!(
        get_json(&s, "/profile", &session).await.0,
        401,
        "sessions end"
    );
    let gone = (400, json!({"detail": "Invalid or expired link"}));
    assert_eq!(
        reset(&s, &token, "another fine passphrase here").await,
        gone
    );
    assert_eq!(link_state(&s, &token).await, gone);
    assert_eq!(sign_in(&s, "alice", PASSWORD).await.status(), 401);
    assert_eq!(sign_in(&s, "alice", NEW_PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn links_die_with_a_password_change_with_time_and_when_unknown() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let gone = (400, json!({"detail": "Invalid or expired link"}));

    // A change of password (here by the user) kills links issued before.
    let (_, token) = reset_link(&s, "alice", &[]);
    let cookie = login(&s, "alice", PASSWORD).await;
    let body = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
    assert_eq!(pj(&s, "/password", &cookie, &body).await.0, 200);
    assert_eq!(link_state(&s, &token).await, gone);
    assert_eq!(
        reset(&s, &token, "another fine passphrase here").await,
        gone
    );

    // --ttl: dead after its time.
    let (_, token) = reset_link(&s, "alice", &["--ttl", "1s"]);
    assert_eq!(link_state(&s, &token).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(
        reset(&s, &token, "another fine passphrase here").await,
        gone
    );

    // Made-up and hostile tokens: the same 400, never a 5xx.
    for bad in [
        "",
        "nope",
        &"A".repeat(43),
        &"x".repeat(5000),
        "%00%0d%0a",
        "../../etc",
    ] {
        assert_eq!(
            reset(&s, bad, "another fine passphrase here").await,
            gone,
            "{bad:?}"
        );
        assert_eq!(link_state(&s, bad).await.0, 400, "{bad:?}");
    }
}

#[tokio::test]
async fn two_resets_racing_on_one_link_change_the_password_once() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let (_, token) = reset_link(&s, "alice", &[]);
    let passwords = [
        "first racing passphrase wins",
        "second racing passphrase wins",
        "third racing passphrase wins",
        "fourth racing passphrase wins",
    ];
    let mut tasks = Vec::new();
    for p in passwords {
        let (url, token) = (s.url("/password/reset"), token.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({ "token": token, "new_password": p });
            let res = client().post(url).json(&body).send().await.unwrap();
            (res.status().as_u16(), p)
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        let (status, p) = t.await.unwrap();
        assert!(status == 200 || status == 400, "{status}");
        if status == 200 {
            won.push(p);
        }
    }
    assert_eq!(won.len(), 1, "exactly one reset: {won:?}");
    assert_eq!(sign_in(&s, "alice", won[0]).await.status(), 200);
}

#[tokio::test]
async fn addresses_from_the_cli_show_on_the_profile_and_are_unique() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user_with_email("alice", "Alice@Example.com");
    s.add_user("bob", "user");
    let alice = login(&s, "alice", PASSWORD).await;
    let (status, body) = get_json(&s, "/profile", &alice).await;
    assert_eq!(status, 200);
    assert_eq!(body["email"], "Alice@Example.com");
    assert_eq!(body["email_verified"], true);
    let bob = login(&s, "bob", PASSWORD).await;
    let (_, body) = get_json(&s, "/profile", &bob).await;
    assert_eq!(
        (body["email"].clone(), body["email_verified"].clone()),
        (json!(null), json!(false))
    );

    // Case-insensitively unique: exit 1 naming the clash.
    let out = s.cli(&["set-email", "bob", "alice@EXAMPLE.com"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another user"));
    // Not an address: a usage error.
    let out = s.cli(&["set-email", "bob", "not-an-address"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an email address"));
    let out = s.cli(&["set-email", "bob", "bob@example.com"], None);
    assert!(out.status.success());
    let (_, body) = get_json(&s, "/profile", &bob).await;
    assert_eq!(body["email"], "bob@example.com");
}

#[tokio::test]
async fn without_mail_the_mailed_routes_are_not_found() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let res = s
        .send(
            client()
                .post(s.url("/password/forgot"))
                .json(&json!({"email": "a@example.com"})),
        )
        .await;
    assert_eq!(res.status(), 404);
    assert!(res.json::<serde_json::Value>().await.unwrap()["detail"].is_string());
    let alice = login(&s, "alice", PASSWORD).await;
    assert_eq!(
        pj(&s, "/email", &alice, &json!({"email": "a@example.com"}))
            .await
            .0,
        404
    );
    // The sign-in page offers no "Forgot your password?" it cannot keep.
    let page = client()
        .get(s.url("/login"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("/password/forgot"));
}

#[tokio::test]
async fn sensitive_actions_need_recent_authentication() {
    let s = TestApp::spawn(Options {
        args: vec!["--reauth-window".into(), "1s".into()],
        ..Options::default()
    })
    .await;
    s.add_user("alice", "admin");
    s.add_user("bob", "user");
    let alice = login(&s, "alice", PASSWORD).await;
    let other = login(&s, "alice", PASSWORD).await;
    // Signing in counts as authentication.
    let end_bob = "/admin/users/bob/end-sessions";
    assert_eq!(pj(&s, end_bob, &alice, &json!({})).await.0, 200);

    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let reauth = (
        403,
        json!({"detail": "Re-authentication required", "reauth": true}),
    );
    assert_eq!(pj(&s, end_bob, &alice, &json!({})).await, reauth);
    assert_eq!(
        pj(&s, "/sessions/revoke-others", &alice, &json!({})).await,
        reauth
    );
    let (_, sessions) = get_json(&s, "/sessions", &alice).await;
    let other_id = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = delete(&s, &format!("/sessions/{other_id}"), &alice).await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        get_json(&s, "/profile", &other).await.0,
        200,
        "nothing ended"
    );
    // Viewing needs none; ending one's own session (a sign-out) needs none.
    assert_eq!(get_json(&s, "/admin", &alice).await.0, 200);

    // A browser is sent to confirm, and back.
    let res = client()
        .post(s.url(end_bob))
        .header("cookie", &alice)
        .header("accept", "text/html")
        .header("referer", s.url("/admin"))
        .header("host", &s.addr)
        .form(&[("x", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/reauth?next=%2Fadmin");

    let wrong = pj(
        &s,
        "/reauth",
        &alice,
        &json!({"password": "not the password at all"}),
    )
    .await;
    assert_eq!(wrong, (403, json!({"detail": "Invalid credentials"})));
    assert_eq!(
        pj(&s, "/reauth", &alice, &json!({"password": PASSWORD})).await,
        (200, json!({"message": "Confirmed."}))
    );
    assert_eq!(pj(&s, end_bob, &alice, &json!({})).await.0, 200);
    assert_eq!(
        delete(&s, &format!("/sessions/{other_id}"), &alice)
            .await
            .status(),
        204
    );
    assert_eq!(get_json(&s, "/profile", &other).await.0, 401);
}

#[tokio::test]
async fn reauth_is_throttled_like_sign_ins() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let alice = login(&s, "alice", PASSWORD).await;
    for _ in 0..5 {
        let r = pj(
            &s,
            "/reauth",
            &alice,
            &json!({"password": "wrong wrong wrong wrong"}),
        )
        .await;
        assert_eq!(r.0, 403);
    }
    let res = client()
        .post(s.url("/reauth"))
        .header("cookie", &alice)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
}
