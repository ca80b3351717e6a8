//! Browser tests: real Chromium, driven through WebDriver (chromedriver)
//! with fantoccini, against the real `latchkey` binary in `--dev` mode.
//! Everything stays on loopback. Each test saves PNG screenshots under
//! `$CARGO_TARGET_DIR/screenshots/` (or `target/screenshots/`).
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium
//! chromium-driver`; `.ci/run` installs them). Without them each test
//! prints `SKIPPED: chromedriver not found` and passes.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::support::{self, client, Options, Server, Target, TempDir, PASSWORD};

const NEW_PASSWORD: &str = "copper lantern drifts over quiet harbour";
const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------- harness

fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env).map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    names.iter().find_map(|name| {
        dirs.iter()
            .map(|d| d.join(name))
            .chain(std::iter::once(PathBuf::from("/usr/bin").join(name)))
            .find(|p| p.is_file())
    })
}

/// A chromedriver on a free loopback port, stopped at drop.
pub(crate) struct Driver {
    child: Child,
    url: String,
    chromium: PathBuf,
}

impl Driver {
    /// `None` (after printing SKIPPED) when chromedriver or Chromium is missing.
    pub(crate) async fn start() -> Option<Driver> {
        let driver = find_program("LATCHKEY_CHROMEDRIVER", &["chromedriver"]);
        let chromium = find_program(
            "LATCHKEY_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        );
        let (Some(driver), Some(chromium)) = (driver, chromium) else {
            println!("SKIPPED: chromedriver not found (install chromium and chromium-driver)");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut cmd = Command::new(driver);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, with the browsers it starts: a test that
        // fails before closing its browsers still leaves none behind.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let d = Driver {
            child,
            url,
            chromium,
        };
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client()
                .get(format!("{}/status", d.url))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                return Some(d);
            }
            assert!(Instant::now() < end, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        #[cfg(unix)]
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where screenshots go: `$CARGO_TARGET_DIR/screenshots`, else the
/// workspace's `target/screenshots`.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).expect("create screenshot dir");
    dir
}

/// One Chromium with its own fresh profile: a separate cookie jar, as a
/// second device would have.
pub(crate) struct Browser {
    pub(crate) c: Client,
    base: String,
    _profile: TempDir,
}

impl Browser {
    async fn open(driver: &Driver, server: &Server) -> Browser {
        Self::open_at(driver, &server.base, &[]).await
    }

    /// A browser whose relative paths go to `base`, started with `extra`
    /// command-line switches besides the usual ones.
    pub(crate) async fn open_at(driver: &Driver, base: &str, extra: &[String]) -> Browser {
        let profile = TempDir::new();
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--window-size=1100,900".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        args.extend(extra.iter().cloned());
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": driver.chromium.display().to_string(),
                "args": args,
            },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let c = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("start a Chromium session");
        Browser {
            c,
            base: base.to_owned(),
            _profile: profile,
        }
    }

    pub(crate) async fn go(&self, path: &str) {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        self.c.goto(&url).await.expect("navigate");
    }

    /// Path and query of the page shown.
    async fn path(&self) -> String {
        let u = self.c.current_url().await.expect("current url");
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        }
    }

    async fn source(&self) -> String {
        self.c.source().await.expect("page source")
    }

    /// The visible text of the page (read in one script call, so a page
    /// being replaced cannot leave a stale element behind).
    pub(crate) async fn text(&self) -> String {
        let end = Instant::now() + WAIT;
        loop {
            let got = self
                .c
                .execute(
                    "return document.body ? document.body.innerText : '';",
                    vec![],
                )
                .await;
            match got {
                Ok(v) => return v.as_str().unwrap_or_default().to_owned(),
                Err(e) => assert!(Instant::now() < end, "cannot read the page: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the page's text holds `needle`; returns the text.
    pub(crate) async fn wait_text(&self, needle: &str) -> String {
        let end = Instant::now() + WAIT;
        loop {
            let text = self.text().await;
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < end,
                "page {} never showed {needle:?}; it shows:\n{text}",
                self.path().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the page's path starts with `prefix`.
    pub(crate) async fn wait_path(&self, prefix: &str) {
        let end = Instant::now() + WAIT;
        loop {
            let path = self.path().await;
            if path.starts_with(prefix) {
                return;
            }
            assert!(
                Instant::now() < end,
                "never reached {prefix:?}; at {path:?}:\n{}",
                self.text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn fill(&self, css: &str, text: &str) {
        let e = self.c.find(Locator::Css(css)).await.expect(css);
        e.clear().await.expect("clear");
        e.send_keys(text).await.expect("type");
    }

    /// Clicks `css` and, when that loads another page (a link or a form
    /// submission), waits until the new page has loaded.
    pub(crate) async fn click(&self, css: &str) {
        self.c
            .execute("window.__latchkey_old_page = true;", vec![])
            .await
            .expect("mark page");
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .expect("click");
        self.wait_loaded().await;
    }

    /// Clicks something that does not load a page (e.g. a `<summary>`).
    async fn press(&self, css: &str) {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .expect("click");
    }

    /// Waits (briefly) for a new document to replace the marked one.
    async fn wait_loaded(&self) {
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            let fresh = self
                .c
                .execute(
                    "return !window.__latchkey_old_page && document.readyState === 'complete';",
                    vec![],
                )
                .await
                .ok()
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if fresh {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn value(&self, css: &str) -> String {
        self.c
            .find(Locator::Css(css))
            .await
            .expect(css)
            .prop("value")
            .await
            .expect("value")
            .unwrap_or_default()
    }

    async fn count(&self, css: &str) -> usize {
        self.c
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
            .len()
    }

    /// At phone width (390 px) the page needs no sideways scrolling.
    async fn fits_a_phone(&self, name: &str) {
        self.c.set_window_size(390, 844).await.expect("resize");
        let width = self
            .c
            .execute("return window.innerWidth;", vec![])
            .await
            .expect("measure");
        assert!(
            width.as_u64().unwrap_or(999) <= 420,
            "window is {width} px wide"
        );
        self.shot(name).await;
        let fits = self
            .c
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![],
            )
            .await
            .expect("measure");
        let path = self.path().await;
        assert_eq!(
            fits.as_bool(),
            Some(true),
            "{path} scrolls sideways on a phone"
        );
        self.c.set_window_size(1100, 900).await.expect("resize");
    }

    /// Saves a PNG of the window as `NAME.png` in the screenshot directory.
    pub(crate) async fn shot(&self, name: &str) {
        let png = self.c.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        println!("screenshot: {}", path.display());
    }

    /// Signs in from the sign-in page and waits for the profile.
    async fn sign_in(&self, user: &str, password: &str) {
        self.go("/login").await;
        self.fill("#username", user).await;
        self.fill("#password", password).await;
        self.click("form[action='/login'] button[type=submit]")
            .await;
        self.wait_path("/profile").await;
        self.wait_text(&format!("Welcome to your profile, {user}!"))
            .await;
    }

    /// The session cookie's value, read through WebDriver (it is HttpOnly,
    /// so pages cannot see it).
    async fn session_cookie(&self) -> Option<String> {
        self.c
            .get_all_cookies()
            .await
            .expect("cookies")
            .into_iter()
            .find(|c| c.name() == "latchkey")
            .map(|c| c.value().to_owned())
    }

    pub(crate) async fn close(self) {
        let _ = self.c.close().await;
    }
}

fn dev_server(args: &[&str]) -> Server {
    Server::start(Options {
        dev: true,
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Options::default()
    })
}

/// Status of GET `path` as a script replaying `cookie` would see it.
async fn replay(s: &Server, path: &str, cookie: &str) -> u16 {
    client()
        .get(s.url(path))
        .header("cookie", format!("latchkey={cookie}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn first_run_setup_then_sign_in_wrong_then_right() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let s = dev_server(&[]);
    let prefix = format!("http://{}/setup?code=", s.addr);
    let log = s.wait_log(&prefix, Duration::from_secs(10));
    let start = log.find(&prefix).unwrap();
    let link: String = log[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();

    let b = Browser::open(&driver, &s).await;
    // The logged link opens the setup form; it creates the first admin.
    b.go(&link).await;
    b.wait_text("Create the first admin").await;
    b.fill("#username", "ada").await;
    b.fill("#password", "short").await;
    b.click("form[action='/setup'] button[type=submit]").await;
    // The browser refuses a too-short password itself (minlength), or the
    // server does; either way no admin yet and the form is still here.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.path().await.starts_with("/setup"));
    b.fill("#password", PASSWORD).await;
    b.click("form[action='/setup'] button[type=submit]").await;
    b.wait_path("/login").await;
    b.wait_text("Admin account created").await;
    b.shot("setup-done-sign-in").await;

    // The code works once: the same link is now a 404 page.
    b.go(&link).await;
    b.wait_text("Not found").await;
    b.shot("setup-link-used-404").await;

    // Sign in wrong: the form again, "Invalid credentials", the username
    // kept, the password empty.
    b.go("/login").await;
    b.fill("#username", "ada").await;
    b.fill("#password", "not the password at all").await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.wait_text("Invalid credentials").await;
    assert_eq!(b.path().await, "/login");
    assert_eq!(b.value("#username").await, "ada");
    assert_eq!(b.value("#password").await, "");
    b.shot("sign-in-failed").await;

    // Then right, by keyboard: Enter in the password field submits.
    b.c.execute("window.__latchkey_old_page = true;", vec![])
        .await
        .unwrap();
    b.fill("#password", &format!("{PASSWORD}\u{E007}")).await;
    b.wait_loaded().await;
    b.wait_path("/profile").await;
    let text = b.wait_text("Welcome to your profile, ada!").await;
    assert!(text.contains("You are signed in."), "no flash:\n{text}");
    assert!(text.contains("admin"), "{text}");
    b.shot("profile").await;
    // The flash is shown once.
    b.go("/profile").await;
    let text = b.wait_text("Welcome to your profile, ada!").await;
    assert!(!text.contains("You are signed in."), "flash shown twice");
    b.close().await;
}

#[tokio::test]
async fn sign_in_page_and_throttling_say_when_to_retry() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let s = dev_server(&["--max-failures-per-user-address", "2"]);
    s.add_user("alice", "user");
    let b = Browser::open(&driver, &s).await;
    // A signed-out browser asking for a private page is sent to sign in,
    // and back to that page afterwards.
    b.go("/sessions").await;
    b.wait_path("/login?next=%2Fsessions").await;
    b.wait_text("Sign in").await;
    let src = b.source().await;
    for needle in [
        "autocomplete=\"username\"",
        "autocomplete=\"current-password\"",
        "name=\"csrf_token\"",
        "<label for=\"username\">",
        "<label for=\"password\">",
    ] {
        assert!(src.contains(needle), "sign-in page lacks {needle}");
    }
    assert_eq!(b.count("form[action='/login'] button").await, 1);
    b.shot("sign-in").await;
    b.fits_a_phone("sign-in-phone").await;

    for _ in 0..2 {
        b.fill("#username", "alice").await;
        b.fill("#password", "wrong wrong wrong wrong").await;
        b.click("form[action='/login'] button[type=submit]").await;
        b.wait_text("Invalid credentials").await;
    }
    b.fill("#password", PASSWORD).await;
    b.click("form[action='/login'] button[type=submit]").await;
    let text = b.wait_text("Too many failed attempts. Try again in").await;
    assert!(text.contains('m') || text.contains('s'), "{text}");
    assert_eq!(b.value("#username").await, "alice");
    b.shot("sign-in-throttled").await;
    b.close().await;
}

#[tokio::test]
async fn admin_page_is_for_admins_only() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let s = dev_server(&[]);
    s.add_user("alice", "admin");
    s.add_user("bob", "user");
    let admin = Browser::open(&driver, &s).await;
    let user = Browser::open(&driver, &s).await;

    admin.sign_in("alice", PASSWORD).await;
    admin.click("nav a[href='/admin']").await;
    admin.wait_path("/admin").await;
    let text = admin.wait_text("Admin dashboard for alice.").await;
    assert!(text.contains("bob") && text.contains("never"), "{text}");

    // bob, a plain user: no Admin link, and /admin is the 403 page with a
    // way back.
    user.sign_in("bob", PASSWORD).await;
    assert_eq!(user.count("nav a[href='/admin']").await, 0);
    user.go("/admin").await;
    let text = user.wait_text("Forbidden").await;
    assert!(!text.contains("Admin dashboard"), "{text}");
    user.shot("admin-forbidden-403").await;
    user.click("main a[href='/profile']").await;
    user.wait_text("Welcome to your profile, bob!").await;

    // The admin resets bob's password: bob's session ends.
    admin.go("/admin").await;
    admin.wait_text("Last sign-in").await;
    admin.press("#user-bob summary").await;
    admin
        .fill(
            "form[action='/admin/users/bob/password'] input[name=new_password]",
            NEW_PASSWORD,
        )
        .await;
    admin
        .click("form[action='/admin/users/bob/password'] button[type=submit]")
        .await;
    admin.wait_text("Password reset.").await;
    user.go("/profile").await;
    user.wait_path("/login").await;
    user.sign_in("bob", NEW_PASSWORD).await;

    // The admin makes bob an admin: his next request sees it.
    admin.press("#user-bob summary").await;
    admin
        .fill(
            "form[action='/admin/users/bob/role'] input[name=role]",
            "admin",
        )
        .await;
    admin
        .click("form[action='/admin/users/bob/role'] button[type=submit]")
        .await;
    admin.wait_text("Role changed.").await;
    admin.shot("admin-dashboard").await;
    admin.fits_a_phone("admin-dashboard-phone").await;
    user.go("/admin").await;
    user.wait_text("Admin dashboard for bob.").await;

    admin.close().await;
    user.close().await;
}

#[tokio::test]
async fn one_browser_revokes_the_other_and_a_password_change_ends_it() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let s = dev_server(&[]);
    s.add_user("alice", "user");
    let laptop = Browser::open(&driver, &s).await;
    let phone = Browser::open(&driver, &s).await;
    laptop.sign_in("alice", PASSWORD).await;
    phone.sign_in("alice", PASSWORD).await;

    // The phone has a form open when its session is ended elsewhere.
    phone.go("/password").await;
    phone.wait_text("Change password").await;

    // The laptop sees both sessions, itself marked, the other with a button.
    laptop.go("/sessions").await;
    let text = laptop.wait_text("Your sessions").await;
    assert!(text.contains("this device"), "{text}");
    assert!(text.contains("Headless Chrome on Linux"), "{text}");
    assert_eq!(laptop.count("tbody tr").await, 2);
    assert_eq!(laptop.count("form[action$='/revoke'] button").await, 1);
    laptop.shot("sessions").await;
    laptop.fits_a_phone("sessions-phone").await;
    laptop.click("form[action$='/revoke'] button").await;
    laptop.wait_text("That session has ended.").await;
    assert_eq!(laptop.count("tbody tr").await, 1);

    // The phone's next request fails: its form gets the 401 page, whose
    // link signs in and returns to the form.
    phone.fill("#current_password", PASSWORD).await;
    phone.fill("#new_password", NEW_PASSWORD).await;
    phone
        .click("form[action='/password'] button[type=submit]")
        .await;
    phone.wait_text("Your session has ended").await;
    phone.shot("signed-out-401").await;
    phone.click("main a[href^='/login']").await;
    phone.wait_path("/login?next=%2Fpassword").await;
    phone.fill("#username", "alice").await;
    phone.fill("#password", PASSWORD).await;
    phone
        .click("form[action='/login'] button[type=submit]")
        .await;
    phone.wait_path("/password").await;
    phone.wait_text("Change password").await;

    // And a plain navigation after a revocation lands on the sign-in page.
    laptop.go("/sessions").await;
    laptop.wait_text("Your sessions").await;
    laptop.click("form[action$='/revoke'] button").await;
    laptop.wait_text("That session has ended.").await;
    phone.go("/profile").await;
    phone.wait_path("/login?next=%2Fprofile").await;
    phone.wait_text("Sign in").await;

    // Signed in again on the phone; then a password change on the laptop
    // ends the phone's session but keeps the laptop's.
    phone.fill("#username", "alice").await;
    phone.fill("#password", PASSWORD).await;
    phone
        .click("form[action='/login'] button[type=submit]")
        .await;
    phone.wait_path("/profile").await;
    phone.wait_text("Welcome to your profile, alice!").await;

    laptop.go("/password").await;
    laptop.wait_text("Change password").await;
    let src = laptop.source().await;
    assert!(src.contains("autocomplete=\"current-password\""));
    assert!(src.contains("autocomplete=\"new-password\""));
    laptop.fill("#current_password", PASSWORD).await;
    laptop.fill("#new_password", NEW_PASSWORD).await;
    laptop
        .click("form[action='/password'] button[type=submit]")
        .await;
    laptop.wait_path("/profile").await;
    laptop.wait_text("Password changed.").await;
    laptop.shot("password-changed").await;

    phone.go("/sessions").await;
    phone.wait_path("/login").await;
    laptop.go("/sessions").await;
    laptop.wait_text("Your sessions").await;
    assert_eq!(laptop.count("tbody tr").await, 1);
    phone.sign_in("alice", NEW_PASSWORD).await;

    laptop.close().await;
    phone.close().await;
}

#[tokio::test]
async fn sign_out_then_back_button_shows_no_private_page() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let s = dev_server(&[]);
    s.add_user("alice", "user");
    let b = Browser::open(&driver, &s).await;
    b.sign_in("alice", PASSWORD).await;
    b.go("/sessions").await;
    b.wait_text("Your sessions").await;
    let cookie = b.session_cookie().await.expect("session cookie");
    assert_eq!(replay(&s, "/profile", &cookie).await, 200);

    // Sign out is a button in a POST form, never a link.
    assert_eq!(b.count("a[href='/logout']").await, 0);
    b.click("form[action='/logout'] button[type=submit]").await;
    b.wait_path("/login").await;
    b.wait_text("Sign in").await;
    b.shot("signed-out").await;
    assert_eq!(b.session_cookie().await, None);
    // Ended on the server too: the old cookie, replayed, gets 401.
    assert_eq!(replay(&s, "/profile", &cookie).await, 401);

    // Back: the private page is not shown from a cache (no-store), and
    // after a reload the browser is on the sign-in page.
    b.c.back().await.expect("back");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = b.text().await;
    assert!(!text.contains("Your sessions"), "back showed:\n{text}");
    b.c.refresh().await.expect("reload");
    b.wait_path("/login").await;
    let text = b.wait_text("Sign in").await;
    assert!(!text.contains("Your sessions") && !text.contains("Welcome to your profile"));
    b.shot("back-after-sign-out").await;
    b.close().await;
}

#[tokio::test]
async fn sign_up_only_when_allowed() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    // Off by default: no link, and /signup is a 404 page.
    let off = dev_server(&[]);
    off.add_user("alice", "user");
    let b = Browser::open(&driver, &off).await;
    b.go("/login").await;
    b.wait_text("Sign in").await;
    assert_eq!(b.count("a[href='/signup']").await, 0);
    b.go("/signup").await;
    b.wait_text("Not found").await;
    b.close().await;

    let on = dev_server(&["--allow-signup"]);
    on.add_user("alice", "user");
    let b = Browser::open(&driver, &on).await;
    b.go("/login").await;
    b.click("a[href='/signup']").await;
    b.wait_text("Create an account").await;
    // The same rules as any new password: a guessable one is refused with
    // the reason, the username kept.
    b.fill("#username", "carol").await;
    b.fill("#password", "carolcarolcarol1").await;
    b.click("form[action='/signup'] button[type=submit]").await;
    b.wait_text("Create an account").await;
    assert_eq!(b.count("p.error").await, 1, "{}", b.text().await);
    assert_eq!(b.value("#username").await, "carol");
    // A taken name is refused too.
    b.fill("#username", "alice").await;
    b.fill("#password", NEW_PASSWORD).await;
    b.click("form[action='/signup'] button[type=submit]").await;
    b.wait_text("That username is taken").await;
    b.fill("#username", "carol").await;
    b.fill("#password", NEW_PASSWORD).await;
    b.click("form[action='/signup'] button[type=submit]").await;
    b.wait_path("/profile").await;
    let text = b.wait_text("Welcome to your profile, carol!").await;
    assert!(text.contains("Your account is ready"), "{text}");
    assert!(text.contains("user"), "{text}");
    b.shot("signed-up").await;
    b.close().await;
}

// ------------------------------------------- the same rules over plain HTTP
// (no browser needed: these always run)

/// `Set-Cookie` lines of `res` for cookie `name`.
fn set_cookies(res: &reqwest::Response, name: &str) -> Vec<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn flash_cookie_holds_a_code_and_the_next_page_consumes_it() {
    let s = Server::start(Options::default());
    s.add_user("alice", "user");
    let me = support::login(&s, "alice", PASSWORD).await;
    let c = client();
    let page = |cookie: String| {
        let c = c.clone();
        let url = s.url("/profile");
        async move {
            c.get(url)
                .header("accept", "text/html")
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
        }
    };
    // A browser's "sign out everywhere else" leaves a flash: a fixed code in
    // a short-lived, HttpOnly, SameSite=Lax, Secure __Host- cookie; no URL.
    let token = {
        let res = page(me.clone()).await;
        let html = res.text().await.unwrap();
        let marker = "name=\"csrf_token\" value=\"";
        let i = html.find(marker).unwrap() + marker.len();
        html[i..].split('"').next().unwrap().to_owned()
    };
    let res = c
        .post(s.url("/sessions/revoke-others"))
        .header("accept", "text/html")
        .header("origin", &s.base)
        .header("cookie", &me)
        .form(&[("csrf_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/sessions");
    let lines = set_cookies(&res, "__Host-latchkey-flash");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(
        line.starts_with("__Host-latchkey-flash=others-revoked;"),
        "{line}"
    );
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=60", "Secure"] {
        assert!(line.contains(attr), "{line} lacks {attr}");
    }
    assert!(!line.contains("Domain"), "{line}");

    // The next page shows the message and expires the cookie.
    let res = page(format!("{me}; __Host-latchkey-flash=others-revoked")).await;
    assert_eq!(res.status(), 200);
    let gone = set_cookies(&res, "__Host-latchkey-flash");
    assert!(
        gone.len() == 1 && gone[0].contains("Max-Age=0"),
        "not expired: {gone:?}"
    );
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("You are signed out everywhere else."));

    // Anything but a known code shows nothing, and is cleared too.
    let res = page(format!(
        "{me}; __Host-latchkey-flash=%3Cscript%3Ealert(1)%3C%2Fscript%3E"
    ))
    .await;
    assert_eq!(set_cookies(&res, "__Host-latchkey-flash").len(), 1);
    let html = res.text().await.unwrap();
    assert!(!html.contains("class=\"flash\""), "{html}");
    assert!(!html.contains("alert(1)"));

    // JSON clients and redirects leave it alone.
    let res = c
        .get(s.url("/profile"))
        .header("cookie", format!("{me}; __Host-latchkey-flash=signed-in"))
        .send()
        .await
        .unwrap();
    assert!(set_cookies(&res, "__Host-latchkey-flash").is_empty());
}

#[tokio::test]
async fn sign_up_over_http_follows_the_flag_and_the_rules() {
    let off = Server::start(Options::default());
    let c = client();
    for html in [false, true] {
        let mut req = c.get(off.url("/signup"));
        if html {
            req = req.header("accept", "text/html");
        }
        assert_eq!(req.send().await.unwrap().status(), 404, "html {html}");
    }
    let res = c
        .post(off.url("/signup"))
        .json(&serde_json::json!({"username": "carol", "password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let users = String::from_utf8_lossy(&off.cli(&["list"], None).stdout).into_owned();
    assert!(!users.contains("carol"), "{users}");

    let on = Server::start(Options {
        env: vec![("LATCHKEY_ALLOW_SIGNUP".into(), "1".into())],
        ..Options::default()
    });
    on.add_user("alice", "admin");
    let signup = |user: &'static str, password: &'static str| {
        let c = c.clone();
        let url = on.url("/signup");
        async move {
            c.post(url)
                .json(&serde_json::json!({"username": user, "password": password}))
                .send()
                .await
                .unwrap()
        }
    };
    let res = signup("carol", "carolcarolcarol1").await;
    assert_eq!(res.status(), 422);
    let res = signup("alice", NEW_PASSWORD).await;
    assert_eq!(res.status(), 409);
    let res = signup("bad name!", NEW_PASSWORD).await;
    assert_eq!(res.status(), 422);
    let res = signup("carol", NEW_PASSWORD).await;
    assert_eq!(res.status(), 201);
    let cookie = set_cookies(&res, "__Host-latchkey");
    assert_eq!(cookie.len(), 1, "signed in at once: {cookie:?}");
    let me = format!("__Host-latchkey={}", support::token_of(&cookie[0]));
    let (st, body) = support::get_json(&on, "/profile", &me).await;
    assert_eq!(st, 200);
    assert_eq!(body["username"], "carol");
    assert_eq!(body["role"], "user", "sign-up never makes an admin");
    assert_eq!(support::get_json(&on, "/admin", &me).await.0, 403);
}

#[tokio::test]
async fn a_reset_link_shows_a_form_and_reauth_brings_an_admin_back() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let s = dev_server(&["--reauth-window", "1s"]);
    s.add_user("alice", "admin");
    s.add_user("bob", "user");

    // bob follows a link the CLI printed; opening it twice uses nothing up.
    let out = s.cli(&["reset-link", "bob", "--public-url", &s.base], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let bob = Browser::open(&driver, &s).await;
    bob.go(&link).await;
    bob.wait_text("Choose a new password").await;
    bob.go(&link).await;
    bob.wait_text("Choose a new password").await;
    assert_eq!(
        bob.count("input[name=new_password][autocomplete='new-password']")
            .await,
        1
    );
    bob.shot("password-reset").await;
    bob.fill("input[name=new_password]", NEW_PASSWORD).await;
    bob.click("main form button[type=submit]").await;
    bob.wait_path("/login").await;
    bob.wait_text("Sign in with your new password.").await;
    bob.sign_in("bob", NEW_PASSWORD).await;
    bob.wait_text("Welcome to your profile, bob!").await;
    bob.go(&link).await;
    bob.wait_text("Invalid or expired link").await;
    bob.close().await;

    // alice's sign-in is no longer recent: an admin action asks her to
    // confirm, then takes her back to the dashboard to do it.
    let alice = Browser::open(&driver, &s).await;
    alice.sign_in("alice", PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    alice.go("/admin").await;
    alice.wait_text("Last sign-in").await;
    let end_bob = "form[action='/admin/users/bob/end-sessions'] button[type=submit]";
    alice.press("#user-bob summary").await;
    alice.click(end_bob).await;
    alice.wait_path("/reauth?next=%2Fadmin").await;
    alice.wait_text("Confirm it's you").await;
    alice.shot("reauth").await;
    alice.fill("#password", PASSWORD).await;
    alice.click("main form button[type=submit]").await;
    alice.wait_path("/admin").await;
    alice.press("#user-bob summary").await;
    alice.click(end_bob).await;
    alice.wait_text("That user's sessions have ended.").await;
    alice.close().await;
}

#[tokio::test]
async fn two_factor_set_up_on_the_page_then_sign_in_with_a_code() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let s = dev_server(&[]);
    s.add_user("alice", "user");
    let b = Browser::open(&driver, &s).await;
    b.sign_in("alice", PASSWORD).await;
    b.wait_text("Welcome to your profile, alice!").await;
    b.click("main a[href='/mfa']").await;
    b.wait_text("Status: off").await;
    b.click("form[action='/mfa/totp/setup'] button[type=submit]")
        .await;
    b.wait_text("Scan this code").await;
    assert_eq!(b.count(".qr svg").await, 1, "the QR code is inline SVG");
    b.shot("mfa-setup").await;
    let secret =
        b.c.find(Locator::Css("#totp-secret"))
            .await
            .expect("the key")
            .text()
            .await
            .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = |offset: u64| latchkey::mfa::code_at(&secret, now + offset * 30).unwrap();
    b.fill("#code", &code(0)).await;
    b.click("form[action='/mfa/totp/confirm'] button[type=submit]")
        .await;
    let text = b.wait_text("Your recovery codes.").await;
    assert!(text.contains("Status: on"), "{text}");
    assert_eq!(b.count("ul.codes li").await, 10);

    // Signing in now takes a code on a page of its own.
    b.click("nav form[action='/logout'] button").await;
    b.go("/login").await;
    b.fill("#username", "alice").await;
    b.fill("#password", PASSWORD).await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.wait_path("/login/mfa").await;
    assert_eq!(
        b.count("#code[autocomplete='one-time-code'][inputmode='numeric']")
            .await,
        1
    );
    b.shot("login-mfa").await;
    b.fill("#code", "000000").await;
    b.click("main form button[type=submit]").await;
    b.wait_text("Invalid credentials").await;
    b.fill("#code", &code(1)).await;
    b.click("main form button[type=submit]").await;
    b.wait_text("Welcome to your profile, alice!").await;
    b.close().await;
}

#[tokio::test]
async fn forgot_password_in_dev_mode_logs_the_link_and_the_page_resets() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    // --dev without SMTP: each mail goes to the log, link on its own line.
    let s = dev_server(&[]);
    s.add_user_with_email("carol", "carol@example.com");
    let b = Browser::open(&driver, &s).await;
    b.go("/login").await;
    b.click("main a[href='/password/forgot']").await;
    b.wait_text("Forgot your password?").await;
    b.fill("#email", "carol@example.com").await;
    b.click("main form button[type=submit]").await;
    b.wait_text("a reset link is on its way").await;
    b.shot("password-forgot").await;
    let log = s.wait_log("/password/reset?token=", Duration::from_secs(5));
    let link = log
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("http") && l.contains("/password/reset?token="))
        .unwrap_or_else(|| panic!("no link on a line of its own in:\n{log}"))
        .to_owned();
    b.go(&link).await;
    b.fill("input[name=new_password]", NEW_PASSWORD).await;
    b.click("main form button[type=submit]").await;
    b.wait_path("/login").await;
    b.go("/login").await;
    b.fill("#username", "carol").await;
    b.fill("#password", NEW_PASSWORD).await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.wait_text("Welcome to your profile, carol!").await;
    b.close().await;
}

/// WebDriver's WebAuthn extension (chromedriver implements it): a virtual
/// authenticator with resident keys and user verification, so the pages'
/// passkey script runs against a real browser's `navigator.credentials`.
#[derive(Debug)]
struct AddVirtualAuthenticator;

impl fantoccini::wd::WebDriverCompatibleCommand for AddVirtualAuthenticator {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/webauthn/authenticator",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        let body = serde_json::json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserVerified": true,
            "automaticPresenceSimulation": true,
        });
        (axum::http::Method::POST, Some(body.to_string()))
    }
}

#[tokio::test]
async fn a_passkey_added_on_the_page_signs_in_without_a_password() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    // WebAuthn needs a domain (not an IP) in a secure context: localhost.
    let s = dev_server(&["--public-url", "http://localhost:1"]);
    s.add_user("alice", "user");
    let port = s.base.rsplit(':').next().unwrap().to_owned();
    let site = format!("http://localhost:{port}");
    let b = Browser::open(&driver, &s).await;
    b.c.issue_cmd(AddVirtualAuthenticator)
        .await
        .expect("chromedriver's virtual authenticator");

    b.go(&format!("{site}/login")).await;
    b.fill("#username", "alice").await;
    b.fill("#password", PASSWORD).await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.wait_text("Welcome to your profile, alice!").await;
    b.go(&format!("{site}/mfa")).await;
    b.wait_text("No passkeys yet.").await;
    b.fill("#passkey-name", "Chromium").await;
    b.press("form[data-passkey-register] button[type=submit]")
        .await;
    let text = b.wait_text("Delete Chromium").await;
    assert!(text.contains("last used never"), "{text}");
    b.shot("passkeys").await;

    b.click("nav form[action='/logout'] button").await;
    b.go(&format!("{site}/login")).await;
    // Chromium offers the passkey as autofill (conditional UI) as soon as
    // the page loads, and the virtual authenticator accepts at once: the
    // page may sign in before the button is pressed. Either way, no password.
    if let Ok(button) = b.c.find(Locator::Css("[data-passkey-login]")).await {
        let _ = button.click().await;
    }
    b.wait_text("Welcome to your profile, alice!").await;
    b.go(&format!("{site}/mfa")).await;
    let text = b.wait_text("Delete Chromium").await;
    assert!(
        !text.contains("last used never"),
        "its use is recorded: {text}"
    );

    // With a passkey, a password alone is not enough: the second step's
    // "Use a passkey" button completes it. (The password goes from a page
    // without the sign-in form, whose autofill would take the passkey first.)
    b.click("nav form[action='/logout'] button").await;
    b.go(&format!("{site}/healthz")).await;
    let status =
        b.c.execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/login', {method: 'POST', headers: {'content-type': 'application/json'},
                              body: JSON.stringify({username: 'alice', password: arguments[0]})})
               .then(r => done(r.status), e => done(String(e)));",
            vec![serde_json::json!(PASSWORD)],
        )
        .await
        .expect("password step");
    assert_eq!(
        status,
        serde_json::json!(202),
        "a second factor is required"
    );
    b.go(&format!("{site}/login/mfa")).await;
    b.wait_text("Use a passkey").await;
    b.press("[data-passkey-login]").await;
    b.wait_text("Welcome to your profile, alice!").await;
    b.close().await;
}
