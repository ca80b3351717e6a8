//! Property tests (bounded, run by CI) for what the network controls: the
//! cookie header and request bodies. Whatever arrives, the answer is a
//! clean 2xx or 4xx — never a panic, a 5xx or a hang.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Request};
use axum::routing::post;
use axum::Router;
use latchkey::body::Input;
use latchkey::cookie::CookieConfig;
use latchkey::store::MemoryStore;
use latchkey::{Latchkey, SessionToken};
use proptest::prelude::*;
use tower::ServiceExt;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Login {
    username: String,
    password: String,
}

fn app() -> Router {
    let auth = Latchkey::builder()
        .secret([9u8; 32])
        .store(Arc::new(MemoryStore::new()))
        .build()
        .unwrap();
    Router::new()
        .route("/login", post(|Input(_): Input<Login>| async { "ok" }))
        .layer(auth.layer())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn percent_encode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn token_parse_accepts_only_issued_shapes(s in "\\PC{0,64}") {
        if let Some(t) = SessionToken::parse(&s) {
            prop_assert_eq!(t.as_str().len(), 43);
            prop_assert!(t.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }

    #[test]
    fn cookie_header_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
        let cookies = CookieConfig::new(true, std::time::Duration::from_secs(60));
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&raw) {
            headers.append(header::COOKIE, v);
        }
        if let Some(t) = cookies.token(&headers) {
            prop_assert!(SessionToken::parse(t.as_str()).is_some());
        }
        let _ = cookies.pre_session_value(&headers);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn login_bodies_get_clean_answers(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        ctype in prop_oneof![
            Just("application/json"),
            Just("application/x-www-form-urlencoded"),
            Just("text/plain"),
            Just("application/json; charset=utf-8"),
            Just(""),
        ],
        browser in any::<bool>(),
    ) {
        let status = runtime().block_on(async {
            let mut req = Request::post("/login");
            if !ctype.is_empty() {
                req = req.header(header::CONTENT_TYPE, ctype);
            }
            if browser {
                req = req.header("sec-fetch-site", "same-origin");
            }
            let res = app().oneshot(req.body(Body::from(body.clone())).unwrap()).await.unwrap();
            let status = res.status();
            let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
            if status.is_client_error() {
                let v: serde_json::Value = serde_json::from_slice(&bytes).expect("4xx body is JSON");
                assert!(v["detail"].is_string());
            }
            status
        });
        prop_assert!(status.is_success() || status.is_client_error(), "status {}", status);
    }

    #[test]
    fn form_bodies_built_from_pairs_decode(user in "\\PC{0,40}", pass in "\\PC{0,40}") {
        let form = format!("username={}&password={}", percent_encode(&user), percent_encode(&pass));
        let status = runtime().block_on(async {
            let req = Request::post("/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(form))
                .unwrap();
            app().oneshot(req).await.unwrap().status()
        });
        prop_assert_eq!(status.as_u16(), 200);
    }
}
