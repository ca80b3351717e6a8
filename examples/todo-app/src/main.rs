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
use latchkey::store::MemoryStore;
use latchkey::user::BackendError;
use latchkey::{async_trait, Admin, Auth, AuthUser, Credentials, CurrentUser, Latchkey};
use latchkey::{LoginError, RequireRole, SignedIn, SignedOut, UserBackend};
use tokio::sync::RwLock;

/// The app's own user type: latchkey only needs the four accessors.
#[derive(Clone)]
struct Member {
    member_no: u32,
    handle: String,
    is_staff: bool,
    hash: String,
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

/// Only runs for a signed-in request: the extractor is the guard.
async fn todos(user: CurrentUser) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "owner": user.username(), "todos": ["write the report"] }))
}

/// Only for role `admin`; others get 403.
async fn staff(RequireRole(user, _): RequireRole<Admin>) -> String {
    format!("staff room, welcome {}", user.username())
}

async fn app() -> Router {
    let members = Members::default();
    let auth = Latchkey::builder()
        // Development settings: plain-HTTP cookies. Use a real secret in production.
        .secret(*b"example-secret-key-of-32-bytes!!")
        .secure(false)
        .store(Arc::new(MemoryStore::new()))
        // Sign-ins use `members`, and removing a member signs them out.
        .users(members.clone())
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
            },
        );
    }
    auth.sessions().spawn_sweeper();
    Router::new()
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/todos", get(todos))
        .route("/staff", get(staff))
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
    use tower::ServiceExt;

    /// Calls the app as a served request would arrive: with the client's
    /// address, which latchkey needs to throttle sign-ins per client.
    async fn call(app: &axum::Router, req: Request<Body>) -> axum::response::Response {
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40_000));
        app.clone()
            .layer(axum::extract::connect_info::MockConnectInfo(peer))
            .oneshot(req)
            .await
            .unwrap()
    }

    fn login_req(user: &str) -> Request<Body> {
        Request::post("/login")
            .header("content-type", "application/json")
            .body(Body::from(format!(
                r#"{{"username":"{user}","password":"analytical engine notes"}}"#
            )))
            .unwrap()
    }

    #[tokio::test]
    async fn own_user_type_signs_in_and_guards_hold() {
        let app = super::app().await;
        let res = call(&app, Request::get("/todos").body(Body::empty()).unwrap()).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

        let res = call(&app, login_req("charles")).await;
        assert_eq!(res.status(), StatusCode::OK);
        let cookie = res.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let res = call(
            &app,
            Request::get("/todos")
                .header("cookie", &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        let res = call(
            &app,
            Request::get("/staff")
                .header("cookie", &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);

        let res = call(&app, login_req("ada")).await;
        let staff = res.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let res = call(
            &app,
            Request::get("/staff")
                .header("cookie", &staff)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);

        let res = call(
            &app,
            Request::post("/logout")
                .header("cookie", &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        let res = call(
            &app,
            Request::get("/todos")
                .header("cookie", &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
}
