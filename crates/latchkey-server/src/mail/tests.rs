//! The outbox against a real SMTP server (aiosmtpd, see [`sink`]) and real
//! databases: SQLite in a temporary directory, and PostgreSQL in a schema
//! of its own when `LATCHKEY_TEST_POSTGRES_URL` is set (a loud SKIPPED
//! otherwise). Everything on loopback, every wait bounded.

mod sink;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchkey::mail::{Mail, Mailer, Notice};
use sqlx::Row;

use self::sink::{free_port, Sink, TempDir};
use super::queue::Queue;
use super::sender::Timing;
use super::{LogMailer, Outbox, SmtpUrl};
use crate::metrics::MailMetrics;
use crate::users::Users;

const SECRET: [u8; 32] = [42; 32];

/// Seconds become milliseconds, so retries happen within a test.
fn fast() -> Timing {
    Timing {
        poll: Duration::from_millis(100),
        lease: Duration::from_secs(5),
        first_retry: Duration::from_millis(200),
        max_retry: Duration::from_secs(1),
        give_up_after: Duration::from_secs(3600),
        max_attempts: 100,
        smtp_timeout: Duration::from_secs(2),
    }
}

fn link(n: usize) -> String {
    format!("https://login.example/password/reset?token=tok{n:04}secret")
}

fn reset_mail(n: usize) -> Mail {
    Mail {
        to: format!("user{n}@example.com"),
        username: format!("user{n}"),
        notice: Notice::PasswordReset {
            link: link(n),
            valid_for: Duration::from_secs(15 * 60),
        },
    }
}

fn sqlite(dir: &TempDir) -> Users {
    Users::open(&format!("sqlite://{}/users.db", dir.path().display())).unwrap()
}

fn start(users: &Users, smtp: &str, metrics: &MailMetrics, timing: Timing) -> Arc<Outbox> {
    Outbox::start_with(
        users,
        &SECRET,
        &SmtpUrl::parse(smtp).unwrap(),
        "Latchkey <latchkey@login.example>".parse().unwrap(),
        metrics.clone(),
        timing,
    )
    .unwrap()
}

/// The queue's rows: (recipient, subject, body_sealed, attempts, last_error).
async fn rows(users: &Users) -> Vec<(String, String, Vec<u8>, i64, Option<String>)> {
    let (pool, _) = users.shared_pool();
    sqlx::query(
        "SELECT recipient, subject, body_sealed, attempts, last_error FROM latchkey_mail ORDER BY created_at",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get("recipient"),
            r.get("subject"),
            r.get("body_sealed"),
            r.get("attempts"),
            r.get("last_error"),
        )
    })
    .collect()
}

/// Waits (10 s at most) for `what`.
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A PostgreSQL schema of its own, or `None` after a loud SKIPPED.
struct Pg {
    base: String,
    schema: String,
}

impl Pg {
    async fn new() -> Option<Pg> {
        let Ok(base) = std::env::var("LATCHKEY_TEST_POSTGRES_URL") else {
            eprintln!(
                "SKIPPED: LATCHKEY_TEST_POSTGRES_URL is not set; this PostgreSQL test did not run"
            );
            return None;
        };
        sqlx::any::install_default_drivers();
        let schema = format!("lk_mail_{}", hex::encode(rand::random::<[u8; 6]>()));
        let pool = sqlx::AnyPool::connect(&base).await.unwrap();
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        Some(Pg { base, schema })
    }

    fn users(&self) -> Users {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{sep}options=-c%20search_path%3D{}",
            self.base, self.schema
        );
        Users::open(&url).unwrap()
    }

    async fn drop_schema(self) {
        let pool = sqlx::AnyPool::connect(&self.base).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_mail_is_delivered_as_text_with_an_html_alternative() {
    let Some(smtp) = Sink::start() else { return };
    let dir = TempDir::new("deliver");
    let users = sqlite(&dir);
    let metrics = MailMetrics::default();
    let outbox = start(&users, &smtp.url(), &metrics, fast());

    outbox.send(reset_mail(1)).await.unwrap();

    let got = smtp.wait_for(1).await;
    assert_eq!(got.len(), 1);
    let mail = &got[0];
    assert_eq!(mail.to, "user1@example.com");
    assert_eq!(mail.from, "Latchkey <latchkey@login.example>");
    assert_eq!(mail.subject, "Reset your password");
    assert_eq!(mail.content_type, "multipart/alternative");
    let text = mail.text.as_deref().expect("a text part");
    assert!(
        text.lines().any(|l| l == link(1)),
        "the link alone on a line:\n{text}"
    );
    assert!(text.contains("Hello user1,"));
    let html = mail.html.as_deref().expect("an HTML part");
    assert!(
        html.contains(&format!(r#"<a href="{}""#, link(1))),
        "{html}"
    );
    // Delivered mail leaves the queue.
    until("the row is deleted", async || rows(&users).await.is_empty()).await;
    until("the depth gauge reads 0", async || {
        metrics.queue_depth.get() == 0
    })
    .await;
    assert_eq!(metrics.sent.get(), 1);
    assert_eq!(metrics.send_failures.get(), 0);
    outbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_down_keeps_mail_queued_and_sealed_until_it_returns() {
    let port = free_port();
    let dir = TempDir::new("outage");
    let users = sqlite(&dir);
    let metrics = MailMetrics::default();
    let outbox = start(
        &users,
        &format!("smtp://127.0.0.1:{port}"),
        &metrics,
        fast(),
    );

    // The request that enqueues does not wait for SMTP (refused here).
    let began = Instant::now();
    outbox.send(reset_mail(7)).await.unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );

    until("two failed attempts", async || {
        metrics.send_failures.get() >= 2
    })
    .await;
    let queued = rows(&users).await;
    assert_eq!(queued.len(), 1, "nothing lost, nothing doubled");
    let (recipient, subject, sealed, attempts, error) = &queued[0];
    assert_eq!(
        (recipient.as_str(), subject.as_str()),
        ("user7@example.com", "Reset your password")
    );
    assert!(*attempts >= 2);
    assert!(error.as_deref().is_some_and(|e| !e.is_empty()));
    // A copy of the database hands out no live link.
    for secret in ["tok0007secret", "login.example/password", "Hello user7"] {
        assert!(
            !sealed.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} at rest"
        );
    }
    assert_eq!(metrics.sent.get(), 0);

    // The relay comes back: the mail goes out on a retry, once.
    let Some(smtp) = Sink::start_on(port) else {
        return;
    };
    let got = smtp.wait_for(1).await;
    assert!(got[0]
        .text
        .as_deref()
        .unwrap()
        .lines()
        .any(|l| l == link(7)));
    until("the row is deleted", async || rows(&users).await.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.count(), 1);
    assert_eq!(metrics.sent.get(), 1);
    outbox.stop().await;
}

/// Two instances (two outboxes, two pools) on one queue: each of the
/// mails, enqueued through either, arrives exactly once.
async fn two_senders_send_each_mail_once(a: Users, b: Users) {
    let Some(smtp) = Sink::start() else { return };
    let metrics = MailMetrics::default();
    let first = start(&a, &smtp.url(), &metrics, fast());
    let second = start(&b, &smtp.url(), &metrics, fast());
    const N: usize = 24;
    for n in 0..N {
        let outbox = if n % 2 == 0 { &first } else { &second };
        outbox.send(reset_mail(n)).await.unwrap();
    }
    smtp.wait_for(N).await;
    until("the queue is empty", async || rows(&a).await.is_empty()).await;
    // Time for a second copy of anything to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = smtp.read();
    let mut links: Vec<String> = got
        .iter()
        .map(|m| {
            m.text
                .as_deref()
                .unwrap()
                .lines()
                .find(|l| l.starts_with("https://"))
                .unwrap()
                .to_owned()
        })
        .collect();
    links.sort();
    assert_eq!(links, (0..N).map(link).collect::<Vec<_>>());
    assert_eq!(metrics.sent.get(), N as u64);
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_on_one_sqlite_queue_send_each_mail_once() {
    let dir = TempDir::new("two");
    two_senders_send_each_mail_once(sqlite(&dir), sqlite(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_on_one_postgres_queue_send_each_mail_once() {
    let Some(pg) = Pg::new().await else { return };
    two_senders_send_each_mail_once(pg.users(), pg.users()).await;
    pg.drop_schema().await;
}

/// One claim at a time, and a claim whose sender died lapses.
async fn a_claim_holds_until_its_lease_lapses(users: Users) {
    let queue = Queue::new(&users, &SECRET);
    let now = super::now_ms();
    queue.push(&reset_mail(3), now).await.unwrap();
    let claimed = queue.claim(now, 60_000).await.unwrap().expect("a due row");
    assert_eq!(
        (claimed.recipient.as_str(), claimed.attempts),
        ("user3@example.com", 1)
    );
    let body = claimed.body.expect("it opens");
    assert!(body.text.lines().any(|l| l == link(3)));
    assert!(
        queue.claim(now + 59_000, 60_000).await.unwrap().is_none(),
        "held"
    );
    // The sender crashed: a minute on, it is claimed again.
    let again = queue
        .claim(now + 60_001, 60_000)
        .await
        .unwrap()
        .expect("lapsed");
    assert_eq!(
        (again.id.as_str(), again.attempts),
        (claimed.id.as_str(), 2)
    );
    // A retry is not due before its time.
    queue
        .retry_at(&again.id, now + 120_000, "451 try later")
        .await
        .unwrap();
    assert!(queue.claim(now + 119_000, 60_000).await.unwrap().is_none());
    assert!(queue.claim(now + 120_000, 60_000).await.unwrap().is_some());
    // Another secret cannot open what is queued.
    let stranger = Queue::new(&users, &[1; 32]);
    let other = stranger
        .claim(now + 500_000, 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(other.body.is_none());
    queue.remove(&other.id).await.unwrap();
    assert_eq!(queue.depth().await.unwrap(), 0);
}

#[tokio::test]
async fn a_claim_holds_until_its_lease_lapses_on_sqlite() {
    let dir = TempDir::new("lease");
    a_claim_holds_until_its_lease_lapses(sqlite(&dir)).await;
}

#[tokio::test]
async fn a_claim_holds_until_its_lease_lapses_on_postgres() {
    let Some(pg) = Pg::new().await else { return };
    a_claim_holds_until_its_lease_lapses(pg.users()).await;
    // Made again by a second instance starting: idempotent.
    Queue::new(&pg.users(), &SECRET).depth().await.unwrap();
    pg.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_that_keeps_failing_is_given_up_and_removed() {
    let dir = TempDir::new("giveup");
    let users = sqlite(&dir);
    let metrics = MailMetrics::default();
    let timing = Timing {
        max_attempts: 2,
        ..fast()
    };
    let outbox = start(
        &users,
        &format!("smtp://127.0.0.1:{}", free_port()),
        &metrics,
        timing,
    );
    outbox.send(reset_mail(5)).await.unwrap();
    until("given up", async || metrics.given_up.get() == 1).await;
    assert_eq!(metrics.send_failures.get(), 2);
    until("the row is deleted", async || rows(&users).await.is_empty()).await;
    outbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_recipient_is_refused_at_once() {
    let dir = TempDir::new("bad");
    let users = sqlite(&dir);
    let outbox = start(
        &users,
        "smtp://127.0.0.1:9",
        &MailMetrics::default(),
        fast(),
    );
    let mut mail = reset_mail(1);
    mail.to = "not an address".into();
    assert!(outbox.send(mail).await.is_err());
    assert_eq!(Queue::new(&users, &SECRET).depth().await.unwrap(), 0);
    outbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_the_sender_and_leaves_the_queue() {
    let dir = TempDir::new("stop");
    let users = sqlite(&dir);
    let metrics = MailMetrics::default();
    let timing = Timing {
        poll: Duration::from_secs(3600),
        ..fast()
    };
    let outbox = start(&users, "smtp://127.0.0.1:9", &metrics, timing);
    let began = Instant::now();
    outbox.stop().await;
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    // Queued after the sender stopped: kept for the next start.
    outbox.send(reset_mail(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rows(&users).await.len(), 1);
    assert_eq!(metrics.send_failures.get(), 0);
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn dev_mode_logs_the_link_on_a_line_of_its_own() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    LogMailer.send(reset_mail(4)).await.unwrap();
    let mut mail = reset_mail(5);
    mail.notice = Notice::PasswordChanged;
    mail.to = "eve@example.com\nINFO forged".into();
    LogMailer.send(mail).await.unwrap();
    let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.contains(&link(4).as_str()), "{log}");
    assert!(
        log.contains(" INFO ") && log.contains("user4@example.com: Reset your password"),
        "{log}"
    );
    assert!(
        log.contains(r"eve@example.com\nINFO forged: Your password was changed"),
        "{log}"
    );
    assert_eq!(lines.len(), 3, "{log}");
}

#[test]
fn the_command_line_checks_the_mail_flags() {
    use crate::cli::{Cli, Command};
    use clap::Parser;
    let parse = |extra: &[&str]| {
        let mut argv = vec!["latchkey", "serve"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv)
    };
    let Command::Serve(args) = parse(&[
        "--smtp-url",
        "smtps://ops%40example.com:pa%3Ass@mail.example.com",
        "--mail-from",
        "Latchkey <no-reply@example.com>",
    ])
    .unwrap()
    .command
    else {
        panic!("a serve command")
    };
    let smtp = args.smtp_url.as_ref().unwrap();
    assert_eq!(
        (smtp.host.as_str(), smtp.port, smtp.user()),
        ("mail.example.com", 465, Some("ops@example.com"))
    );
    assert_eq!(
        args.mail_from.as_ref().unwrap().email.to_string(),
        "no-reply@example.com"
    );
    let debug = format!("{args:?}");
    assert!(
        !debug.contains("pa%3Ass") && !debug.contains("pa:ss"),
        "{debug}"
    );

    let Command::Serve(args) = parse(&[]).unwrap().command else {
        panic!()
    };
    assert!(args.smtp_url.is_none() && args.mail_from.is_none());

    // Usage errors (exit 2), one line each, never echoing the password.
    let e = parse(&["--smtp-url", "smtp://me:hunter2@relay:25"]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    let shown = e.to_string();
    assert!(
        shown.contains("plain text") && !shown.contains("hunter2"),
        "{shown}"
    );
    let e = parse(&["--smtp-url", "imap://relay"]).unwrap_err();
    assert!(e.to_string().contains("use smtp://HOST:PORT"), "{e}");
    let e = parse(&["--mail-from", "no at sign"]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("latchkey@example.com"), "{e}");
}

#[tokio::test]
async fn serve_with_smtp_needs_a_public_url_and_sends_from_its_host() {
    use crate::cli::{Cli, Command};
    use clap::Parser;
    let dir = TempDir::new("serve");
    let db = format!("sqlite://{}/l.db", dir.path().display());
    let secret = "ab".repeat(32);
    let args = |extra: &[&str]| {
        let mut argv = vec![
            "latchkey",
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--database",
            &db,
            "--secret-key",
            &secret,
            "--smtp-url",
            "smtp://127.0.0.1:9",
        ];
        argv.extend_from_slice(extra);
        let Command::Serve(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!()
        };
        args
    };
    let failure = crate::Serving::start(args(&[]))
        .await
        .err()
        .expect("refused");
    assert_eq!(failure.code(), 2);
    assert!(
        failure.message().contains("--public-url"),
        "{}",
        failure.message()
    );
    // With a public URL the sender defaults to latchkey@ its host.
    let serving = crate::Serving::start(args(&["--public-url", "https://login.example.com"]))
        .await
        .unwrap_or_else(|f| panic!("{}", f.message()));
    drop(serving);
}
