//! Every route of the contract over real HTTP, with its exact statuses and
//! bodies, and the session rules: cookies, fixation, forgery, replay.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn full_flow_of_the_tutorial() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "admin");
    s.add_user("bob", "user");
    let c = client();

    // Alice uses the app's own client, which keeps her cookie.
    let res = s.get("/login").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        json!({"message": "Login page. POST to /login to authenticate."})
    );

    assert_eq!(s.login("alice", PASSWORD).await.status(), 200);
    let alice = s.cookies();
    let res = s.get_profile().await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        json!({"message": "Welcome to your profile, alice!", "username": "alice", "role": "admin", "email": null, "email_verified": false, "mfa": {"totp": false, "recovery_codes_left": 0, "passkeys": 0}})
    );
    assert_eq!(
        get_json(&s, "/admin", &alice).await,
        (200, json!({"message": "Admin dashboard for alice."}))
    );

    let bob = login(&s, "bob", PASSWORD).await;
    assert_eq!(
        get_json(&s, "/admin", &bob).await,
        (403, json!({"detail": "Forbidden"}))
    );
    assert_eq!(
        get_json(&s, "/admin", "").await,
        (401, json!({"detail": "Not authenticated"}))
    );
    assert_eq!(
        get_json(&s, "/profile", "").await,
        (401, json!({"detail": "Not authenticated"}))
    );

    let res = s.logout().await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["clear-site-data"], "\"cookies\"");
    let expired = set_cookie(&res, s.cookie_name()).expect("cookie expired");
    assert!(expired.contains("Max-Age=0"), "{expired}");
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        json!({"message": "Logged out successfully."})
    );
    // Replay of the old cookie
    assert_eq!(
        get_json(&s, "/profile", &alice).await,
        (401, json!({"detail": "Not authenticated"}))
    );
    // Idempotent
    let res = c
        .post(s.url("/logout"))
        .header("cookie", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = c.post(s.url("/logout")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let mut bodies = Vec::new();
    for (u, p) in [
        ("alice", "wrong password here!"),
        ("nobody", "wrong password here!"),
    ] {
        let res = sign_in(&s, u, p).await;
        assert_eq!(res.status(), 401);
        assert!(set_cookie(&res, s.cookie_name()).is_none());
        bodies.push(res.text().await.unwrap());
    }
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[0], r#"{"detail":"Invalid credentials"}"#);
}

#[tokio::test]
async fn form_login_works_for_scripts() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let res = client()
        .post(s.url("/login"))
        .form(&[("username", "alice"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(set_cookie(&res, s.cookie_name()).is_some());
}

#[tokio::test]
async fn secure_cookie_attributes_and_headers() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let res = sign_in(&s, "alice", PASSWORD).await;
    let line = set_cookie(&res, "__Host-latchkey").expect("__Host- cookie");
    for attr in [
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=28800",
    ] {
        assert!(line.contains(attr), "{line} lacks {attr}");
    }
    assert!(!line.to_ascii_lowercase().contains("domain"));
    assert!(token_of(&line).len() >= 43, "256-bit token");
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert!(res.headers()["strict-transport-security"]
        .to_str()
        .unwrap()
        .contains("max-age=31536000"));
}

#[tokio::test]
async fn dev_cookie_is_plain() {
    let s = Server::start(Options {
        dev: true,
        ..Default::default()
    });
    s.add_user("alice", "user");
    let res = sign_in(&s, "alice", PASSWORD).await;
    let line = set_cookie(&res, "latchkey").expect("dev cookie");
    assert!(!line.contains("Secure"), "{line}");
    assert!(line.contains("HttpOnly") && line.contains("SameSite=Lax"));
    assert!(res.headers().get("strict-transport-security").is_none());
    assert!(s.log().contains("WARN"), "dev warns when it makes a secret");
    assert!(s.dir.path().join("latchkey.db.secret").exists());
}

#[tokio::test]
async fn login_rotates_the_token_and_forged_tokens_are_ignored() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let first = login(&s, "alice", PASSWORD).await;
    // Sign in again while carrying the first token: it must stop working.
    let body = json!({"username": "alice", "password": PASSWORD});
    let res = post(&s, "/login", &first, body.clone()).await;
    let second = session_cookie(&s, &res);
    assert_ne!(first, second);
    assert_eq!(get_json(&s, "/profile", &first).await.0, 401);
    assert_eq!(get_json(&s, "/profile", &second).await.0, 200);

    // A token the server never issued is ignored, and not adopted at login.
    let forged = "__Host-latchkey=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(get_json(&s, "/profile", forged).await.0, 401);
    let res = post(&s, "/login", forged, body).await;
    let issued = token_of(&set_cookie(&res, "__Host-latchkey").unwrap());
    assert_ne!(issued, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(get_json(&s, "/profile", forged).await.0, 401);
}

#[tokio::test]
async fn sessions_listing_and_deleting() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    s.add_user("bob", "user");
    let a1 = login(&s, "alice", PASSWORD).await;
    let a2 = login(&s, "alice", PASSWORD).await;
    let b1 = login(&s, "bob", PASSWORD).await;
    let (st, list) = get_json(&s, "/sessions", &a1).await;
    assert_eq!(st, 200);
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    for item in &list {
        for k in [
            "id",
            "created_at",
            "last_seen_at",
            "user_agent",
            "ip",
            "current",
        ] {
            assert!(item.get(k).is_some(), "missing {k} in {item}");
        }
        assert!(item["created_at"].as_str().unwrap().ends_with('Z'));
        assert!(
            !a1.contains(item["id"].as_str().unwrap()),
            "id is not the cookie secret"
        );
    }
    let current: Vec<_> = list.iter().filter(|i| i["current"] == true).collect();
    assert_eq!(current.len(), 1);
    let other_id = list.iter().find(|i| i["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Bob cannot delete Alice's session: 404, and it lives on.
    let res = delete(&s, &format!("/sessions/{other_id}"), &b1).await;
    assert_eq!(res.status(), 404);
    assert!(res.json::<serde_json::Value>().await.unwrap()["detail"].is_string());
    assert_eq!(get_json(&s, "/profile", &a2).await.0, 200);
    let res = delete(&s, "/sessions/not-a-real-id", &a1).await;
    assert_eq!(res.status(), 404);

    // Alice ends her other session.
    let res = delete(&s, &format!("/sessions/{other_id}"), &a1).await;
    assert_eq!(res.status(), 204);
    assert_eq!(get_json(&s, "/profile", &a2).await.0, 401);
    assert_eq!(get_json(&s, "/profile", &a1).await.0, 200);

    // Deleting the current one is a logout.
    let (_, list) = get_json(&s, "/sessions", &a1).await;
    let mine = list[0]["id"].as_str().unwrap().to_owned();
    let res = delete(&s, &format!("/sessions/{mine}"), &a1).await;
    assert_eq!(res.status(), 204);
    assert_eq!(get_json(&s, "/profile", &a1).await.0, 401);
    assert_eq!(get_json(&s, "/sessions", "").await.0, 401);
}

#[tokio::test]
async fn password_change_rotates_current_and_ends_others() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let here = login(&s, "alice", PASSWORD).await;
    let elsewhere = login(&s, "alice", PASSWORD).await;
    let new_pw = "violet harbor quantum pebble";

    let body = json!({"current_password": "not my password at all", "new_password": new_pw});
    let res = post(&s, "/password", &here, body).await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        json!({"detail": "Invalid credentials"})
    );

    let body = json!({"current_password": PASSWORD, "new_password": "password"});
    let res = post(&s, "/password", &here, body).await;
    assert_eq!(res.status(), 422);
    assert!(!res.json::<serde_json::Value>().await.unwrap()["detail"]
        .as_str()
        .unwrap()
        .is_empty());

    let body = json!({"current_password": PASSWORD, "new_password": new_pw});
    let res = post(&s, "/password", &here, body).await;
    assert_eq!(res.status(), 200);
    let rotated = session_cookie(&s, &res);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        json!({"message": "Password changed."})
    );
    assert_ne!(rotated, here);
    assert_eq!(get_json(&s, "/profile", &rotated).await.0, 200);
    assert_eq!(
        get_json(&s, "/profile", &here).await.0,
        401,
        "old token of this device retired"
    );
    assert_eq!(
        get_json(&s, "/profile", &elsewhere).await.0,
        401,
        "other sessions ended"
    );
    login(&s, "alice", new_pw).await;
    assert_eq!(sign_in(&s, "alice", PASSWORD).await.status(), 401);
}

#[tokio::test]
async fn health_ready_metrics() {
    let s = TestApp::spawn(Options::default()).await;
    let c = client();
    assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(s.url("/readyz")).send().await.unwrap().status(), 200);
    login_fail(&s).await;
    let text = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut names = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.starts_with("latchkey_"), "{line}");
        let name = line.split(['{', ' ']).next().unwrap();
        let base = name.trim_end_matches("_total");
        assert!(
            text.contains(&format!("# TYPE {base} ")),
            "no TYPE for {name}"
        );
        names += 1;
    }
    assert!(names > 0);
    assert!(
        text.contains("latchkey_logins_total{outcome=\"failure\"} 1"),
        "{text}"
    );
}

async fn login_fail(s: &impl Target) {
    assert_eq!(sign_in(s, "x", "y").await.status(), 401);
}

#[tokio::test]
async fn unknown_routes_methods_and_bad_bodies_get_json_details() {
    let s = TestApp::spawn(Options::default()).await;
    let c = client();
    let res = c.get(s.url("/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.json::<serde_json::Value>().await.unwrap()["detail"].is_string());
    let res = c.put(s.url("/login")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert!(res.json::<serde_json::Value>().await.unwrap()["detail"].is_string());
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("application/json", b"{not json".to_vec(), 400),
        ("application/json", b"{\"username\": \"a\"}".to_vec(), 422),
        ("application/json", b"[1,2,3]".to_vec(), 422),
        (
            "application/x-www-form-urlencoded",
            b"username=a".to_vec(),
            422,
        ),
        (
            "application/x-www-form-urlencoded",
            b"username=%FF%FE&password=x".to_vec(),
            400,
        ),
        ("application/json", vec![0xff, 0xfe, 0x00], 400),
        ("text/plain", b"username=a&password=b".to_vec(), 415),
    ];
    for (ctype, body, want) in cases {
        let res = c
            .post(s.url("/login"))
            .header("content-type", ctype)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status().as_u16(),
            want,
            "{ctype} {:?}",
            String::from_utf8_lossy(&body)
        );
        let v: serde_json::Value = res.json().await.unwrap();
        assert!(v["detail"].is_string(), "{v}");
    }
    assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn browsers_get_pages_and_redirects() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let c = client();
    let res = c
        .get(s.url("/profile"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/login?next=%2Fprofile");
    let res = c
        .get(s.url("/login"))
        .header("accept", "text/html,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let html = res.text().await.unwrap();
    assert!(
        html.contains("name=\"username\"")
            && html.contains("name=\"password\"")
            && html.contains("name=\"csrf_token\"")
    );
    // */* gets JSON
    let res = c
        .get(s.url("/login"))
        .header("accept", "*/*")
        .send()
        .await
        .unwrap();
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
}
