//! Forward authentication: `/auth/verify` over HTTP, the cookie domain and
//! the redirect rules; then the same behind real reverse proxies (nginx's
//! `auth_request`, Caddy's `forward_auth`, each with the configuration
//! `docs/` ships, run unprivileged from a temporary directory on free
//! loopback ports) in front of a small app that echoes the headers it got;
//! and a real browser (Chromium) from the guarded app through sign-in and
//! back, behind nginx with a cookie domain and behind Caddy on one host
//! (the README's walkthrough, `docs/Caddyfile.local`).
//!
//! The proxy tests need `nginx` and `caddy` (Debian: `apt-get install
//! nginx caddy`; `.ci/run` installs them); without one, its test prints
//! `SKIPPED: ...` and passes.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

use crate::browser::{Browser, Driver};
use crate::support::{bin, client, login, Options, Target, TempDir, TestApp, PASSWORD};

/// Every test here is over well within this.
const BOUND: Duration = Duration::from_secs(120);

/// Runs `test` within [`BOUND`].
async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(BOUND, test)
        .await
        .expect("the test took longer than its bound");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// The `rd` query parameter of a sign-in URL, if it has one.
fn rd_of(location: &str) -> Option<String> {
    url::Url::parse(location)
        .unwrap_or_else(|e| panic!("{location:?}: {e}"))
        .query_pairs()
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned())
}

/// A dev server trusting this machine as its proxy, with users alice
/// (admin) and bob (user).
async fn verify_app(extra: &[&str]) -> TestApp {
    let mut args = vec!["--trusted-proxies", "127.0.0.1"];
    args.extend_from_slice(extra);
    let s = TestApp::spawn(Options {
        dev: true,
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Options::default()
    })
    .await;
    s.add_user("alice", "admin");
    s.add_user("bob", "user");
    s
}

/// `method /auth/verify?query` with `headers` (and `cookie` when given).
async fn verify(
    s: &impl Target,
    method: &str,
    query: &str,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client().request(
        method.parse().unwrap(),
        s.url(&format!("/auth/verify{query}")),
    );
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

// ------------------------------------------------------------ /auth/verify

#[tokio::test]
async fn verify_answers_every_method_with_the_user_in_headers_and_an_empty_body() {
    bounded(async {
        let s = verify_app(&[]).await;
        let alice = login(&s, "alice", PASSWORD).await;
        let bob = login(&s, "bob", PASSWORD).await;
        for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            let res = verify(&s, method, "", Some(&alice), &[]).await;
            assert_eq!(res.status(), 200, "{method}");
            assert_eq!(header(&res, "x-latchkey-user").as_deref(), Some("alice"));
            assert_eq!(header(&res, "remote-user").as_deref(), Some("alice"));
            assert_eq!(header(&res, "x-latchkey-role").as_deref(), Some("admin"));
            assert_eq!(header(&res, "cache-control").as_deref(), Some("no-store"));
            assert!(header(&res, "set-cookie").is_none(), "{method}");
            assert_eq!(res.bytes().await.unwrap().len(), 0, "{method}: a body");
        }
        // ?role=R: 403 for the other roles, 200 for R.
        let res = verify(&s, "GET", "?role=admin", Some(&bob), &[]).await;
        assert_eq!(res.status(), 403);
        assert!(header(&res, "x-latchkey-user").is_none());
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["detail"], "Forbidden");
        let res = verify(&s, "GET", "?role=admin", Some(&alice), &[]).await;
        assert_eq!(res.status(), 200);
        let res = verify(&s, "GET", "?role=user", Some(&bob), &[]).await;
        assert_eq!(header(&res, "x-latchkey-user").as_deref(), Some("bob"));
        assert_eq!(header(&res, "x-latchkey-role").as_deref(), Some("user"));

        // Signed out: 401 whatever the Accept, never a page or a 303.
        for accept in [
            "text/html,application/xhtml+xml",
            "application/json",
            "*/*",
            "",
        ] {
            for cookie in [None, Some("latchkey=not-a-token")] {
                let res = verify(&s, "GET", "", cookie, &[("accept", accept)]).await;
                assert_eq!(res.status(), 401, "Accept: {accept:?}");
                assert!(header(&res, "x-latchkey-user").is_none());
                let body: Value = res.json().await.unwrap();
                assert_eq!(body["detail"], "Not authenticated");
            }
        }
        // After logout the cookie gets 401 here too.
        let res = crate::support::post(&s, "/logout", &bob, json!({})).await;
        assert_eq!(res.status(), 200);
        assert_eq!(verify(&s, "GET", "", Some(&bob), &[]).await.status(), 401);
    })
    .await;
}

#[tokio::test]
async fn a_signed_out_request_is_sent_to_sign_in_with_the_url_it_came_from() {
    bounded(async {
        let s = verify_app(&["--allowed-redirect-hosts", "app.example.test"]).await;
        let login_url = format!("{}/login", s.base);
        let fwd = [
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.test:8443"),
            ("x-forwarded-uri", "/docs/a%20b?q=1&r=%22x%22"),
            ("x-forwarded-method", "GET"),
        ];
        // ?redirect=1: 302 to PUBLIC_URL/login?rd=URL.
        let res = verify(&s, "GET", "?redirect=1", None, &fwd).await;
        assert_eq!(res.status(), 302);
        let to = header(&res, "location").unwrap();
        assert!(to.starts_with(&format!("{login_url}?rd=")), "{to}");
        assert_eq!(
            rd_of(&to).as_deref(),
            Some("https://app.example.test:8443/docs/a%20b?q=1&r=%22x%22")
        );
        // Plain 401 for nginx names the same place in Location.
        let res = verify(&s, "GET", "", None, &fwd).await;
        assert_eq!(res.status(), 401);
        assert_eq!(header(&res, "location"), Some(to.clone()));
        // X-Original-URL when the X-Forwarded-* trio is missing.
        let res = verify(
            &s,
            "GET",
            "?redirect=1",
            None,
            &[("x-original-url", "http://app.example.test/wiki")],
        )
        .await;
        let to = header(&res, "location").unwrap();
        assert_eq!(rd_of(&to).as_deref(), Some("http://app.example.test/wiki"));

        // A URL on a host not allowed, or malformed, is left out: sign in
        // and land on /profile.
        for bad in [
            [
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-uri", "/"),
            ],
            [
                ("x-forwarded-host", "app.example.test.evil.example"),
                ("x-forwarded-uri", "/"),
            ],
            [
                ("x-forwarded-host", "evil.example@app.example.test"),
                ("x-forwarded-uri", "/"),
            ],
            [
                ("x-forwarded-host", "app.example.test"),
                ("x-forwarded-uri", "\\\\evil.example"),
            ],
            [
                ("x-original-url", "https://evil.example/"),
                ("accept", "text/html"),
            ],
            [
                ("x-original-url", "//evil.example/"),
                ("accept", "text/html"),
            ],
        ] {
            let res = verify(&s, "GET", "?redirect=1", None, &bad).await;
            assert_eq!(res.status(), 302, "{bad:?}");
            assert_eq!(header(&res, "location").unwrap(), login_url, "{bad:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    bounded(async {
        // This machine is not the trusted proxy here.
        let s = TestApp::spawn(Options {
            dev: true,
            args: [
                "--trusted-proxies",
                "10.0.0.1",
                "--allowed-redirect-hosts",
                "app.example.test",
            ]
            .map(String::from)
            .to_vec(),
            ..Options::default()
        })
        .await;
        s.add_user("bob", "user");
        let bob = login(&s, "bob", PASSWORD).await;
        let forged = [
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.test"),
            ("x-forwarded-uri", "/x"),
            ("x-original-url", "https://app.example.test/y"),
        ];
        let res = verify(&s, "GET", "?redirect=1", None, &forged).await;
        assert_eq!(res.status(), 302);
        assert_eq!(
            header(&res, "location").unwrap(),
            format!("{}/login", s.base)
        );
        // The method and host the Origin is judged against are the
        // request's own: a forged "POST from the app's own origin" is a
        // GET to this host, and a forged same-origin claim does not help.
        let mut h = forged.to_vec();
        h.extend([
            ("x-forwarded-method", "POST"),
            ("origin", "https://evil.example"),
        ]);
        assert_eq!(verify(&s, "GET", "", Some(&bob), &h).await.status(), 200);
        let mut h = forged.to_vec();
        h.push(("origin", "https://app.example.test"));
        assert_eq!(verify(&s, "POST", "", Some(&bob), &h).await.status(), 403);
    })
    .await;
}

#[tokio::test]
async fn unsafe_methods_sent_cross_site_are_refused_against_the_forwarded_host() {
    bounded(async {
        let s = verify_app(&[]).await;
        let bob = login(&s, "bob", PASSWORD).await;
        let at = |method: &'static str, extra: &[(&'static str, &'static str)]| {
            let mut h = vec![
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "app.example.test"),
                ("x-forwarded-uri", "/form"),
                ("x-forwarded-method", method),
            ];
            h.extend_from_slice(extra);
            h
        };
        for m in ["POST", "PUT", "PATCH", "DELETE"] {
            for (refused, extra) in [
                (true, vec![("sec-fetch-site", "cross-site")]),
                (true, vec![("sec-fetch-site", "same-site")]),
                (true, vec![("origin", "https://evil.example")]),
                (true, vec![("origin", "null")]),
                (true, vec![("origin", "http://app.example.test")]),
                (false, vec![("sec-fetch-site", "same-origin")]),
                (false, vec![("origin", "https://app.example.test")]),
                (false, vec![]),
            ] {
                // The proxy may ask with GET (nginx, Caddy, Traefik) or
                // with the original method; latchkey's own cross-origin
                // check must not judge either against its own host.
                for asked in ["GET", m] {
                    let res = verify(&s, asked, "", Some(&bob), &at(m, &extra)).await;
                    let want = if refused { 403 } else { 200 };
                    assert_eq!(
                        res.status(),
                        want,
                        "{asked} asking about {m} with {extra:?}"
                    );
                    if refused {
                        let body: Value = res.json().await.unwrap();
                        assert!(body["detail"].is_string());
                    }
                }
            }
        }
        for m in ["GET", "HEAD", "OPTIONS"] {
            let res = verify(
                &s,
                "GET",
                "",
                Some(&bob),
                &at(m, &[("sec-fetch-site", "cross-site")]),
            )
            .await;
            assert_eq!(res.status(), 200, "{m}");
        }
        // Signed out and cross-site: refused before anything else.
        let res = verify(
            &s,
            "GET",
            "?redirect=1",
            None,
            &at("POST", &[("sec-fetch-site", "cross-site")]),
        )
        .await;
        assert_eq!(res.status(), 403);
    })
    .await;
}

#[tokio::test]
async fn checking_a_session_at_verify_counts_as_activity() {
    bounded(async {
        let s = verify_app(&["--idle-timeout", "3s"]).await;
        let bob = login(&s, "bob", PASSWORD).await;
        // 5 s of verify calls a second apart: past the 3 s idle timeout
        // unless each counts.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(verify(&s, "GET", "", Some(&bob), &[]).await.status(), 200);
        }
        let (status, _) = crate::support::get_json(&s, "/profile", &bob).await;
        assert_eq!(status, 200);
        // And idle, it ends.
        tokio::time::sleep(Duration::from_millis(4500)).await;
        assert_eq!(verify(&s, "GET", "", Some(&bob), &[]).await.status(), 401);
    })
    .await;
}

// ---------------------------------------------------- cookies and redirects

fn cookie_line<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
}

#[tokio::test]
async fn a_cookie_domain_shares_a_secure_prefixed_cookie_and_the_other_cookies_still_work() {
    bounded(async {
        let s = TestApp::spawn(Options {
            args: [
                "--public-url",
                "https://login.example.com",
                "--cookie-domain",
                "Example.com",
            ]
            .map(String::from)
            .to_vec(),
            ..Options::default()
        })
        .await;
        s.add_user("bob", "user");
        let res = crate::support::sign_in(&s, "bob", PASSWORD).await;
        assert_eq!(res.status(), 200);
        assert!(cookie_line(&res, "__Host-latchkey").is_none());
        let line = cookie_line(&res, "__Secure-latchkey").expect("__Secure-latchkey cookie");
        for attr in [
            "Domain=example.com",
            "Secure",
            "HttpOnly",
            "SameSite=Lax",
            "Path=/",
        ] {
            assert!(line.contains(attr), "{line} lacks {attr}");
        }
        let cookie = format!("__Secure-latchkey={}", crate::support::token_of(line));
        let (status, body) = crate::support::get_json(&s, "/profile", &cookie).await;
        assert_eq!((status, body["username"].as_str()), (200, Some("bob")));
        // Logout expires it with the same Domain, or browsers would keep it.
        let res = crate::support::post(&s, "/logout", &cookie, json!({})).await;
        let gone = cookie_line(&res, "__Secure-latchkey").unwrap();
        assert!(
            gone.contains("Domain=example.com") && gone.contains("Max-Age=0"),
            "{gone}"
        );
        // The sign-in form's CSRF cookie stays on this host, and the flash
        // cookie keeps working beside the session's new name.
        let page = s
            .send(client().get(s.url("/login")).header("accept", "text/html"))
            .await;
        let pre = cookie_line(&page, "__Host-latchkey-csrf").expect("csrf cookie");
        assert!(!pre.contains("Domain"), "{pre}");
        let html = page.text().await.unwrap();
        let token = html
            .split("name=\"csrf_token\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_owned();
        let res = s
            .send(
                client()
                    .post(s.url("/login"))
                    .header("accept", "text/html")
                    .header("origin", "https://login.example.com")
                    .header("host", "login.example.com")
                    .form(&[
                        ("username", "bob"),
                        ("password", PASSWORD),
                        ("csrf_token", &token),
                    ]),
            )
            .await;
        assert_eq!(res.status(), 303);
        assert!(cookie_line(&res, "__Secure-latchkey").is_some());
        let flash = cookie_line(&res, "__Secure-latchkey-flash").expect("flash cookie");
        assert!(
            flash.contains("signed-in") && flash.contains("Secure"),
            "{flash}"
        );
        let page = s
            .send(
                client()
                    .get(s.url("/profile"))
                    .header("accept", "text/html"),
            )
            .await;
        assert!(page.text().await.unwrap().contains("You are signed in."));

        // Development: the plain name, still with the Domain.
        let dev = TestApp::spawn(Options {
            dev: true,
            args: [
                "--public-url",
                "http://login.example.test:8000",
                "--cookie-domain",
                "example.test",
            ]
            .map(String::from)
            .to_vec(),
            ..Options::default()
        })
        .await;
        dev.add_user("bob", "user");
        let res = crate::support::sign_in(&dev, "bob", PASSWORD).await;
        let line = cookie_line(&res, "latchkey").expect("latchkey cookie");
        assert!(
            line.contains("Domain=example.test") && !line.contains("Secure"),
            "{line}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_cookie_domains_subdomains_may_post_and_other_sites_may_not() {
    bounded(async {
        let shared = verify_app(&[
            "--public-url",
            "http://login.example.test:8000",
            "--cookie-domain",
            "example.test",
        ])
        .await;
        let alone = verify_app(&[]).await;
        for (s, sibling) in [(&shared, 200), (&alone, 403)] {
            for (origin, site, want) in [
                ("http://app.example.test", Some("same-site"), sibling),
                ("http://app.example.test:9000", None, sibling),
                ("http://evil.test", Some("cross-site"), 403),
                ("http://example.test.evil.test", Some("same-site"), 403),
                ("http://app.example.test", Some("cross-site"), 403),
            ] {
                let cookie = login(s, "bob", PASSWORD).await;
                let mut req = client()
                    .post(s.url("/logout"))
                    .header("cookie", &cookie)
                    .header("origin", origin)
                    .json(&json!({}));
                if let Some(site) = site {
                    req = req.header("sec-fetch-site", site);
                }
                let res = req.send().await.unwrap();
                assert_eq!(res.status(), want, "{origin} {site:?}");
                let (status, _) = crate::support::get_json(s, "/profile", &cookie).await;
                assert_eq!(status == 401, want == 200, "{origin}: logged out?");
            }
        }
    })
    .await;
}

/// POST /login as a browser's form (no Origin: a form token is not
/// needed then) with `fields`; the 303's Location.
async fn form_sign_in(s: &impl Target, fields: &[(&str, &str)]) -> String {
    let mut form = vec![("username", "bob"), ("password", PASSWORD)];
    form.extend_from_slice(fields);
    let res = client()
        .post(s.url("/login"))
        .header("accept", "text/html")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "{fields:?}");
    header(&res, "location").unwrap()
}

#[tokio::test]
async fn after_sign_in_rd_and_next_go_only_to_allowed_hosts() {
    bounded(async {
        let s = verify_app(&["--allowed-redirect-hosts", "app.example.test,*.apps.example.test"]).await;
        for (fields, to) in [
            (vec![("rd", "http://app.example.test:8080/x?y=1")], "http://app.example.test:8080/x?y=1"),
            (vec![("rd", "https://wiki.apps.example.test/")], "https://wiki.apps.example.test/"),
            (vec![("next", "https://app.example.test/n")], "https://app.example.test/n"),
            (vec![("rd", "/sessions")], "/sessions"),
            (vec![("rd", "https://evil.example/"), ("next", "/sessions")], "/sessions"),
            (vec![("rd", "https://app.example.test/a"), ("next", "/sessions")], "https://app.example.test/a"),
            (vec![("rd", "https://evil.example/")], "/profile"),
            (vec![("rd", "https://app.example.test.evil.example/")], "/profile"),
            (vec![("rd", "https://apps.example.test/")], "/profile"),
            (vec![("rd", "https://app.example.test@evil.example/")], "/profile"),
            (vec![("rd", "https://evil.example\\.app.example.test/")], "/profile"),
            (vec![("rd", "//evil.example/")], "/profile"),
            (vec![("rd", "https:evil.example")], "/profile"),
            (vec![("rd", "javascript:alert(1)")], "/profile"),
            (vec![("rd", "https://app.example.test/\r\nSet-Cookie: x=y")], "/profile"),
            (vec![("next", "https://evil.example/")], "/profile"),
        ] {
            assert_eq!(form_sign_in(&s, &fields).await, to, "{fields:?}");
        }
        // The page carries an allowed rd through the form, and drops others.
        let base = s.base.clone();
        let page = |q: &'static str| {
            let url = format!("{base}/login?{q}");
            async move {
                client()
                    .get(url)
                    .header("accept", "text/html")
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
            }
        };
        let html = page("rd=http%3A%2F%2Fapp.example.test%2Fdocs%3Fa%3D1%26b%3D%22%3E").await;
        assert!(
            html.contains(r#"<input type="hidden" name="rd" value="http://app.example.test/docs?a=1&#38;b=%22%3E">"#),
            "{html}"
        );
        let html = page("rd=https%3A%2F%2Fevil.example%2F").await;
        assert!(!html.contains("name=\"rd\""), "{html}");
        // JSON sign-ins may carry rd and still answer 200 JSON.
        let res = client()
            .post(s.url("/login"))
            .json(&json!({"username": "bob", "password": PASSWORD, "rd": "https://evil.example/"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.json::<Value>().await.unwrap()["message"], "Login successful!");
    })
    .await;
}

/// `latchkey serve ARGS` must refuse to start: exit 2, the first line of
/// standard error naming `needle`.
fn refuses(args: &[&str], needle: &str) {
    let dir = TempDir::new();
    let mut child = Command::new(bin())
        .arg("serve")
        .args([
            "--dev",
            "--bind",
            "127.0.0.1:0",
            "--database",
            &dir.sqlite_url(),
        ])
        .args(args)
        .env_remove("LATCHKEY_COOKIE_DOMAIN")
        .env_remove("LATCHKEY_ALLOWED_REDIRECT_HOSTS")
        .env_remove("LATCHKEY_PUBLIC_URL")
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child.id());
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < end, "{args:?} started serving");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{args:?}: {err}");
    let first = err.lines().next().unwrap_or("");
    assert!(
        first.contains(needle),
        "{args:?}: first line {first:?} of:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn bad_cookie_domains_and_redirect_hosts_are_usage_errors() {
    refuses(&["--cookie-domain", "127.0.0.1"], "cookie domain");
    refuses(&["--cookie-domain", "example .com"], "cookie domain");
    refuses(
        &[
            "--public-url",
            "https://login.example.com",
            "--cookie-domain",
            "example.org",
        ],
        "does not cover",
    );
    // With --dev the public URL is http://BIND: a cookie domain needs it set.
    refuses(&["--cookie-domain", "example.com"], "does not cover");
    refuses(
        &["--allowed-redirect-hosts", "https://app.example.com/"],
        "allowed redirect host",
    );
    refuses(
        &["--allowed-redirect-hosts", "ok.example,a.*.example"],
        "allowed redirect host",
    );
}

// ------------------------------------------------------------- the proxies

/// A program the proxy tests need, or `None` after saying SKIPPED.
fn program(name: &str, test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!(
            "SKIPPED: {name} not found, so {test} did not run (Debian: apt-get install {name})"
        );
    }
    found
}

/// The upstream app behind the proxy: answers every request with JSON of
/// its method, URI, body and headers. Stops when dropped.
struct Echo {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    async fn start() -> Echo {
        use axum::extract::Request;
        async fn echo(req: Request) -> axum::Json<Value> {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 64 * 1024)
                .await
                .unwrap_or_default();
            let headers: BTreeMap<String, String> = parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            axum::Json(json!({
                "method": parts.method.as_str(),
                "uri": parts.uri.to_string(),
                "body": String::from_utf8_lossy(&body),
                "headers": headers,
            }))
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(echo);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Echo { addr, task }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A reverse proxy in a process group of its own, killed with all its
/// workers when dropped.
struct Proxy {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl Proxy {
    /// Starts `cmd` (in `dir`) and waits until it accepts connections on `port`.
    fn start(mut cmd: Command, port: u16, dir: TempDir) -> Proxy {
        let log = dir.path().join("proxy.log");
        let out = std::fs::File::create(&log).unwrap();
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("start the proxy");
        let mut p = Proxy {
            child,
            port,
            log,
            _dir: dir,
        };
        let end = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(st) = p.child.try_wait().unwrap() {
                panic!("the proxy exited ({st}):\n{}", p.log());
            }
            assert!(
                Instant::now() < end,
                "the proxy did not start:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the `docs/` configuration needs filled in.
struct Ports {
    proxy: u16,
    latchkey: SocketAddr,
    app: SocketAddr,
}

/// `docs/NAME` as the test runs it: latchkey and the app where the test
/// started them, `example.test` for `example.com`, and plain HTTP on the
/// proxy's loopback port (`listen` for nginx, without its certificates;
/// `http://HOST:PORT` site addresses for Caddy).
fn config_from_docs(name: &str, p: &Ports) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("ssl_certificate"))
        .collect::<Vec<_>>()
        .join("\n");
    let port = p.proxy;
    text.replace("127.0.0.1:8000", &p.latchkey.to_string())
        .replace("127.0.0.1:3000", &p.app.to_string())
        .replace("example.com", "example.test")
        .replace(
            "listen 443 ssl http2;",
            &format!("listen 127.0.0.1:{port};"),
        )
        .replace(
            "\napp.example.test {",
            &format!("\nhttp://app.example.test:{port} {{"),
        )
        .replace(
            "\nlogin.example.test {",
            &format!("\nhttp://login.example.test:{port} {{"),
        )
}

fn nginx(p: &Ports) -> Option<Proxy> {
    let nginx = program("nginx", "the nginx test")?;
    let dir = TempDir::new();
    // Temporary files of nginx's own, writable by its workers (which run
    // as nobody when the master is root).
    for sub in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let d = dir.path().join(sub);
        std::fs::create_dir(&d).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o777);
        std::fs::set_permissions(&d, mode).unwrap();
    }
    let site = config_from_docs("nginx.conf", p);
    let conf = format!(
        "worker_processes 1;\n\
         events {{ worker_connections 128; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {d}/client_body;\n\
           proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi;\n\
           scgi_temp_path {d}/scgi;\n\
           {site}\n\
         }}\n",
        d = dir.path().display()
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let mut cmd = Command::new(nginx);
    cmd.arg("-e")
        .arg("stderr")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .arg("-g")
        .arg(format!(
            "daemon off; pid {}/nginx.pid; error_log stderr;",
            dir.path().display()
        ));
    Some(Proxy::start(cmd, p.proxy, dir))
}

fn caddy(p: &Ports) -> Option<Proxy> {
    let site = config_from_docs("Caddyfile", p);
    caddy_with(
        |dir| {
            format!(
                "{{\n\tadmin off\n\tauto_https off\n\tstorage file_system {}/data\n}}\n\n{site}",
                dir.display()
            )
        },
        p.proxy,
    )
}

/// Caddy running the configuration `conf` makes for its directory.
fn caddy_with(conf: impl FnOnce(&Path) -> String, port: u16) -> Option<Proxy> {
    let caddy = program("caddy", "the Caddy test")?;
    let dir = TempDir::new();
    std::fs::write(dir.path().join("Caddyfile"), conf(dir.path())).unwrap();
    let mut cmd = Command::new(caddy);
    cmd.args(["run", "--adapter", "caddyfile", "--config"])
        .arg(dir.path().join("Caddyfile"))
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"));
    Some(Proxy::start(cmd, port, dir))
}

/// latchkey as the docs run it behind a proxy on `proxy_port`: sessions
/// shared with example.test's subdomains, the proxy (this machine)
/// trusted, the public URL the proxy's login host.
async fn guarded_latchkey(proxy_port: u16) -> TestApp {
    let s = TestApp::spawn(Options {
        dev: true,
        args: vec![
            "--trusted-proxies".into(),
            "127.0.0.1".into(),
            "--public-url".into(),
            format!("http://login.example.test:{proxy_port}"),
            "--cookie-domain".into(),
            "example.test".into(),
        ],
        ..Options::default()
    })
    .await;
    s.add_user("alice", "admin");
    s.add_user("bob", "user");
    s
}

/// A client that reaches app.example.test and login.example.test at the
/// proxy, follows no redirects and keeps no cookies.
fn via(proxy: u16) -> reqwest::Client {
    let at = SocketAddr::from(([127, 0, 0, 1], proxy));
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .resolve("app.example.test", at)
        .resolve("login.example.test", at)
        .build()
        .unwrap()
}

/// The session cookie a sign-in answer sets, as a `Cookie` header value.
fn session_of(res: &reqwest::Response) -> String {
    let line = cookie_line(res, "latchkey").expect("a session cookie");
    assert!(line.contains("Domain=example.test"), "{line}");
    format!("latchkey={}", crate::support::token_of(line))
}

/// What the app behind the proxy saw.
async fn echoed(res: reqwest::Response) -> Value {
    assert_eq!(res.status(), 200, "not the app's answer");
    res.json().await.expect("the app's JSON")
}

/// The whole story behind one proxy.
async fn behind_a_proxy(proxy: &Proxy, lk: &TestApp, name: &str) {
    let port = proxy.port;
    let http = via(port);
    let app = format!("http://app.example.test:{port}");
    let login_host = format!("http://login.example.test:{port}");
    let page = format!("{app}/docs/page?q=1&r=2");

    // Signed out: sent to sign in, with where it came from. Forged
    // forwarding headers from the client change nothing.
    let res = http
        .get(&page)
        .header("accept", "text/html")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-uri", "/evil")
        .header("x-original-url", "http://evil.example/")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302, "{name}: {}", proxy.log());
    let to = header(&res, "location").unwrap();
    assert!(
        to.starts_with(&format!("{login_host}/login?rd=")),
        "{name}: {to}"
    );
    assert_eq!(rd_of(&to).as_deref(), Some(page.as_str()), "{name}");

    // The sign-in page (through the proxy) carries rd in its form; signing
    // in sends the browser back.
    let html = http
        .get(&to)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("name=\"rd\""), "{name}: {html}");
    let res = http
        .post(format!("{login_host}/login"))
        .header("accept", "text/html")
        .form(&[("username", "bob"), ("password", PASSWORD), ("rd", &page)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "{name}");
    assert_eq!(
        header(&res, "location").as_deref(),
        Some(page.as_str()),
        "{name}"
    );
    let bob = session_of(&res);

    // Signed in: the app sees the user, whatever the client claimed.
    let seen = echoed(
        http.get(&page)
            .header("cookie", &bob)
            .header("x-latchkey-user", "alice")
            .header("remote-user", "alice")
            .header("x-latchkey-role", "admin")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen["uri"], "/docs/page?q=1&r=2", "{name}");
    assert_eq!(seen["headers"]["x-latchkey-user"], "bob", "{name}: {seen}");
    assert_eq!(seen["headers"]["remote-user"], "bob", "{name}: {seen}");
    assert_eq!(seen["headers"]["x-latchkey-role"], "user", "{name}: {seen}");

    // ?role=admin guards /admin/: 403 for bob, the app for alice.
    let res = http
        .get(format!("{app}/admin/"))
        .header("cookie", &bob)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "{name}");
    let res = http
        .post(format!("{login_host}/login"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{name}");
    let alice = session_of(&res);
    let seen = echoed(
        http.get(format!("{app}/admin/"))
            .header("cookie", &alice)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen["headers"]["x-latchkey-role"], "admin", "{name}");

    // The app gets latchkey's CSRF check: an unsafe method sent cross-site
    // is refused before it reaches the app; same-origin passes.
    for (h, v) in [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "http://evil.example"),
        ("origin", "null"),
    ] {
        let res = http
            .post(format!("{app}/form"))
            .header("cookie", &bob)
            .header(h, v)
            .form(&[("a", "1")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{name}: {h}: {v}");
    }
    let seen = echoed(
        http.post(format!("{app}/form"))
            .header("cookie", &bob)
            .header("origin", &app)
            .header("sec-fetch-site", "same-origin")
            .form(&[("a", "1")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (seen["method"].as_str(), seen["body"].as_str()),
        (Some("POST"), Some("a=1")),
        "{name}"
    );

    // Sign-in links to other hosts are refused.
    for evil in [
        "http://evil.example/",
        &format!("http://app.example.test.evil.example:{port}/"),
    ] {
        let res = http
            .post(format!("{login_host}/login"))
            .header("accept", "text/html")
            .form(&[("username", "bob"), ("password", PASSWORD), ("rd", evil)])
            .send()
            .await
            .unwrap();
        assert_eq!(
            header(&res, "location").as_deref(),
            Some("/profile"),
            "{name}: {evil}"
        );
    }

    // Logout (at the login host): the old cookie is sent to sign in again.
    let res = http
        .post(format!("{login_host}/logout"))
        .header("cookie", &bob)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{name}");
    let res = http.get(&page).header("cookie", &bob).send().await.unwrap();
    assert_eq!(res.status(), 302, "{name}");
    assert!(header(&res, "location")
        .unwrap()
        .starts_with(&format!("{login_host}/login?rd=")));

    // Straight to latchkey from an address that is not the proxy: its
    // forwarding headers count for nothing (no rd, its own method).
    let stranger = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut forged = HeaderMap::new();
    for (k, v) in [
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "app.example.test"),
        ("x-forwarded-uri", "/phish"),
        ("x-original-url", "http://app.example.test/phish"),
    ] {
        forged.insert(k, HeaderValue::from_static(v));
    }
    let res = stranger
        .get(lk.url("/auth/verify?redirect=1"))
        .headers(forged.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302, "{name}");
    assert_eq!(
        header(&res, "location").unwrap(),
        format!("{login_host}/login"),
        "{name}"
    );
    forged.insert("x-forwarded-method", HeaderValue::from_static("DELETE"));
    forged.insert("origin", HeaderValue::from_static("http://evil.example"));
    let res = stranger
        .get(lk.url("/auth/verify"))
        .headers(forged)
        .header("cookie", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "{name}: a GET from a stranger, not a forged DELETE"
    );
}

#[tokio::test]
async fn behind_nginx_auth_request() {
    bounded(async {
        let port = free_port();
        let lk = guarded_latchkey(port).await;
        let echo = Echo::start().await;
        let ports = Ports {
            proxy: port,
            latchkey: lk.addr.parse().unwrap(),
            app: echo.addr,
        };
        let Some(proxy) = nginx(&ports) else { return };
        behind_a_proxy(&proxy, &lk, "nginx").await;
    })
    .await;
}

#[tokio::test]
async fn behind_caddy_forward_auth() {
    bounded(async {
        let port = free_port();
        let lk = guarded_latchkey(port).await;
        let echo = Echo::start().await;
        let ports = Ports {
            proxy: port,
            latchkey: lk.addr.parse().unwrap(),
            app: echo.addr,
        };
        let Some(proxy) = caddy(&ports) else { return };
        behind_a_proxy(&proxy, &lk, "caddy").await;
    })
    .await;
}

#[tokio::test]
async fn a_browser_goes_from_the_guarded_app_through_sign_in_and_back() {
    bounded(async {
        let Some(driver) = Driver::start().await else {
            eprintln!("SKIPPED: chromedriver or Chromium not found, so the forward-auth browser test did not run");
            return;
        };
        let port = free_port();
        let lk = guarded_latchkey(port).await;
        let echo = Echo::start().await;
        let ports = Ports {
            proxy: port,
            latchkey: lk.addr.parse().unwrap(),
            app: echo.addr,
        };
        let Some(_proxy) = nginx(&ports) else { return };
        let app = format!("http://app.example.test:{port}");
        // Both names lead to the proxy, as DNS would in production.
        let b = Browser::open_at(
            &driver,
            &app,
            &["--host-resolver-rules=MAP *.example.test 127.0.0.1".to_owned()],
        )
        .await;
        b.go("/docs/page?q=1").await;
        b.wait_path("/login?rd=").await;
        let at = b.c.current_url().await.unwrap();
        assert_eq!(at.host_str(), Some("login.example.test"));
        b.shot("forward-auth-sign-in").await;
        b.fill("#username", "bob").await;
        b.fill("#password", PASSWORD).await;
        b.click("form[action='/login'] button[type=submit]").await;
        // Back at the app, which sees the user.
        b.wait_text("\"x-latchkey-user\":\"bob\"").await;
        let at = b.c.current_url().await.unwrap();
        assert_eq!(at.as_str(), format!("{app}/docs/page?q=1"));
        let text = b.text().await;
        assert!(text.contains("\"remote-user\":\"bob\""), "{text}");
        b.shot("forward-auth-back-at-the-app").await;
        // One cookie for the whole domain: another subdomain the proxy
        // serves (nginx's first server, the app) gets it too.
        b.go(&format!("http://wiki.example.test:{port}/")).await;
        b.wait_text("\"x-latchkey-user\":\"bob\"").await;
        b.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_browser_signs_in_through_caddy_on_one_host_without_a_cookie_domain() {
    bounded(async {
        let Some(driver) = Driver::start().await else {
            eprintln!("SKIPPED: chromedriver or Chromium not found, so the local forward-auth browser test did not run");
            return;
        };
        let port = free_port();
        // The README's walkthrough: --dev, the public URL this host's
        // (http://127.0.0.1:PORT here, for localhost there), no cookie domain.
        let lk = verify_app(&[]).await;
        let echo = Echo::start().await;
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/Caddyfile.local");
        let conf = std::fs::read_to_string(&path).unwrap();
        let conf = conf
            .replace("http://localhost:8080", &format!("http://127.0.0.1:{port}"))
            .replace("127.0.0.1:8000", &lk.addr)
            .replace("127.0.0.1:3000", &echo.addr.to_string());
        let Some(_proxy) = caddy_with(|_| conf, port) else {
            return;
        };
        let app = format!("http://127.0.0.1:{port}");
        let b = Browser::open_at(&driver, &app, &[]).await;
        b.go("/notes?q=1").await;
        b.wait_path("/login?rd=").await;
        let at = b.c.current_url().await.unwrap();
        assert_eq!(at.origin().ascii_serialization(), lk.base);
        b.fill("#username", "bob").await;
        b.fill("#password", PASSWORD).await;
        b.click("form[action='/login'] button[type=submit]").await;
        b.wait_text("\"x-latchkey-user\":\"bob\"").await;
        let at = b.c.current_url().await.unwrap();
        assert_eq!(at.as_str(), format!("{app}/notes?q=1"));
        b.close().await;
    })
    .await;
}
