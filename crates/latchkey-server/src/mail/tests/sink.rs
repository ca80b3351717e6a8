//! A real SMTP server for the tests: Debian's `python3-aiosmtpd` on a
//! loopback port, writing each mail it accepts into a Maildir that the
//! test reads back (through Python's `email` package, which decodes MIME
//! exactly as a mail client would).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A directory of its own, removed at drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "latchkey-mail-{tag}-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 6]>())
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nothing listens on (until a sink is started there).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The Python that has aiosmtpd: Debian's, which a pyenv or venv
/// `python3` earlier on PATH may hide.
fn python() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// One mail as received.
#[derive(Debug, serde::Deserialize)]
pub struct Received {
    pub to: String,
    pub from: String,
    pub subject: String,
    pub content_type: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

const READ_MAILDIR: &str = r#"
import email, email.policy, json, os, sys
out = []
for sub in ("new", "cur"):
    d = os.path.join(sys.argv[1], sub)
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb") as f:
            m = email.message_from_binary_file(f, policy=email.policy.default)
        plain, html = m.get_body(("plain",)), m.get_body(("html",))
        out.append({
            "to": str(m["To"]), "from": str(m["From"]), "subject": str(m["Subject"]),
            "content_type": m.get_content_type(),
            "text": plain.get_content() if plain is not None else None,
            "html": html.get_content() if html is not None else None,
        })
print(json.dumps(out))
"#;

/// aiosmtpd on 127.0.0.1:`port`, stopped at drop.
pub struct Sink {
    child: Child,
    python: &'static str,
    pub port: u16,
    maildir: PathBuf,
    _dir: TempDir,
}

impl Sink {
    /// Starts a sink on a free port: see [`Sink::start_on`].
    pub fn start() -> Option<Sink> {
        Sink::start_on(free_port())
    }

    /// `None` (after printing SKIPPED) where aiosmtpd is not installed;
    /// under CI (`CI` set) that fails instead, since `.ci/run` installs it.
    pub fn start_on(port: u16) -> Option<Sink> {
        let Some(python) = python() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "python3-aiosmtpd is missing under CI (.ci/run installs it)"
            );
            println!("SKIPPED: python3-aiosmtpd not found (apt-get install python3-aiosmtpd)");
            return None;
        };
        let dir = TempDir::new("smtp");
        let maildir = dir.path().join("maildir");
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        let sink = Sink {
            child,
            python,
            port,
            maildir,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen on port {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(sink)
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Mails received so far (cheap: counts files).
    pub fn count(&self) -> usize {
        ["new", "cur"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(self.maildir.join(sub)).ok())
            .map(|entries| entries.count())
            .sum()
    }

    /// Waits (10 s at most) until `n` mails have arrived, then reads them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} mails arrived within 10 s",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.read()
    }

    pub fn read(&self) -> Vec<Received> {
        let out = Command::new(self.python)
            .args(["-c", READ_MAILDIR])
            .arg(&self.maildir)
            .output()
            .expect("read the Maildir");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("the Maildir as JSON")
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
