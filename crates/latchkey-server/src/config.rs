//! Parsing and checking what the command line and environment give:
//! secrets, durations, store URLs. Each parser's error is one line that
//! names the problem and the fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;

/// A server secret of 32 or more bytes. Never printed, zeroed on drop.
#[derive(Clone)]
pub struct Secret(pub secrecy::SecretSlice<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `HEX` (64+ hex characters) or `base64:B64` (32+ bytes).
pub fn parse_secret(text: &str) -> Result<Secret, String> {
    let text = text.trim();
    if let Some(b64) = text.strip_prefix("base64:") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| "secret after 'base64:' is not valid base64".to_owned())?;
        if bytes.len() < 32 {
            return Err(format!(
                "secret is {} bytes; it must be at least 32 (try: openssl rand -hex 32)",
                bytes.len()
            ));
        }
        return Ok(Secret(bytes.into()));
    }
    if text.len() < 64 {
        return Err("secret must be 64 or more hex characters or base64:... of 32+ bytes (try: openssl rand -hex 32)".into());
    }
    hex::decode(text).map(|b| Secret(b.into())).map_err(|_| {
        "secret is not hex: give 64+ hex characters or base64:... (try: openssl rand -hex 32)"
            .into()
    })
}

/// A secret read from a file holding it in text form.
pub fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read secret key file {}: {e}", path.display()))?;
    parse_secret(&text).map_err(|e| format!("secret key file {}: {e}", path.display()))
}

/// The longest duration accepted: 366 days. Longer ones are mistakes, and
/// huge ones (`300000000y`) overflow when added to a timestamp.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// "2s", "15m", "12h", "1h 30m"; at least one second, at most 366 days.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e} (use e.g. 30s, 15m, 8h)"))?;
    if d < Duration::from_secs(1) {
        return Err("a duration must be at least 1s".into());
    }
    if d > MAX_DURATION {
        return Err(format!(
            "duration {:?} is longer than the limit of 366 days (use e.g. 8h, 30d)",
            text.trim()
        ));
    }
    Ok(d)
}

/// `--database`: sqlite://PATH or postgres://...
pub fn parse_database_url(url: &str) -> Result<String, String> {
    let ok = url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://");
    if !ok {
        return Err("use sqlite://PATH or postgres://USER@HOST/DB".into());
    }
    if url.starts_with("sqlite:")
        && url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:")
            .is_empty()
    {
        return Err("sqlite URL needs a path, e.g. sqlite://latchkey.db".into());
    }
    Ok(url.to_owned())
}

/// `--sessions`: memory, sqlite://PATH, postgres://... or redis://...
pub fn parse_sessions_url(url: &str) -> Result<String, String> {
    if url == "memory" || url.starts_with("redis://") || url.starts_with("rediss://") {
        return Ok(url.to_owned());
    }
    parse_database_url(url)
        .map_err(|_| "use memory, sqlite://PATH, postgres://... or redis://HOST:PORT".into())
}

/// Where `--dev` keeps the secret it makes: beside the SQLite file, or in
/// the working directory for PostgreSQL.
pub fn dev_secret_path(database_url: &str) -> PathBuf {
    if let Some(path) = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or(path);
        PathBuf::from(format!("{path}.secret"))
    } else {
        PathBuf::from("latchkey-dev.secret")
    }
}

/// Reads the dev secret, or makes and saves one (0600). `true` when made.
pub fn dev_secret(path: &Path) -> Result<(Secret, bool), String> {
    if path.exists() {
        return read_secret_file(path).map(|s| (s, false));
    }
    let bytes: [u8; 32] = rand::random();
    let text = hex::encode(bytes);
    write_private(path, &format!("{text}\n"))
        .map_err(|e| format!("cannot write dev secret {}: {e}", path.display()))?;
    Ok((Secret(bytes.to_vec().into()), true))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets() {
        assert!(parse_secret(&"ab".repeat(32)).is_ok());
        assert!(parse_secret(&format!("  {}\n", "ab".repeat(32))).is_ok());
        assert!(parse_secret(&"ab".repeat(31)).is_err());
        assert!(parse_secret(&"zz".repeat(32)).is_err());
        let b64 = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        assert!(parse_secret(&format!("base64:{b64}")).is_ok());
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        assert!(parse_secret(&format!("base64:{short}")).is_err());
        assert!(!format!("{:?}", parse_secret(&"ab".repeat(32)).unwrap()).contains("ab"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert!(parse_duration("500ms").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("366d").unwrap(), MAX_DURATION);
        for long in ["367d", "2y", "300000000y", "99999999999999999999s"] {
            let e = parse_duration(long).unwrap_err();
            assert!(!e.contains('\n'), "{long}: {e}");
        }
        assert!(parse_duration("367d").unwrap_err().contains("366 days"));
    }

    #[test]
    fn urls() {
        assert!(parse_database_url("sqlite://x.db").is_ok());
        assert!(parse_database_url("redis://x").is_err());
        assert!(parse_sessions_url("redis://127.0.0.1:6379").is_ok());
        assert!(parse_sessions_url("memory").is_ok());
        assert!(parse_sessions_url("mysql://x").is_err());
        assert_eq!(
            dev_secret_path("sqlite://data/l.db"),
            PathBuf::from("data/l.db.secret")
        );
    }
}
