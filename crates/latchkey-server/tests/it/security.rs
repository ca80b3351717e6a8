//! Attack resistance over real HTTP: cross-site refusal, form CSRF tokens,
//! content types, throttling, enumeration timing, password policy, hash
//! upgrades, hostile input, response hygiene and the audit log.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

const EVIL: &str = "https://evil.example";

/// POST /login with JSON, optionally as the client `xff` (through a trusted proxy).
async fn attempt(
    s: &impl Target,
    user: &str,
    password: &str,
    xff: Option<&str>,
) -> reqwest::Response {
    let mut req = client()
        .post(s.url("/login"))
        .json(&json!({ "username": user, "password": password }));
    if let Some(ip) = xff {
        req = req.header("x-forwarded-for", ip);
    }
    req.send().await.unwrap()
}

/// Status and `Retry-After` of a login attempt; asserts the error body shape.
async fn attempt_status(
    s: &impl Target,
    user: &str,
    password: &str,
    xff: Option<&str>,
) -> (u16, Option<String>) {
    let res = attempt(s, user, password, xff).await;
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    if status != 200 {
        assert!(
            set_cookie(&res, s.cookie_name()).is_none(),
            "a refused login set a session cookie"
        );
        let v: Value = res.json().await.unwrap();
        assert!(v["detail"].is_string(), "{status}: {v}");
    }
    (status, retry)
}

fn assert_retry_after(retry: Option<String>) {
    let retry = retry.expect("429 carries Retry-After");
    let secs: u64 = retry
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is not an integer: {retry:?}"));
    assert!(secs > 0, "Retry-After {secs}");
}

/// The value of the hidden `csrf_token` input in a page.
fn html_token(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let i = html
        .find(marker)
        .unwrap_or_else(|| panic!("no csrf_token input in:\n{html}"))
        + marker.len();
    let end = html[i..].find('"').unwrap() + i;
    html[i..end].to_owned()
}

/// At least 128 bits: 32+ hex characters or 22+ base64 characters.
fn strong_token(t: &str) -> bool {
    let hex = t.len() >= 32 && t.bytes().all(|b| b.is_ascii_hexdigit());
    let b64 = t.len() >= 22
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_+/=".contains(&b));
    hex || b64
}

async fn detail_of(res: reqwest::Response) -> String {
    let v: Value = res.json().await.expect("JSON error body");
    v["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail in {v}"))
        .to_owned()
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("{} {} lacks {name}", res.status(), res.url()))
        .to_str()
        .unwrap()
}

// ---------------------------------------------------------------- cross-site

#[tokio::test]
async fn cross_site_unsafe_requests_are_refused_and_change_nothing() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let c = client();
    let me = login(&s, "alice", PASSWORD).await;
    let other = login(&s, "alice", PASSWORD).await;
    let (_, list) = get_json(&s, "/sessions", &me).await;
    let other_id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let hostile: Vec<(&str, String)> = vec![
        ("origin", EVIL.to_owned()),
        ("origin", "null".to_owned()),
        ("origin", "http://localhost:1".to_owned()),
        ("origin", format!("https://{}.evil.example", s.addr)),
        ("sec-fetch-site", "cross-site".to_owned()),
        ("sec-fetch-site", "same-site".to_owned()),
    ];
    for (name, value) in &hostile {
        let what = format!("{name}: {value}");
        // Login with the right password: refused, no cookie of any kind.
        let res = c
            .post(s.url("/login"))
            .header(*name, value)
            .json(&json!({"username": "alice", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "login with {what}");
        assert!(
            res.headers().get("set-cookie").is_none(),
            "{what}: refused login set a cookie"
        );
        assert!(!detail_of(res).await.is_empty());

        // The same as a form.
        let res = c
            .post(s.url("/login"))
            .header(*name, value)
            .form(&[("username", "alice"), ("password", PASSWORD)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "form login with {what}");
        assert!(res.headers().get("set-cookie").is_none());

        // Logout: refused, and the session lives on.
        let res = c
            .post(s.url("/logout"))
            .header("cookie", &me)
            .header(*name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "logout with {what}");
        assert!(res.headers().get("set-cookie").is_none());
        assert!(res.headers().get("clear-site-data").is_none());
        assert!(!detail_of(res).await.is_empty());
        assert_eq!(get_json(&s, "/profile", &me).await.0, 200, "{what}");

        // Ending another session: refused, and it lives on.
        let res = c
            .delete(s.url(&format!("/sessions/{other_id}")))
            .header("cookie", &me)
            .header(*name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "DELETE /sessions with {what}");
        assert!(!detail_of(res).await.is_empty());
        assert_eq!(get_json(&s, "/profile", &other).await.0, 200, "{what}");

        // A password change: refused, and the old password still works.
        let res = c
            .post(s.url("/password"))
            .header("cookie", &me)
            .header(*name, value)
            .json(&json!({"current_password": PASSWORD, "new_password": "violet harbor quantum pebble"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "POST /password with {what}");
        assert_eq!(get_json(&s, "/profile", &other).await.0, 200, "{what}");
    }
    // Nothing changed: both sessions and the password are as they were.
    let (_, list) = get_json(&s, "/sessions", &me).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    login(&s, "alice", PASSWORD).await;

    // Same origin, by Origin matching Host or by Sec-Fetch-Site: allowed.
    let own_origin = format!("http://{}", s.addr);
    for (name, value) in [
        ("origin", own_origin.as_str()),
        ("sec-fetch-site", "same-origin"),
    ] {
        let res = c
            .post(s.url("/login"))
            .header(name, value)
            .json(&json!({"username": "alice", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{name}: {value}");
        let cookie = session_cookie(&s, &res);
        let res = c
            .post(s.url("/logout"))
            .header("cookie", &cookie)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "logout with {name}: {value}");
        assert_eq!(get_json(&s, "/profile", &cookie).await.0, 401);
    }
    // Neither header (curl, scripts): allowed, JSON and form alike.
    let res = sign_in(&s, "alice", PASSWORD).await;
    assert_eq!(res.status(), 200);
    let res = c
        .post(s.url("/login"))
        .form(&[("username", "alice"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // A same-origin DELETE works.
    let res = c
        .delete(s.url(&format!("/sessions/{other_id}")))
        .header("cookie", &me)
        .header("origin", &own_origin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(get_json(&s, "/profile", &other).await.0, 401);
}

// ---------------------------------------------------------------- form tokens

#[tokio::test]
async fn browser_forms_need_the_csrf_token_and_it_rotates_at_login() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let c = client();
    let origin = format!("http://{}", s.addr);

    let res = c
        .get(s.url("/login"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let pre = set_cookie(&res, "__Host-latchkey-csrf").expect("pre-session cookie");
    assert!(pre.contains("HttpOnly") && pre.contains("Secure"), "{pre}");
    let pre_cookie = format!("__Host-latchkey-csrf={}", token_of(&pre));
    let t0 = html_token(&res.text().await.unwrap());
    assert!(strong_token(&t0), "weak form token {t0:?}");

    // The page is stable for that cookie, and another browser gets another token.
    let res = c
        .get(s.url("/login"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_ne!(html_token(&res.text().await.unwrap()), t0);
    let res = c
        .get(s.url("/login"))
        .header("accept", "text/html")
        .header("cookie", &pre_cookie)
        .send()
        .await
        .unwrap();
    assert!(set_cookie(&res, "__Host-latchkey-csrf").is_none());
    assert_eq!(html_token(&res.text().await.unwrap()), t0);

    // A browser's form (it sends Origin or Sec-Fetch-Site) without the right token: 403.
    let bad_tokens: Vec<Option<String>> = vec![
        None,
        Some(String::new()),
        Some("0".repeat(t0.len())),
        Some(format!("{}x", &t0[..t0.len() - 1])),
    ];
    for marker in [
        ("origin", origin.as_str()),
        ("sec-fetch-site", "same-origin"),
    ] {
        for token in &bad_tokens {
            let mut form = vec![("username", "alice"), ("password", PASSWORD)];
            if let Some(t) = token {
                form.push(("csrf_token", t));
            }
            let res = c
                .post(s.url("/login"))
                .header(marker.0, marker.1)
                .header("cookie", &pre_cookie)
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 403, "{marker:?} token {token:?}");
            assert!(set_cookie(&res, s.cookie_name()).is_none());
            assert!(!detail_of(res).await.is_empty());
        }
        // The right token without the cookie it is bound to: 403.
        let res = c
            .post(s.url("/login"))
            .header(marker.0, marker.1)
            .form(&[
                ("username", "alice"),
                ("password", PASSWORD),
                ("csrf_token", &t0),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{marker:?} token without its cookie");
    }

    // With the token and its cookie: signed in, sent on (303) to a same-site
    // `next` or to /profile.
    for (next, want) in [
        (None, "/profile"),
        (Some("/sessions"), "/sessions"),
        (Some(EVIL), "/profile"),
        (Some("//evil.example/x"), "/profile"),
    ] {
        let mut form = vec![
            ("username", "alice"),
            ("password", PASSWORD),
            ("csrf_token", t0.as_str()),
        ];
        if let Some(n) = next {
            form.push(("next", n));
        }
        let res = c
            .post(s.url("/login"))
            .header("accept", "text/html")
            .header("origin", &origin)
            .header("cookie", &pre_cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303, "next {next:?}");
        assert_eq!(header(&res, "location"), want, "next {next:?}");
        assert!(set_cookie(&res, s.cookie_name()).is_some());
    }

    // Sign in once more and take the signed-in pages' token.
    let res = c
        .post(s.url("/login"))
        .header("accept", "text/html")
        .header("sec-fetch-site", "same-origin")
        .header("cookie", &pre_cookie)
        .form(&[
            ("username", "alice"),
            ("password", PASSWORD),
            ("csrf_token", &t0),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let session = session_cookie(&s, &res);
    let both = format!("{session}; {pre_cookie}");
    let page = |path: &'static str| {
        let c = c.clone();
        let both = both.clone();
        let url = s.url(path);
        async move {
            let res = c
                .get(url)
                .header("accept", "text/html")
                .header("cookie", both)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{path}");
            html_token(&res.text().await.unwrap())
        }
    };
    let t1 = page("/profile").await;
    assert!(strong_token(&t1), "weak session form token {t1:?}");
    assert_ne!(t1, t0, "the form token rotates at login");
    assert_eq!(page("/password").await, t1);
    assert_eq!(page("/sessions").await, t1);

    // Signed-in form POST /logout: a wrong token, or the token from before
    // sign-in, is refused and the session lives on.
    for wrong in ["nope", t0.as_str(), &format!("{}A", &t1[..t1.len() - 1])] {
        if wrong == t1 {
            continue;
        }
        let res = c
            .post(s.url("/logout"))
            .header("accept", "text/html")
            .header("origin", &origin)
            .header("cookie", &both)
            .form(&[("csrf_token", wrong)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "logout with token {wrong:?}");
        assert!(res.headers().get("clear-site-data").is_none());
        assert_eq!(get_json(&s, "/profile", &session).await.0, 200);
    }
    let res = c
        .post(s.url("/logout"))
        .header("origin", &origin)
        .header("cookie", &both)
        .form(&[("csrf_token", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // The session's own token works.
    let res = c
        .post(s.url("/logout"))
        .header("accept", "text/html")
        .header("origin", &origin)
        .header("cookie", &both)
        .form(&[("csrf_token", t1.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(header(&res, "location"), "/login");
    assert_eq!(get_json(&s, "/profile", &session).await.0, 401);

    // A failed sign-in shows the form again (401) with a token that works,
    // signed out and signed in alike.
    let post_login = |cookie: String, token: String, password: &'static str| {
        let c = c.clone();
        let url = s.url("/login");
        let origin = origin.clone();
        async move {
            c.post(url)
                .header("accept", "text/html")
                .header("origin", origin)
                .header("cookie", cookie)
                .form(&[
                    ("username", "alice"),
                    ("password", password),
                    ("csrf_token", &token),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let res = post_login(pre_cookie.clone(), t0.clone(), "not it, sorry").await;
    assert_eq!(res.status(), 401);
    let html = res.text().await.unwrap();
    assert!(html.contains("Invalid credentials"));
    let again = html_token(&html);
    let res = post_login(pre_cookie.clone(), again, PASSWORD).await;
    assert_eq!(res.status(), 303, "the re-shown form's token works");
    let session = session_cookie(&s, &res);
    let both = format!("{session}; {pre_cookie}");
    let res = c
        .get(s.url("/login"))
        .header("accept", "text/html")
        .header("cookie", &both)
        .send()
        .await
        .unwrap();
    let t2 = html_token(&res.text().await.unwrap());
    assert_ne!(t2, t0);
    let res = post_login(both.clone(), t2, "not it, sorry").await;
    assert_eq!(res.status(), 401);
    let again = html_token(&res.text().await.unwrap());
    let res = post_login(both.clone(), again, PASSWORD).await;
    assert_eq!(
        res.status(),
        303,
        "a signed-in browser's re-shown form's token works"
    );
    assert_eq!(get_json(&s, "/profile", &session).await.0, 401, "rotated");
}

#[tokio::test]
async fn json_routes_refuse_other_content_types() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let me = login(&s, "alice", PASSWORD).await;
    let c = client();
    for ctype in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "multipart/form-data; boundary=x",
        "application/xml",
    ] {
        for (path, body) in [
            ("/login", r#"{"username":"alice","password":"x"}"#),
            (
                "/password",
                r#"{"current_password":"x","new_password":"y"}"#,
            ),
            ("/logout", "{}"),
        ] {
            let res = c
                .post(s.url(path))
                .header("cookie", &me)
                .header("content-type", ctype)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 415, "{path} as {ctype}");
            assert!(!detail_of(res).await.is_empty());
        }
    }
    // The refused logout changed nothing.
    assert_eq!(get_json(&s, "/profile", &me).await.0, 200);
}

// ---------------------------------------------------------------- throttling

#[tokio::test]
async fn sixth_attempt_for_a_user_from_one_address_is_throttled() {
    let s = Server::start(Options {
        args: vec!["--trusted-proxies".into(), "127.0.0.1".into()],
        ..Default::default()
    });
    s.add_user("alice", "user");
    let a = Some("10.0.0.1");
    for i in 0..5 {
        let (st, _) = attempt_status(&s, "alice", "wrong password number", a).await;
        assert_eq!(st, 401, "failure {i}");
    }
    // The sixth gets 429 whatever the password.
    let (st, retry) = attempt_status(&s, "alice", PASSWORD, a).await;
    assert_eq!(st, 429);
    assert_retry_after(retry);
    let (st, retry) = attempt_status(&s, "alice", "wrong password number", a).await;
    assert_eq!(st, 429);
    assert_retry_after(retry);
    // Another address signs in.
    let (st, _) = attempt_status(&s, "alice", PASSWORD, Some("10.0.0.2")).await;
    assert_eq!(st, 200);
    // ...which does not lift A's block, and A may still try other usernames.
    let (st, _) = attempt_status(&s, "alice", PASSWORD, a).await;
    assert_eq!(st, 429);
    let (st, _) = attempt_status(&s, "bob", "whatever it is", a).await;
    assert_eq!(st, 401);

    // A success clears the address's count: 4 failures, success, 4 failures
    // and the next is still judged on its password.
    let c3 = Some("10.0.0.3");
    for _ in 0..4 {
        assert_eq!(attempt_status(&s, "alice", "nope nope", c3).await.0, 401);
    }
    assert_eq!(attempt_status(&s, "alice", PASSWORD, c3).await.0, 200);
    for _ in 0..4 {
        assert_eq!(attempt_status(&s, "alice", "nope nope", c3).await.0, 401);
    }
    assert_eq!(
        attempt_status(&s, "alice", "nope nope", c3).await.0,
        401,
        "the fifth failure after a success is not blocked"
    );
    let (st, retry) = attempt_status(&s, "alice", PASSWORD, c3).await;
    assert_eq!(st, 429, "counting resumed after the success");
    assert_retry_after(retry);
    assert!(s.log().contains("login_throttled"));
}

#[tokio::test]
async fn one_address_spraying_many_usernames_is_throttled() {
    let s = TestApp::spawn(Options {
        args: vec![
            "--trusted-proxies".into(),
            "127.0.0.1".into(),
            "--max-failures-per-address".into(),
            "10".into(),
        ],
        ..Default::default()
    })
    .await;
    s.add_user("alice", "user");
    let sprayer = Some("10.0.0.7");
    for i in 0..10 {
        let (st, _) = attempt_status(&s, &format!("user{i}"), "Spring2024!", sprayer).await;
        assert_eq!(st, 401, "failure {i}");
    }
    for user in ["alice", "someone-new", "user0"] {
        let (st, retry) = attempt_status(&s, user, PASSWORD, sprayer).await;
        assert_eq!(st, 429, "{user} from the spraying address");
        assert_retry_after(retry);
    }
    let (st, _) = attempt_status(&s, "alice", PASSWORD, Some("10.0.0.8")).await;
    assert_eq!(st, 200, "another address is fine");
    let (st, _) = attempt_status(&s, "someone-new", "x", Some("10.0.0.8")).await;
    assert_eq!(st, 401);
}

#[tokio::test]
async fn forwarded_for_is_ignored_without_a_trusted_proxy() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    for _ in 0..5 {
        assert_eq!(attempt_status(&s, "alice", "nope nope", None).await.0, 401);
    }
    for spoof in ["10.0.0.9", "10.0.0.10, 10.0.0.11", "2001:db8::1"] {
        let (st, retry) = attempt_status(&s, "alice", PASSWORD, Some(spoof)).await;
        assert_eq!(st, 429, "X-Forwarded-For: {spoof} escaped the block");
        assert_retry_after(retry);
    }
    // Sessions record the real peer, not the spoofed header.
    let s2 = TestApp::spawn(Options::default()).await;
    s2.add_user("bob", "user");
    let res = attempt(&s2, "bob", PASSWORD, Some("10.9.9.9")).await;
    assert_eq!(res.status(), 200);
    let cookie = session_cookie(&s2, &res);
    let (_, list) = get_json(&s2, "/sessions", &cookie).await;
    assert_eq!(list[0]["ip"], "127.0.0.1", "{list}");
}

// ---------------------------------------------------------------- enumeration

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Times one failed login; asserts it is the plain 401.
async fn timed_failure(c: &reqwest::Client, s: &Server, user: &str) -> Duration {
    let start = Instant::now();
    let res = c
        .post(s.url("/login"))
        .json(&json!({"username": user, "password": "not the password at all"}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    let took = start.elapsed();
    assert_eq!(status, 401, "{user}: {body}");
    assert_eq!(body, r#"{"detail":"Invalid credentials"}"#);
    took
}

#[tokio::test]
async fn unknown_user_and_wrong_password_take_the_same_time() {
    // No other test's server loads the CPU while this one measures.
    let _alone = alone().await;
    // Limits raised so that the measurement itself is never throttled.
    let s = Server::start(Options {
        args: [
            "--max-failures-per-user-address",
            "1000",
            "--max-failures-per-address",
            "1000",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    });
    s.add_user("alice", "user");
    let c = client();
    // Warm up both paths (the dummy hash is made on first use).
    timed_failure(&c, &s, "ghost-warmup").await;
    timed_failure(&c, &s, "alice").await;
    let mut last = String::new();
    // A loaded 2-core machine is noisy: up to three rounds, each on its own.
    for round in 0..3 {
        // A success clears alice's counts so no attempt is throttled.
        assert_eq!(attempt(&s, "alice", PASSWORD, None).await.status(), 200);
        let ghost = format!("ghost{round}");
        let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
        for i in 0..15 {
            if i % 2 == 0 {
                unknown.push(timed_failure(&c, &s, &ghost).await);
                wrong.push(timed_failure(&c, &s, "alice").await);
            } else {
                wrong.push(timed_failure(&c, &s, "alice").await);
                unknown.push(timed_failure(&c, &s, &ghost).await);
            }
        }
        let (mu, mw) = (median(&mut unknown), median(&mut wrong));
        let ratio = mu.max(mw).as_secs_f64() / mu.min(mw).as_secs_f64();
        last = format!(
            "round {round}: median unknown {mu:?}, wrong password {mw:?}, ratio {ratio:.2}"
        );
        eprintln!("{last}");
        if ratio <= 1.3 {
            return;
        }
    }
    panic!("timing reveals which users exist: {last}");
}

// ---------------------------------------------------------------- password policy

async fn change_password(
    s: &impl Target,
    cookie: &mut String,
    current: &str,
    new: &str,
) -> (u16, String) {
    let body = json!({"current_password": current, "new_password": new});
    let res = post(s, "/password", cookie, body).await;
    let status = res.status().as_u16();
    if status == 200 {
        *cookie = session_cookie(s, &res);
        return (status, String::new());
    }
    (status, detail_of(res).await)
}

/// A 256-character password without patterns (a fixed pseudo-random walk).
fn long_password() -> String {
    let alphabet: Vec<char> = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789-_.!?#%+=~"
        .chars()
        .collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..256)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % alphabet.len() as u64) as usize]
        })
        .collect()
}

/// Long enough, but common, or built from the username ("quorvex", which
/// is in no dictionary) or from "latchkey": zxcvbn given both scores them
/// below 3, though a password checker without that context would not.
const GUESSABLE: [&str; 4] = [
    "passwordpassword",
    "quorvex12345678",
    "latchkey12345678",
    "quorvexquorvex1",
];

#[tokio::test]
async fn password_policy_over_http() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("quorvex", "user");
    let mut me = login(&s, "quorvex", PASSWORD).await;

    // 14 characters: too short, and the reason names the minimum.
    let (st, why) = change_password(&s, &mut me, PASSWORD, "kq8vz3mxt7bw2p").await;
    assert_eq!(st, 422);
    assert!(
        why.contains("15"),
        "reason does not name the minimum: {why}"
    );
    // Common, or built from the username or "latchkey": refused with a reason.
    for weak in GUESSABLE {
        let (st, why) = change_password(&s, &mut me, PASSWORD, weak).await;
        assert_eq!(st, 422, "{weak} accepted");
        assert!(!why.is_empty());
    }
    // Refusals changed nothing.
    assert_eq!(get_json(&s, "/profile", &me).await.0, 200);
    login(&s, "quorvex", PASSWORD).await;

    // 256 characters: accepted and never truncated.
    let long = long_password();
    assert_eq!(long.chars().count(), 256);
    let (st, why) = change_password(&s, &mut me, PASSWORD, &long).await;
    assert_eq!(st, 200, "{why}");
    login(&s, "quorvex", &long).await;
    assert_eq!(
        attempt(&s, "quorvex", &long[..255], None).await.status(),
        401,
        "the password was truncated"
    );
    assert_eq!(attempt(&s, "quorvex", PASSWORD, None).await.status(), 401);

    // Any Unicode, spaces included (also leading and trailing ones).
    let unicode = "  Ünïcødé snowman ☃ walks into 雪の夜 bar  ";
    let (st, why) = change_password(&s, &mut me, &long, unicode).await;
    assert_eq!(st, 200, "{why}");
    login(&s, "quorvex", unicode).await;
    assert_eq!(
        attempt(&s, "quorvex", unicode.trim(), None).await.status(),
        401,
        "spaces were trimmed"
    );
    assert_eq!(get_json(&s, "/profile", &me).await.0, 200);
}

#[tokio::test]
async fn password_policy_in_user_add() {
    let s = TestApp::spawn(Options::default()).await;
    let add =
        |name: &str, pw: &str| s.cli(&["add", name, "--password-stdin"], Some(&format!("{pw}\n")));

    let out = add("quorvex", "kq8vz3mxt7bw2p");
    assert!(!out.status.success(), "14 characters accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("15"),
        "reason does not name the minimum: {err}"
    );
    for weak in GUESSABLE {
        let out = add("quorvex", weak);
        assert!(!out.status.success(), "{weak} accepted");
        assert!(!out.stderr.is_empty());
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
    let list = s.cli(&["list"], None);
    assert!(!String::from_utf8_lossy(&list.stdout).contains("quorvex"));

    let long = long_password();
    let out = add("quorvex", &long);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    login(&s, "quorvex", &long).await;
    assert_eq!(
        attempt(&s, "quorvex", &long[..255], None).await.status(),
        401
    );

    let unicode = " Ünïcødé snowman ☃ walks into 雪の夜 bar ";
    let out = add("bob", unicode);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    login(&s, "bob", unicode).await;
}

// ---------------------------------------------------------------- hash upgrade

async fn stored_hash(pool: &sqlx::SqlitePool, user: &str) -> String {
    sqlx::query_scalar("SELECT password_hash FROM latchkey_users WHERE username = ?")
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn weak_hashes_are_upgraded_at_login() {
    let s = Server::start(Options::default());
    s.add_user("weak", "user");
    let weak = latchkey::password::PasswordHasher::new(
        latchkey::password::HashParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
        1,
    )
    .hash(PASSWORD)
    .await
    .unwrap();
    let pool = sqlx::SqlitePool::connect(&s.database).await.unwrap();
    sqlx::query("UPDATE latchkey_users SET password_hash = ? WHERE username = ?")
        .bind(&weak)
        .bind("weak")
        .execute(&pool)
        .await
        .unwrap();
    assert!(stored_hash(&pool, "weak")
        .await
        .starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));

    // A failed login does not touch it.
    assert_eq!(
        attempt(&s, "weak", "not it at all", None).await.status(),
        401
    );
    assert_eq!(stored_hash(&pool, "weak").await, weak);

    login(&s, "weak", PASSWORD).await;
    let upgraded = stored_hash(&pool, "weak").await;
    assert!(
        upgraded.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "not upgraded: {upgraded}"
    );
    // The new hash holds the same password.
    login(&s, "weak", PASSWORD).await;
    assert_eq!(
        attempt(&s, "weak", "not it at all", None).await.status(),
        401
    );
    assert_eq!(stored_hash(&pool, "weak").await, upgraded, "rehashed again");
    assert!(s.log().contains("password_rehashed"));
    pool.close().await;
}

// ---------------------------------------------------------------- hostile input

/// One hostile request and what may come of it.
#[derive(Clone)]
struct Hostile {
    what: String,
    method: reqwest::Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// A closed connection is an acceptable answer.
    may_close: bool,
}

impl Hostile {
    fn post(what: &str, path: &str, ctype: &str, body: impl Into<Vec<u8>>) -> Self {
        Hostile {
            what: what.to_owned(),
            method: reqwest::Method::POST,
            path: path.to_owned(),
            headers: vec![("content-type", ctype.to_owned())],
            body: body.into(),
            may_close: false,
        }
    }
    fn json(what: &str, v: Value) -> Self {
        Self::post(what, "/login", "application/json", v.to_string())
    }

    /// Sends it and checks the answer: 4xx with a detail (or a closed
    /// connection where allowed). Returns the status.
    async fn check(&self, s: &Server) -> Option<u16> {
        let mut req = client()
            .request(self.method.clone(), s.url(&self.path))
            .body(self.body.clone());
        for (k, v) in &self.headers {
            req = req.header(*k, v);
        }
        let res = match req.send().await {
            Ok(r) => r,
            Err(e) if self.may_close && !e.is_timeout() => return None,
            Err(e) => panic!("{}: {e:?}", self.what),
        };
        let status = res.status().as_u16();
        assert!(
            (400..500).contains(&status),
            "{}: status {status}",
            self.what
        );
        match res.bytes().await {
            Ok(body) => {
                let v: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
                    panic!(
                        "{}: not JSON: {}",
                        self.what,
                        String::from_utf8_lossy(&body)
                    )
                });
                assert!(v["detail"].is_string(), "{}: {v}", self.what);
            }
            Err(e) => assert!(self.may_close, "{}: {e:?}", self.what),
        }
        Some(status)
    }
}

fn hostile_requests(session: &str) -> Vec<Hostile> {
    let big_cookie = format!("latchkey-junk={}", "x".repeat(16 * 1024));
    let mut v = vec![
        Hostile::json("SQL injection username", json!({"username": "' OR 1=1 --", "password": "x"})),
        Hostile::json("SQL injection username 2", json!({"username": "admin'--", "password": "' OR '1'='1"})),
        Hostile::json(
            "SQL injection drop table",
            json!({"username": "\"; DROP TABLE latchkey_users; --", "password": "x"}),
        ),
        Hostile::json("10k username", json!({"username": "a".repeat(10_000), "password": "x"})),
        Hostile::json("10k password", json!({"username": "nobody", "password": "p".repeat(10_000)})),
        Hostile::json("NUL in username", json!({"username": "ali\u{0}ce", "password": "x"})),
        Hostile::json("control characters", json!({"username": "\u{1b}[31m\r\nx", "password": "\u{7f}"})),
        Hostile::json("empty strings", json!({"username": "", "password": ""})),
        Hostile::json("missing fields", json!({})),
        Hostile::json("wrong types", json!({"username": 1, "password": ["x"]})),
        Hostile::json("null fields", json!({"username": null, "password": null})),
        Hostile::json("array body", json!([1, 2, 3])),
        Hostile::post("malformed JSON", "/login", "application/json", "{\"username\": \"a\", \"password\":"),
        Hostile::post("trailing garbage", "/login", "application/json", "{\"username\":\"a\",\"password\":\"b\"}}}"),
        Hostile::post("non-UTF-8 JSON", "/login", "application/json", vec![b'{', b'"', 0xff, 0xfe, b'"', b'}']),
        Hostile::post("lone surrogate", "/login", "application/json", r#"{"username":"\ud800","password":"x"}"#),
        Hostile::post("deep nesting", "/login", "application/json", "[".repeat(60_000)),
        Hostile::post("form non-UTF-8", "/login", "application/x-www-form-urlencoded", "username=%FF%FE&password=x"),
        Hostile::post("form raw bytes", "/login", "application/x-www-form-urlencoded", vec![b'u', b'=', 0xc3, 0x28]),
        Hostile::post("form bad escapes", "/login", "application/x-www-form-urlencoded", "username=%zz%&password=%"),
        Hostile::post("form missing fields", "/login", "application/x-www-form-urlencoded", "=&=&&==&password=x"),
        Hostile::post(
            "form many fields",
            "/login",
            "application/x-www-form-urlencoded",
            "a=b&".repeat(15_000),
        ),
        Hostile::post("form injection", "/login", "application/x-www-form-urlencoded", "username=%27+OR+1%3D1+--&password=x"),
        Hostile::post("no content type", "/login", "", "username=a&password=b"),
        Hostile::post("bad content type", "/login", "application/json;;;===", "{}"),
        Hostile::post("password route malformed", "/password", "application/json", "{{{"),
        Hostile {
            what: "16 KiB cookie".into(),
            method: reqwest::Method::GET,
            path: "/profile".into(),
            headers: vec![("cookie", big_cookie.clone())],
            body: Vec::new(),
            may_close: true,
        },
        Hostile {
            what: "16 KiB cookie on login".into(),
            method: reqwest::Method::POST,
            path: "/login".into(),
            headers: vec![
                ("cookie", format!("__Host-latchkey={}", "A".repeat(16 * 1024))),
                ("content-type", "application/json".into()),
            ],
            body: br#"{"username":"nobody","password":"x"}"#.to_vec(),
            may_close: true,
        },
        Hostile {
            what: "forged session cookies".into(),
            method: reqwest::Method::GET,
            path: "/profile".into(),
            headers: vec![(
                "cookie",
                "__Host-latchkey=../../etc/passwd; __Host-latchkey=' OR 1=1 --; __Host-latchkey=\"\"".into(),
            )],
            body: Vec::new(),
            may_close: false,
        },
        Hostile {
            what: "long session id".into(),
            method: reqwest::Method::DELETE,
            path: format!("/sessions/{}", "9".repeat(10_000)),
            headers: vec![("cookie", session.to_owned())],
            body: Vec::new(),
            may_close: false,
        },
        Hostile {
            what: "injection session id".into(),
            method: reqwest::Method::DELETE,
            path: "/sessions/%27%20OR%201%3D1%20--".into(),
            headers: vec![("cookie", session.to_owned())],
            body: Vec::new(),
            may_close: false,
        },
        Hostile {
            what: "bad percent path".into(),
            method: reqwest::Method::DELETE,
            path: "/sessions/%FF%00".into(),
            headers: vec![("cookie", session.to_owned())],
            body: Vec::new(),
            may_close: false,
        },
    ];
    for h in &mut v {
        h.headers.retain(|(_, val)| !val.is_empty());
    }
    v
}

/// Over-limit bodies: 413 with a detail. A server may close the connection
/// while a large upload is still being sent; then the attempt is repeated.
async fn expect_413(s: &Server, what: &str, ctype: &str, body: Vec<u8>) {
    let mut last = String::new();
    for _ in 0..5 {
        let res = client()
            .post(s.url("/login"))
            .header("content-type", ctype)
            .body(body.clone())
            .send()
            .await;
        match res {
            Ok(res) => {
                assert_eq!(res.status(), 413, "{what}");
                let v: Value = res.json().await.unwrap();
                assert!(v["detail"].as_str().unwrap().contains("64 KiB"), "{v}");
                return;
            }
            Err(e) => last = format!("{e:?}"),
        }
    }
    panic!("{what}: no answer: {last}");
}

/// Sends a chunked body (no Content-Length) over a raw connection; returns the status line.
fn chunked_post(addr: &str, size: usize) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        addr
    );
    conn.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 8192];
    let mut sent = 0;
    while sent < size {
        let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
        piece.extend_from_slice(&chunk);
        piece.extend_from_slice(b"\r\n");
        if conn.write_all(&piece).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = conn.write_all(b"0\r\n\r\n");
    let mut buf = Vec::new();
    let _ = conn.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn hostile_input_gets_4xx_details_and_the_server_keeps_serving() {
    let s = Server::start(Options::default());
    s.add_user("alice", "user");
    let me = login(&s, "alice", PASSWORD).await;
    let c = client();

    // Oversized bodies.
    expect_413(
        &s,
        "2 MB JSON",
        "application/json",
        vec![b' '; 2 * 1024 * 1024],
    )
    .await;
    expect_413(
        &s,
        "100 KB form",
        "application/x-www-form-urlencoded",
        format!("username=alice&password={}", "p".repeat(100_000)).into_bytes(),
    )
    .await;
    let addr = s.addr.clone();
    let line = tokio::task::spawn_blocking(move || chunked_post(&addr, 200 * 1024))
        .await
        .unwrap();
    assert!(line.contains(" 413 "), "chunked 200 KB body: {line:?}");

    // Each hostile request alone.
    let all = hostile_requests(&me);
    for h in &all {
        h.check(&s).await;
    }
    // The users table is intact and alice still signs in.
    assert_eq!(get_json(&s, "/profile", &me).await.0, 200);
    login(&s, "alice", PASSWORD).await;

    // A burst of all of them at once, oversized bodies included.
    let mut set = tokio::task::JoinSet::new();
    let server = std::sync::Arc::new(s);
    for i in 0..50 {
        let h = all[i % all.len()].clone();
        let s = server.clone();
        set.spawn(async move {
            h.check(&s).await;
        });
    }
    for _ in 0..4 {
        let s = server.clone();
        set.spawn(async move {
            expect_413(
                &s,
                "2 MB JSON in the burst",
                "application/json",
                vec![b'{'; 2 * 1024 * 1024],
            )
            .await;
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Some(r) = tokio::time::timeout_at(deadline.into(), set.join_next())
        .await
        .expect("the burst hung")
    {
        r.unwrap();
    }
    let s = &*server;
    let res = c.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(get_json(s, "/profile", &me).await.0, 200);
    login(s, "alice", PASSWORD).await;
    assert!(!s.log().contains("panicked"), "{}", s.log());
}

// ---------------------------------------------------------------- hygiene

#[tokio::test]
async fn responses_carry_cache_hsts_and_page_security_headers() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    let c = client();

    let check_no_store = |res: &reqwest::Response| {
        assert_eq!(header(res, "cache-control"), "no-store", "{}", res.url());
    };
    let check_hsts = |res: &reqwest::Response| {
        let v = header(res, "strict-transport-security");
        assert!(v.contains("max-age=31536000"), "{v}");
    };
    let check_page = |res: &reqwest::Response| {
        assert!(header(res, "content-type").starts_with("text/html"));
        let csp = header(res, "content-security-policy");
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(header(res, "x-content-type-options"), "nosniff");
        assert_eq!(header(res, "referrer-policy"), "same-origin");
    };

    // Login: page, success, failure.
    let res = c
        .get(s.url("/login"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    check_page(&res);
    check_no_store(&res);
    check_hsts(&res);
    let res = attempt(&s, "alice", PASSWORD, None).await;
    assert_eq!(res.status(), 200);
    check_no_store(&res);
    check_hsts(&res);
    assert_eq!(header(&res, "x-content-type-options"), "nosniff");
    let me = session_cookie(&s, &res);
    let res = attempt(&s, "alice", "not the password", None).await;
    assert_eq!(res.status(), 401);
    check_no_store(&res);
    check_hsts(&res);

    // Authenticated answers, JSON and pages.
    for path in ["/profile", "/sessions", "/password"] {
        let res = c
            .get(s.url(path))
            .header("cookie", &me)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        check_no_store(&res);
        check_hsts(&res);
        let res = c
            .get(s.url(path))
            .header("cookie", &me)
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path} page");
        check_page(&res);
        check_no_store(&res);
        check_hsts(&res);
    }
    // Error answers too carry HSTS.
    let res = c
        .post(s.url("/logout"))
        .header("origin", EVIL)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    check_hsts(&res);
    let res = c.get(s.url("/nope")).send().await.unwrap();
    check_hsts(&res);
    let res = c.get(s.url("/healthz")).send().await.unwrap();
    check_hsts(&res);
    // Logout answer.
    let res = c
        .post(s.url("/logout"))
        .header("cookie", &me)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    check_no_store(&res);
    check_hsts(&res);
}

// ---------------------------------------------------------------- audit log

/// Lines of the log that record audit `event`.
fn event_lines<'a>(log: &'a str, event: &str) -> Vec<&'a str> {
    let quoted = format!("event=\"{event}\"");
    let bare = format!("event={event}");
    log.lines()
        .filter(|l| l.contains(&quoted) || l.split_whitespace().any(|w| w == bare))
        .collect()
}

#[tokio::test]
async fn audit_log_records_events_but_no_secrets() {
    let s = Server::start(Options::default());
    s.add_user("alice", "user");
    let c = client();
    let wrong = "a wrong guess of a password";
    let new_pw = "violet harbor quantum pebble";
    let mut secrets: Vec<String> = vec![PASSWORD.into(), wrong.into(), new_pw.into()];

    assert_eq!(attempt(&s, "alice", wrong, None).await.status(), 401);
    let res = attempt(&s, "alice", PASSWORD, None).await;
    assert_eq!(res.status(), 200);
    let mut me = session_cookie(&s, &res);
    secrets.push(token_of(&me));
    assert_eq!(get_json(&s, "/profile", &me).await.0, 200);
    let res = c
        .get(s.url("/profile"))
        .header("cookie", &me)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    secrets.push(html_token(&res.text().await.unwrap()));
    let (st, why) = change_password(&s, &mut me, PASSWORD, new_pw).await;
    assert_eq!(st, 200, "{why}");
    secrets.push(token_of(&me));
    let res = c
        .post(s.url("/logout"))
        .header("cookie", &me)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let log = s.wait_log("logout", Duration::from_secs(10));
    for event in ["login_failed", "login", "password_changed", "logout"] {
        let lines = event_lines(&log, event);
        assert!(!lines.is_empty(), "no {event} event in the log:\n{log}");
        assert!(
            lines.iter().any(|l| l.contains("alice")),
            "{event} lines do not name the user: {lines:?}"
        );
    }
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the log holds a secret ({} chars):\n{log}",
            secret.len()
        );
    }
    // Nor the passwords percent- or JSON-encoded.
    for pw in [PASSWORD, wrong, new_pw] {
        assert!(!log.contains(&pw.replace(' ', "+")));
        assert!(!log.contains(&pw.replace(' ', "%20")));
    }
}
