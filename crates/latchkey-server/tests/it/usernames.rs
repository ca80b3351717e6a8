//! Usernames over real HTTP and the real CLI: one account per name whatever
//! its case or width, one script per name, long names at login are just
//! wrong credentials, and the last admin stays unless `--force`.

use serde_json::json;

use crate::support::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn case_and_width_sign_in_to_the_one_account() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    for typed in ["alice", "ALICE", "Alice", "ａｌｉｃｅ", "ＡＬＩＣＥ"] {
        let cookie = login(&s, typed, PASSWORD).await;
        let (st, body) = get_json(&s, "/profile", &cookie).await;
        assert_eq!(st, 200, "{typed}");
        assert_eq!(body["username"], "alice", "{typed}: {body}");
    }
    // A stored name keeps its case; the session shows it as stored.
    s.add_user("Ｂｏｂ", "user");
    let cookie = login(&s, "BOB", PASSWORD).await;
    assert_eq!(get_json(&s, "/profile", &cookie).await.1["username"], "Bob");
}

#[tokio::test]
async fn a_second_account_for_the_same_name_is_refused() {
    let s = TestApp::spawn(Options {
        args: vec!["--allow-signup".into()],
        ..Options::default()
    })
    .await;
    s.add_user("alice", "user");
    let pw = format!("{PASSWORD}\n");
    for same in ["Alice", "ALICE", "ａｌｉｃｅ"] {
        let out = s.cli(&["add", same, "--password-stdin"], Some(&pw));
        assert_eq!(out.status.code(), Some(1), "{same}: {out:?}");
        assert!(stderr(&out).contains("already exists"), "{same}: {out:?}");
    }
    // Signup: 409 with a reason; a mixed-script name 422 with the reason.
    let (st, body) = post_json(
        &s,
        "/signup",
        None,
        json!({"username": "Alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(st, 409, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("taken"), "{body}");
    let (st, body) = post_json(
        &s,
        "/signup",
        None,
        json!({"username": "\u{430}lice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(st, 422, "{body}");
    let why = body["detail"].as_str().unwrap();
    assert!(why.contains("Latin") && why.contains("Cyrillic"), "{body}");
    // A fullwidth new name is stored in its NFKC form.
    let (st, body) = post_json(
        &s,
        "/signup",
        None,
        json!({"username": "ｃａｒｏｌ", "password": PASSWORD}),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let cookie = login(&s, "Carol", PASSWORD).await;
    assert_eq!(
        get_json(&s, "/profile", &cookie).await.1["username"],
        "carol"
    );

    // The CLI refuses the mixed-script name too, with the reason, exit 1.
    let out = s.cli(&["add", "\u{430}lice", "--password-stdin"], Some(&pw));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("mixes scripts"), "{out:?}");
    let list = String::from_utf8_lossy(&s.cli(&["list"], None).stdout).into_owned();
    assert!(list.contains("2 user(s)"), "{list}");
}

#[tokio::test]
async fn long_names_at_login_are_invalid_credentials_and_count() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("alice", "user");
    for name in ["a".repeat(65), "a".repeat(10_000), "\u{430}lice".into()] {
        let mut statuses = Vec::new();
        for _ in 0..6 {
            let (st, body) = post_json(
                &s,
                "/login",
                None,
                json!({"username": name, "password": PASSWORD}),
            )
            .await;
            if st == 401 {
                assert_eq!(body, json!({"detail": "Invalid credentials"}));
            }
            statuses.push(st);
        }
        // Five failures, then the throttle: each one was counted.
        assert_eq!(statuses, [401, 401, 401, 401, 401, 429], "{}", name.len());
    }
}

#[tokio::test]
async fn the_last_admin_stays_over_http() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("root", "admin");
    s.add_user("bob", "user");
    let root = login(&s, "root", PASSWORD).await;
    let (st, body) = post_json(
        &s,
        "/admin/users/root/role",
        Some(&root),
        json!({"role": "user"}),
    )
    .await;
    assert_eq!(st, 409, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("last admin"),
        "{body}"
    );
    assert_eq!(get_json(&s, "/admin", &root).await.0, 200, "still admin");
    // Removing oneself stays refused, however the name is typed.
    for name in ["root", "ROOT", "ｒｏｏｔ"] {
        let (st, body) = post_json(
            &s,
            &format!("/admin/users/{name}/remove"),
            Some(&root),
            json!({}),
        )
        .await;
        assert_eq!(st, 409, "{name}: {body}");
    }
    // The dashboard shows the reason.
    let res = client()
        .post(s.url("/admin/users/root/role"))
        .header("cookie", &root)
        .header("accept", "text/html")
        .json(&json!({"role": "user"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    assert!(res.text().await.unwrap().contains("last admin"));
    // With a second admin, the first may step down.
    let (st, body) = post_json(
        &s,
        "/admin/users/BOB/role",
        Some(&root),
        json!({"role": "admin"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = post_json(
        &s,
        "/admin/users/root/role",
        Some(&root),
        json!({"role": "user"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
}

#[tokio::test]
async fn the_last_admin_stays_in_the_cli_unless_forced() {
    let s = TestApp::spawn(Options::default()).await;
    s.add_user("root", "admin");
    for args in [
        vec!["set-role", "root", "user"],
        vec!["set-role", "ROOT", "user"],
        vec!["remove", "root"],
    ] {
        let out = s.cli(&args, None);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = stderr(&out);
        assert!(
            err.contains("last admin") && err.contains("--force"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let cookie = login(&s, "root", PASSWORD).await;
    assert_eq!(get_json(&s, "/admin", &cookie).await.0, 200);
    let out = s.cli(&["set-role", "root", "user", "--force"], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(get_json(&s, "/admin", &cookie).await.0, 403);
    let out = s.cli(&["set-role", "root", "admin"], None);
    assert!(out.status.success(), "{out:?}");
    let out = s.cli(&["remove", "Root", "--force"], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(get_json(&s, "/profile", &cookie).await.0, 401);
}

/// A users table from before keys, on PostgreSQL: the server adds the key
/// column and fills it, and the old names sign in whatever their case.
#[tokio::test]
async fn postgres_tables_from_before_keys_are_migrated() {
    let Some(url) = postgres_url() else { return };
    psql(
        &url,
        "CREATE TABLE latchkey_users (id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, \
             password_hash TEXT NOT NULL, role TEXT NOT NULL, created_at BIGINT NOT NULL, \
             last_login_at BIGINT); \
             INSERT INTO latchkey_users VALUES ('1', 'Alice', 'x', 'admin', 1, NULL), \
             ('2', 'alice', 'x', 'user', 2, NULL)",
    );
    let s = Server::start(Options {
        database: Some(url.clone()),
        sessions: Some("memory".into()),
        ..Options::default()
    });
    let pw = format!("{PASSWORD}\n");
    for name in ["ALICE", "alice"] {
        let out = s.cli(&["set-password", name, "--password-stdin"], Some(&pw));
        assert!(out.status.success(), "{out:?}");
    }
    // The older row holds the key; the newer keeps its exact name.
    let cookie = login(&s, "ALICE", PASSWORD).await;
    assert_eq!(
        get_json(&s, "/profile", &cookie).await.1["username"],
        "Alice"
    );
    let cookie = login(&s, "alice", PASSWORD).await;
    assert_eq!(
        get_json(&s, "/profile", &cookie).await.1["username"],
        "alice"
    );
    let out = s.cli(&["add", "ａｌｉｃｅ", "--password-stdin"], Some(&pw));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // A second start finds everything in place.
    drop(s);
    let s = Server::start(Options {
        database: Some(url),
        sessions: Some("memory".into()),
        ..Options::default()
    });
    login(&s, "ａｌｉｃｅ", PASSWORD).await;
}
