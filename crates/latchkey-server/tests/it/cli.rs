//! The `latchkey` command line: `user ...` commands, usage errors (exit 2,
//! the problem named on the first line of standard error, never a panic),
//! and the forms a secret may take.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;

use crate::support::*;

/// What a finished `latchkey` run left behind.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `latchkey ARGS...` in `cwd`, with no LATCHKEY_* or RUST_BACKTRACE
/// variables but `env`; killed (and the test failed) if it runs for more
/// than 20 s, e.g. because it started a server it should have refused.
fn latchkey(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>, cwd: &Path) -> Run {
    let mut cmd = Command::new(bin());
    cmd.args(args).current_dir(cwd);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("LATCHKEY_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn latchkey");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        // The process may exit without reading; a broken pipe is fine.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "latchkey {args:?} did not exit within 20 s (did it start serving?); stderr:\n{}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Exit code 2, the first line of stderr names the problem (contains each
/// of `names`, case-insensitively), and no panic or backtrace anywhere.
fn assert_usage_error(what: &str, r: &Run, names: &[&str]) {
    assert_eq!(r.code, Some(2), "{what}: want exit 2, got {r:#?}");
    let first = r.stderr.lines().next().unwrap_or("").to_lowercase();
    for n in names {
        assert!(
            first.contains(&n.to_lowercase()),
            "{what}: first line of stderr does not name {n:?}:\n{}",
            r.stderr
        );
    }
    let all = r.stderr.to_lowercase();
    assert!(
        !all.contains("panicked") && !all.contains("backtrace"),
        "{what}: {}",
        r.stderr
    );
    assert!(r.stdout.is_empty(), "{what}: stdout: {}", r.stdout);
}

/// Asserts a refused start left nothing behind in `dir`.
fn assert_empty(what: &str, dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{what}: left behind {left:?}");
}

fn user_lines(list: &str) -> Vec<(String, String)> {
    list.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_owned(), w.next()?.to_owned()))
        })
        .collect()
}

#[test]
fn user_add_list_duplicates_and_weak_passwords() {
    let dir = TempDir::new();
    let db = dir.sqlite_url();
    let pw = format!("{PASSWORD}\n");

    let out = cli(
        &db,
        None,
        &["add", "alice", "--role", "admin", "--password-stdin"],
        Some(&pw),
    );
    assert!(out.status.success(), "{out:?}");
    let out = cli(&db, None, &["add", "bob", "--password-stdin"], Some(&pw));
    assert!(out.status.success(), "{out:?}");

    // Duplicate: refused, clearly, and the existing user is untouched.
    let out = cli(
        &db,
        None,
        &["add", "alice", "--password-stdin"],
        Some("another strong passphrase here\n"),
    );
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("alice") && err.contains("already exists"),
        "{err}"
    );
    // The same name in another case or width is the same account (exit 1).
    for same in ["Alice", "ＡＬＩＣＥ"] {
        let out = cli(&db, None, &["add", same, "--password-stdin"], Some(&pw));
        assert_eq!(out.status.code(), Some(1), "{same}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("already exists"), "{same}: {err}");
    }
    // A name mixing scripts (Cyrillic "а") is refused with the reason.
    let out = cli(
        &db,
        None,
        &["add", "\u{430}lice", "--password-stdin"],
        Some(&pw),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Cyrillic"),
        "{out:?}"
    );

    // Weak passwords: refused with the reason; no user made.
    for (name, weak, why) in [
        ("carol", "short", "short"),
        ("carol", "password1234567890", "guess"),
        ("carol", "carolcarolcarolcarol", "guess"),
    ] {
        let out = cli(
            &db,
            None,
            &["add", name, "--password-stdin"],
            Some(&format!("{weak}\n")),
        );
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(!out.status.success(), "{weak:?} accepted: {out:?}");
        assert!(
            err.contains(why),
            "{weak:?}: stderr does not say why: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }

    // No --password-stdin and no terminal: exit 2, pointing at the flag.
    let out = cli(&db, None, &["add", "dave"], Some(&pw));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--password-stdin"), "{err}");

    // Bad role: a usage error.
    let out = cli(
        &db,
        None,
        &["add", "erin", "--role", "ad min", "--password-stdin"],
        Some(&pw),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let out = cli(&db, None, &["list"], None);
    assert!(out.status.success(), "{out:?}");
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    let users = user_lines(&list);
    assert!(users.contains(&("alice".into(), "admin".into())), "{list}");
    assert!(users.contains(&("bob".into(), "user".into())), "{list}");
    for absent in ["carol", "dave", "erin"] {
        assert!(!users.iter().any(|(u, _)| u == absent), "{list}");
    }

    // Commands on a user who does not exist fail, without a panic.
    for args in [
        vec!["remove", "nobody"],
        vec!["set-role", "nobody", "admin"],
        vec!["end-sessions", "nobody"],
    ] {
        let out = cli(&db, None, &args, None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {out:?}");
        assert!(err.contains("nobody"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[tokio::test]
async fn password_stdin_takes_the_whole_line_as_is() {
    let s = Server::start(Options::default());
    let pw = "  Ünïcödé  spaced kayak murmur 🦀  ";
    let out = s.cli(
        &["add", "zoe", "--password-stdin"],
        Some(&format!("{pw}\n")),
    );
    assert!(out.status.success(), "{out:?}");
    let cookie = login(&s, "zoe", pw).await;
    assert_eq!(get_json(&s, "/profile", &cookie).await.0, 200);
    let res = sign_in(&s, "zoe", pw.trim()).await;
    assert_eq!(res.status(), 401, "the password was trimmed");
}

#[test]
fn usage_errors_exit_2_and_name_the_problem() {
    let b64_short = format!(
        "base64:{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 16])
    );
    let secret_env = [("LATCHKEY_SECRET_KEY", SECRET)];
    let bind = ["--bind", "127.0.0.1:0"];
    let serve = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["serve".into()];
        v.extend(bind.iter().map(|s| s.to_string()));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    type Case<'a> = (&'a str, Vec<String>, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cases: Vec<Case> = vec![
        (
            "unknown sub-command",
            strs(&["frobnicate"]),
            vec![],
            vec!["frobnicate"],
        ),
        (
            "unknown user sub-command",
            strs(&["user", "frobnicate"]),
            vec![],
            vec!["frobnicate"],
        ),
        ("missing NAME", strs(&["user", "add"]), vec![], vec!["NAME"]),
        (
            "missing ROLE",
            strs(&["user", "set-role", "alice"]),
            vec![],
            vec!["ROLE"],
        ),
        (
            "unknown flag",
            serve(&["--no-such-flag"]),
            secret_env.to_vec(),
            vec!["--no-such-flag"],
        ),
        (
            "bad bind",
            strs(&["serve", "--bind", "nowhere"]),
            secret_env.to_vec(),
            vec!["--bind"],
        ),
        (
            "duration under 1s",
            serve(&["--idle-timeout", "500ms"]),
            secret_env.to_vec(),
            vec!["--idle-timeout", "500ms"],
        ),
        (
            "duration not a duration",
            serve(&["--idle-timeout", "soon"]),
            secret_env.to_vec(),
            vec!["--idle-timeout", "soon"],
        ),
        (
            "duration over 366 days",
            serve(&["--absolute-timeout", "367d"]),
            secret_env.to_vec(),
            vec!["--absolute-timeout", "366 days"],
        ),
        (
            "duration that overflowed",
            serve(&["--absolute-timeout", "300000000y"]),
            secret_env.to_vec(),
            vec!["--absolute-timeout"],
        ),
        (
            "zero absolute timeout",
            serve(&["--absolute-timeout", "0s"]),
            secret_env.to_vec(),
            vec!["--absolute-timeout"],
        ),
        (
            "bad duration from the environment",
            serve(&[]),
            vec![
                ("LATCHKEY_SECRET_KEY", SECRET),
                ("LATCHKEY_IDLE_TIMEOUT", "soon"),
            ],
            vec!["idle"],
        ),
        (
            "bad database URL",
            serve(&["--database", "mysql://x"]),
            secret_env.to_vec(),
            vec!["--database"],
        ),
        (
            "bad sessions URL",
            serve(&["--sessions", "ftp://x"]),
            secret_env.to_vec(),
            vec!["--sessions"],
        ),
        (
            "bad database URL for user",
            strs(&["user", "list", "--database", "mysql://x"]),
            vec![],
            vec!["--database"],
        ),
        (
            "bad sessions URL for user",
            strs(&["user", "end-sessions", "alice", "--sessions", "ftp://x"]),
            vec![],
            vec!["--sessions"],
        ),
        ("no secret", serve(&[]), vec![], vec!["secret"]),
        (
            "secret too short",
            serve(&[]),
            vec![(
                "LATCHKEY_SECRET_KEY",
                "8f1c3a5e7b9d0f2a4c6e8a0b2d4f6a8c0e2a4c6e8b0d2f4a6c8e0a2c4e6a8b",
            )],
            vec!["secret"],
        ),
        (
            "secret not hex",
            serve(&[]),
            vec![(
                "LATCHKEY_SECRET_KEY",
                "zz1c3a5e7b9d0f2a4c6e8a0b2d4f6a8c0e2a4c6e8b0d2f4a6c8e0a2c4e6a8b0d",
            )],
            vec!["secret"],
        ),
        (
            "base64 secret too short",
            serve(&[]),
            vec![("LATCHKEY_SECRET_KEY", b64_short.as_str())],
            vec!["secret"],
        ),
        (
            "base64 secret not base64",
            serve(&[]),
            vec![("LATCHKEY_SECRET_KEY", "base64:!!!not-base64!!!")],
            vec!["secret"],
        ),
    ];

    for (what, args, env, names) in &cases {
        let dir = TempDir::new();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = latchkey(&args, env, None, dir.path());
        assert_usage_error(what, &r, names);
        assert_empty(what, dir.path());
        // A refused secret is never echoed back (logs are kept; secrets are not).
        for (k, v) in env {
            if *k == "LATCHKEY_SECRET_KEY" && *v != SECRET {
                let body = v.trim_start_matches("base64:");
                assert!(
                    !r.stderr.contains(body),
                    "{what}: the refused secret was printed:\n{}",
                    r.stderr
                );
            }
        }
    }

    // No sub-command at all: the usage, on stderr, exit 2, no panic.
    let dir = TempDir::new();
    let r = latchkey(&[], &[], None, dir.path());
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert!(r.stderr.contains("Usage"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);

    // Without a secret and without --dev, `serve` says how to give one.
    let dir = TempDir::new();
    let r = latchkey(
        &serve(&[]).iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
        None,
        dir.path(),
    );
    assert_usage_error("no secret", &r, &["secret"]);
    assert!(r.stderr.contains("LATCHKEY_SECRET_KEY"), "{}", r.stderr);
    assert!(r.stderr.contains("--secret-key-file"), "{}", r.stderr);
}

#[test]
fn bad_secret_files_are_usage_errors() {
    let dir = TempDir::new();
    let files = TempDir::new();
    let missing = files.path().join("no-such.secret");
    let garbage = files.path().join("garbage.secret");
    std::fs::write(&garbage, "this is not a secret at all\n").unwrap();
    let short = files.path().join("short.secret");
    std::fs::write(&short, "8f1c3a5e7b9d0f2a\n").unwrap();
    let empty = files.path().join("empty.secret");
    std::fs::write(&empty, "").unwrap();

    for (what, path) in [
        ("missing secret file", &missing),
        ("garbage secret file", &garbage),
        ("short secret file", &short),
        ("empty secret file", &empty),
    ] {
        let p = path.to_str().unwrap();
        // Even with a valid LATCHKEY_SECRET_KEY, a named file that is bad is
        // an error, never silently skipped.
        for env in [vec![], vec![("LATCHKEY_SECRET_KEY", SECRET)]] {
            let r = latchkey(
                &["serve", "--bind", "127.0.0.1:0", "--secret-key-file", p],
                &env,
                None,
                dir.path(),
            );
            assert_usage_error(what, &r, &["secret"]);
            assert!(
                r.stderr.lines().next().unwrap().contains(p),
                "{what}: the file is not named: {}",
                r.stderr
            );
            assert!(!r.stderr.contains("this is not a secret"), "{}", r.stderr);
            assert_empty(what, dir.path());
        }
    }
}

/// A `latchkey serve` started by hand (no secret in the environment unless
/// given), killed at drop.
struct Serving {
    child: Child,
    log: Arc<Mutex<String>>,
    addr: String,
}

impl Serving {
    fn start(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Serving {
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .current_dir(cwd);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("LATCHKEY_") {
                cmd.env_remove(&k);
            }
        }
        cmd.env_remove("RUST_BACKTRACE")
            .env("LATCHKEY_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn latchkey serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut s = Serving {
            child,
            log,
            addr: String::new(),
        };
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let log = s.log.lock().unwrap().clone();
            if let Some(i) = log.find("listening on http://") {
                s.addr = log[i + 20..].split_whitespace().next().unwrap().to_owned();
                return s;
            }
            if let Some(st) = s.child.try_wait().unwrap() {
                panic!("serve exited ({st}) instead of listening:\n{log}");
            }
            assert!(Instant::now() < end, "serve never listened:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn valid_secret_files_and_forms_let_serve_start() {
    let files = TempDir::new();
    let hex_file = files.path().join("hex.secret");
    std::fs::write(&hex_file, format!("\n  \t{SECRET}  \r\n\n")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode([0x5au8; 48]);
    let b64_file = files.path().join("b64.secret");
    std::fs::write(&b64_file, format!("  base64:{b64}\n")).unwrap();
    let b64_env = format!("base64:{b64}");

    type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            "hex file with whitespace",
            vec!["--secret-key-file", hex_file.to_str().unwrap()],
            vec![],
        ),
        (
            "base64 file",
            vec!["--secret-key-file", b64_file.to_str().unwrap()],
            vec![],
        ),
        (
            "hex in the environment",
            vec![],
            vec![("LATCHKEY_SECRET_KEY", SECRET)],
        ),
        (
            "base64 in the environment",
            vec![],
            vec![("LATCHKEY_SECRET_KEY", b64_env.as_str())],
        ),
    ];
    for (what, args, env) in cases {
        let dir = TempDir::new();
        let db = dir.sqlite_url();
        let mut all = vec!["--database", db.as_str()];
        all.extend(args);
        let s = Serving::start(&all, &env, dir.path());
        let res = client()
            .get(format!("http://{}/healthz", s.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{what}");
        // Not dev mode: no secret made, cookies for HTTPS.
        let log = s.log.lock().unwrap().clone();
        assert!(!log.contains("dev mode"), "{what}: {log}");
        assert!(!dir.path().join("latchkey.db.secret").exists(), "{what}");
        let out = cli(
            &db,
            None,
            &["add", "alice", "--password-stdin"],
            Some(&format!("{PASSWORD}\n")),
        );
        assert!(out.status.success(), "{out:?}");
        let res = client()
            .post(format!("http://{}/login", s.addr))
            .json(&json!({"username": "alice", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{what}");
        let line = set_cookie(&res, "__Host-latchkey").expect("__Host- cookie");
        assert!(line.contains("Secure"), "{what}: {line}");
    }
}
