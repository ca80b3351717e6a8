//! An axum app that brings its own user type and signs people in with
//! latchkey. Run it with `cargo run -p todo-app`, then:
//!
//! ```text
//! curl -i -X POST localhost:3000/login -H 'content-type: application/json' \
//!      -d '{"username":"ada","password":"analytical engine notes"}'
//! curl -b 'latchkey=TOKEN' localhost:3000/todos
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::{Json, Router};
use latchkey::body::Input;
use latchkey::mail::{Mail, Mailer};
use latchkey::mfa::{MfaError, SqliteFactors, TotpSetup};
use latchkey::passkeys::PasskeyError;
use latchkey::recovery::RecoveryError;
use latchkey::store::MemoryStore;
use latchkey::user::BackendError;
use latchkey::Recent;
use latchkey::{async_trait, Admin, Auth, AuthUser, Credentials, CurrentUser, Latchkey};
use latchkey::{LoginError, RequireRole, SignedIn, SignedOut, User, UserBackend};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

/// The app's own user type: latchkey only needs the four accessors.
#[derive(Clone)]
struct Member {
    member_no: u32,
    handle: String,
    is_staff: bool,
    hash: String,
    email: Option<String>,
}

impl AuthUser for Member {
    fn id(&self) -> String {
        self.member_no.to_string()
    }
    fn username(&self) -> &str {
        &self.handle
    }
    fn role(&self) -> &str {
        if self.is_staff {
            "admin"
        } else {
            "user"
        }
    }
    fn password_hash(&self) -> &str {
        &self.hash
    }
    // Recovery mail needs an address; this app trusts the ones it stores.
    fn email(&self) -> Option<&str> {
        self.email.as_deref()
    }
    fn email_verified(&self) -> bool {
        self.email.is_some()
    }
}

/// The app's own user storage (a map here; a database in real life).
#[derive(Clone, Default)]
struct Members(Arc<RwLock<HashMap<String, Member>>>);

#[async_trait]
impl UserBackend for Members {
    type User = Member;

    async fn find_by_username(&self, username: &str) -> Result<Option<Member>, BackendError> {
        Ok(self.0.read().await.get(username).cloned())
    }

    async fn find_by_id(&self, user_id: &str) -> Result<Option<Member>, BackendError> {
        let members = self.0.read().await;
        Ok(members.values().find(|m| m.id() == user_id).cloned())
    }

    async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<(), BackendError> {
        for m in self.0.write().await.values_mut() {
            if m.id() == user_id {
                m.hash = hash.to_owned();
            }
        }
        Ok(())
    }

    // Two optional methods turn on password reset by mail.
    async fn find_by_email(&self, email: &str) -> Result<Option<Member>, BackendError> {
        let members = self.0.read().await;
        let found = members.values().find(|m| {
            m.email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        });
        Ok(found.cloned())
    }

    async fn set_email(
        &self,
        user_id: &str,
        email: Option<&str>,
        _verified: bool,
    ) -> Result<bool, BackendError> {
        for m in self.0.write().await.values_mut() {
            if m.id() == user_id {
                m.email = email.map(str::to_owned);
            }
        }
        Ok(true)
    }
}

/// The app's mail transport: here it prints each mail (a real app sends
/// it, e.g. with lettre) and keeps it for the tests.
#[derive(Clone, Default)]
struct Postbox(Arc<std::sync::Mutex<Vec<Mail>>>);

#[async_trait]
impl Mailer for Postbox {
    async fn send(&self, mail: Mail) -> Result<(), BackendError> {
        println!("mail to {}: {}\n{}", mail.to, mail.subject(), mail.text());
        self.0.lock().unwrap().push(mail);
        Ok(())
    }
}

#[derive(Deserialize)]
struct Forgot {
    email: String,
}

/// Password reset in two handlers: the same answer for every address,
/// then a one-time link by mail, which sets a new password.
async fn forgot(auth: Auth, Input(f): Input<Forgot>) -> Result<&'static str, RecoveryError> {
    auth.latchkey()
        .forgot_password(&f.email, auth.meta())
        .await?;
    Ok("if that address has an account, a link is on its way")
}

#[derive(Deserialize)]
struct Reset {
    token: String,
    new_password: String,
}

async fn reset(auth: Auth, Input(r): Input<Reset>) -> Result<&'static str, RecoveryError> {
    let latchkey = auth.latchkey();
    latchkey
        .reset_password(&r.token, &r.new_password, auth.meta())
        .await?;
    Ok("password changed; sign in again")
}

/// Sign-in: `Auth` knows the request's client and cookie, and the
/// `SignedIn` it returns sets the new session cookie.
async fn login(
    auth: Auth,
    Input(creds): Input<Credentials>,
) -> Result<(SignedIn, &'static str), LoginError> {
    Ok((auth.login(&creds).await?, "signed in"))
}

/// Sign-out: ends the session on the server and clears the cookie.
async fn logout(auth: Auth) -> Result<(SignedOut, &'static str), latchkey::Error> {
    Ok((auth.logout().await?, "signed out"))
}

/// A per-session preference, kept by latchkey with the session (typed
/// JSON, read with the session: no extra store access per request).
#[derive(Default, Serialize, Deserialize)]
struct View {
    show_done: bool,
}

/// Only runs for a signed-in request: the extractor is the guard. `User`
/// hands over the app's own `Member`; `CurrentUser` the session.
async fn todos(User(member): User<Member>, session: CurrentUser) -> Json<serde_json::Value> {
    let view: View = session.data().unwrap_or_default();
    let mut todos = vec!["write the report"];
    if view.show_done {
        todos.push("(done) order punched cards");
    }
    Json(
        serde_json::json!({ "owner": member.handle, "member_no": member.member_no, "todos": todos }),
    )
}

/// Changes this session's view (other sessions of the member keep theirs).
async fn set_view(
    auth: Auth,
    user: CurrentUser,
    Input(view): Input<View>,
) -> Result<&'static str, latchkey::Error> {
    auth.set_data(&user, &view).await?;
    Ok("view saved")
}

/// Only for role `admin`; others get 403.
async fn staff(RequireRole(user, _): RequireRole<Admin>) -> String {
    format!("staff room, welcome {}", user.username())
}

/// Two-factor authentication in three handlers: set up (needs a recent
/// sign-in: `Recent`), confirm with a code from the app, and the second
/// step of a sign-in.
async fn mfa_setup(auth: Auth, Recent(user): Recent) -> Result<Json<TotpSetup>, MfaError> {
    Ok(Json(auth.latchkey().totp_setup(user.session()).await?))
}

#[derive(Deserialize)]
struct Code {
    code: String,
}

async fn mfa_confirm(
    auth: Auth,
    user: CurrentUser,
    Input(c): Input<Code>,
) -> Result<Json<Vec<String>>, MfaError> {
    let recovery_codes = auth
        .latchkey()
        .totp_confirm(user.session(), &c.code)
        .await?;
    Ok(Json(recovery_codes))
}

async fn login_mfa(
    auth: Auth,
    headers: axum::http::HeaderMap,
    Input(c): Input<Code>,
) -> Result<(SignedIn, &'static str), LoginError> {
    let latchkey = auth.latchkey();
    let done = latchkey
        .complete_sign_in(&headers, Some(&c.code), None, auth.meta())
        .await?;
    Ok((done, "signed in"))
}

/// Passkeys in four handlers: registration (recent sign-in) and sign-in,
/// each a start (options for the browser) and a finish (its answer).
async fn passkey_register_start(
    auth: Auth,
    Recent(user): Recent,
) -> Result<Json<serde_json::Value>, PasskeyError> {
    Ok(Json(
        auth.latchkey()
            .passkey_register_start(user.session())
            .await?,
    ))
}

async fn passkey_register_finish(
    auth: Auth,
    user: CurrentUser,
    Input(credential): Input<serde_json::Value>,
) -> Result<&'static str, PasskeyError> {
    let latchkey = auth.latchkey();
    latchkey
        .passkey_register_finish(user.session(), credential, Some("my passkey"))
        .await?;
    Ok("passkey registered")
}

async fn passkey_login_start(
    auth: Auth,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, PasskeyError> {
    use axum::response::IntoResponse;
    let (options, cookie) = auth.latchkey().passkey_login_start(&headers).await?;
    Ok(([(axum::http::header::SET_COOKIE, cookie)], Json(options)).into_response())
}

async fn passkey_login_finish(
    auth: Auth,
    headers: axum::http::HeaderMap,
    Input(assertion): Input<serde_json::Value>,
) -> Result<(SignedIn, &'static str), LoginError> {
    let latchkey = auth.latchkey();
    let done = latchkey
        .passkey_login_finish(&headers, assertion, auth.meta())
        .await?;
    Ok((done, "signed in"))
}

async fn app() -> Router {
    app_with(Postbox::default()).await
}

async fn app_with(postbox: Postbox) -> Router {
    let members = Members::default();
    // One connection: each in-memory SQLite connection is its own database.
    let factors = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .expect("an in-memory database");
    let auth = Latchkey::builder()
        // Development settings: plain-HTTP cookies. Use a real secret in production.
        .secret(*b"example-secret-key-of-32-bytes!!")
        .secure(false)
        .store(Arc::new(MemoryStore::new()))
        // Sign-ins use `members`, and removing a member signs them out.
        .users(members.clone())
        // Reset links point here; mail goes through the app's transport.
        .public_url("http://127.0.0.1:3000")
        .mailer(Arc::new(postbox))
        // A member with TOTP signs in in two steps.
        .factors(Arc::new(SqliteFactors::new(factors)), "todo-app")
        // Passkeys for this origin (the relying party is its host).
        .passkeys("localhost", "http://localhost:3000")
        .build()
        .expect("valid latchkey configuration");
    for (no, handle, staff) in [(1, "ada", true), (2, "charles", false)] {
        let hash = auth
            .hasher()
            .hash("analytical engine notes")
            .await
            .expect("hash");
        members.0.write().await.insert(
            handle.to_owned(),
            Member {
                member_no: no,
                handle: handle.to_owned(),
                is_staff: staff,
                hash,
                email: Some(format!("{handle}@example.com")),
            },
        );
    }
    auth.sessions().spawn_sweeper();
    Router::new()
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/todos", get(todos))
        .route("/view", post(set_view))
        .route("/staff", get(staff))
        .route("/password/forgot", post(forgot))
        .route("/password/reset", post(reset))
        .route("/mfa/setup", post(mfa_setup))
        .route("/mfa/confirm", post(mfa_confirm))
        .route("/login/mfa", post(login_mfa))
        .route("/passkeys/register/start", post(passkey_register_start))
        .route("/passkeys/register/finish", post(passkey_register_finish))
        .route("/passkeys/login/start", post(passkey_login_start))
        .route("/passkeys/login/finish", post(passkey_login_finish))
        .layer(auth.layer())
}

#[tokio::main]
async fn main() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .expect("bind 127.0.0.1:3000");
    println!("todo-app on http://127.0.0.1:3000 (users ada and charles, password \"analytical engine notes\")");
    let service = app()
        .await
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service).await.expect("serve");
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::response::Response;
    use tower::ServiceExt;

    /// Calls the app as a served request would arrive: with the client's
    /// address, which latchkey needs to throttle sign-ins per client.
    async fn call(app: &axum::Router, req: Request<Body>) -> Response {
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40_000));
        app.clone()
            .layer(axum::extract::connect_info::MockConnectInfo(peer))
            .oneshot(req)
            .await
            .unwrap()
    }

    /// `method path` with the session cookie and an optional JSON body.
    async fn send(
        app: &axum::Router,
        method: &str,
        path: &str,
        cookie: &str,
        json: &str,
    ) -> Response {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("cookie", cookie)
            .header("content-type", "application/json")
            .body(Body::from(json.to_owned()))
            .unwrap();
        call(app, req).await
    }

    /// Signs `user` in and returns the `name=token` cookie pair.
    async fn login(app: &axum::Router, user: &str) -> String {
        let body = format!(r#"{{"username":"{user}","password":"analytical engine notes"}}"#);
        let res = send(app, "POST", "/login", "", &body).await;
        assert_eq!(res.status(), StatusCode::OK);
        let cookie = res.headers()["set-cookie"].to_str().unwrap();
        cookie.split(';').next().unwrap().to_owned()
    }

    async fn json(res: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn own_user_type_signs_in_and_guards_hold() {
        let app = super::app().await;
        let res = send(&app, "GET", "/todos", "", "").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

        let charles = login(&app, "charles").await;
        let res = send(&app, "GET", "/todos", &charles, "").await;
        assert_eq!(res.status(), StatusCode::OK);
        let body = json(res).await;
        assert_eq!(body["owner"], "charles", "User<Member> is the app's type");
        assert_eq!(body["member_no"], 2);
        let res = send(&app, "GET", "/staff", &charles, "").await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);

        let ada = login(&app, "ada").await;
        let res = send(&app, "GET", "/staff", &ada, "").await;
        assert_eq!(res.status(), StatusCode::OK);

        let res = send(&app, "POST", "/logout", &charles, "").await;
        assert_eq!(res.status(), StatusCode::OK);
        let res = send(&app, "GET", "/todos", &charles, "").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn session_data_is_typed_and_per_session() {
        let app = super::app().await;
        let laptop = login(&app, "ada").await;
        let phone = login(&app, "ada").await;
        let todos = |body: serde_json::Value| body["todos"].as_array().unwrap().len();
        assert_eq!(
            todos(json(send(&app, "GET", "/todos", &laptop, "").await).await),
            1
        );

        let res = send(&app, "POST", "/view", &laptop, r#"{"show_done":true}"#).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            todos(json(send(&app, "GET", "/todos", &laptop, "").await).await),
            2
        );
        // The other session of the same member keeps its own (empty) data.
        assert_eq!(
            todos(json(send(&app, "GET", "/todos", &phone, "").await).await),
            1
        );

        // Signed out, the data is gone with the session.
        send(&app, "POST", "/logout", &laptop, "").await;
        let res = send(&app, "POST", "/view", &laptop, r#"{"show_done":true}"#).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn a_forgotten_password_is_reset_by_a_mailed_link() {
        let postbox = super::Postbox::default();
        let app = super::app_with(postbox.clone()).await;
        let old = login(&app, "charles").await;
        for email in ["Charles@example.com", "nobody@example.com"] {
            let body = format!(r#"{{"email":"{email}"}}"#);
            let res = send(&app, "POST", "/password/forgot", "", &body).await;
            assert_eq!(res.status(), StatusCode::OK, "the same answer for both");
        }
        // The lookup and the mail happen after the answer.
        let mail = loop {
            if let Some(m) = postbox.0.lock().unwrap().first().cloned() {
                break m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        assert_eq!(mail.to, "charles@example.com");
        let link = mail.link().expect("a reset link");
        let token = link
            .strip_prefix("http://127.0.0.1:3000/password/reset?token=")
            .unwrap();
        let body =
            format!(r#"{{"token":"{token}","new_password":"difference engine blueprints"}}"#);
        let res = send(&app, "POST", "/password/reset", "", &body).await;
        assert_eq!(res.status(), StatusCode::OK);
        let res = send(&app, "GET", "/todos", &old, "").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "old sessions end");
        let res = send(&app, "POST", "/password/reset", "", &body).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "a link works once");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(
            postbox.0.lock().unwrap().len(),
            2,
            "the link, then a notice"
        );
    }

    #[tokio::test]
    async fn a_member_with_totp_signs_in_in_two_steps() {
        let app = super::app().await;
        let ada = login(&app, "ada").await;
        let setup = json(send(&app, "POST", "/mfa/setup", &ada, "").await).await;
        let secret = setup["secret"].as_str().unwrap().to_owned();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let code = |step: u64| latchkey::mfa::code_at(&secret, now + step * 30).unwrap();
        let body = format!(r#"{{"code":"{}"}}"#, code(0));
        let codes = json(send(&app, "POST", "/mfa/confirm", &ada, &body).await).await;
        assert_eq!(codes.as_array().unwrap().len(), 10, "recovery codes");

        // The password now opens a pending sign-in only.
        let body = r#"{"username":"ada","password":"analytical engine notes"}"#;
        let res = send(&app, "POST", "/login", "", body).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let pending = res.headers()["set-cookie"].to_str().unwrap();
        let pending = pending.split(';').next().unwrap().to_owned();
        let res = send(&app, "GET", "/todos", &pending, "").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let body = format!(r#"{{"code":"{}"}}"#, code(1));
        let res = send(&app, "POST", "/login/mfa", &pending, &body).await;
        assert_eq!(res.status(), StatusCode::OK);
        let session = res.headers()["set-cookie"].to_str().unwrap();
        let session = session.split(';').next().unwrap().to_owned();
        assert_eq!(
            send(&app, "GET", "/todos", &session, "").await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn a_passkey_signs_in_as_the_second_step() {
        use webauthn_authenticator_rs::prelude::{Url, WebauthnAuthenticator};
        use webauthn_authenticator_rs::softpasskey::SoftPasskey;
        let app = super::app().await;
        let origin = Url::parse("http://localhost:3000").unwrap();
        let mut key = WebauthnAuthenticator::new(SoftPasskey::new(true));
        let charles = login(&app, "charles").await;
        let options =
            json(send(&app, "POST", "/passkeys/register/start", &charles, "").await).await;
        let credential = key
            .do_registration(origin.clone(), serde_json::from_value(options).unwrap())
            .unwrap();
        let body = serde_json::to_string(&credential).unwrap();
        let res = send(&app, "POST", "/passkeys/register/finish", &charles, &body).await;
        assert_eq!(res.status(), StatusCode::OK);

        // The password now opens a pending sign-in; the passkey completes it.
        let body = r#"{"username":"charles","password":"analytical engine notes"}"#;
        let res = send(&app, "POST", "/login", "", body).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let pending = res.headers()["set-cookie"].to_str().unwrap();
        let pending = pending.split(';').next().unwrap().to_owned();
        let res = send(&app, "POST", "/passkeys/login/start", &pending, "").await;
        let ceremony = res.headers()["set-cookie"].to_str().unwrap();
        let cookies = format!("{pending}; {}", ceremony.split(';').next().unwrap());
        let options = json(res).await;
        let assertion = key
            .do_authentication(origin, serde_json::from_value(options).unwrap())
            .unwrap();
        let body = serde_json::to_string(&assertion).unwrap();
        let res = send(&app, "POST", "/passkeys/login/finish", &cookies, &body).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
}
