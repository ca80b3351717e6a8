//! `latchkey user ...`: manage users from the command line.
//!
//! Changes that end sessions are made in the users table first (removal, or
//! a raised session version), which every server checks each session
//! against, so they hold even when the session store cannot be reached
//! from here (down, or `memory` inside the server). Then the sessions are
//! deleted from the store too; if that fails, the command says so and
//! still succeeds: nothing the admin did is lost.

use std::io::{BufRead, IsTerminal};

use latchkey::password::{PasswordHasher, PasswordPolicy};
use latchkey::store::Store;
use latchkey::Sessions;
use secrecy::{ExposeSecret, SecretString};

use crate::cli::{valid_role, PolicyArgs, StoreArgs, UserCommand};
use crate::users::{Change, Users, UsersError};
use crate::Failure;

fn users(stores: &StoreArgs) -> Result<Users, Failure> {
    Users::open(&stores.database).map_err(Failure::usage)
}

async fn sessions(stores: &StoreArgs) -> Result<std::sync::Arc<dyn Store>, Failure> {
    latchkey::store::open(stores.sessions_url())
        .await
        .map_err(|e| Failure::runtime(e.to_string()))
}

/// What the session store is told after the users table has the change.
enum StoreChange<'a> {
    /// End every session of this user id.
    EndAll(&'a str),
    /// Set the role carried by this user's sessions.
    SetRole(&'a str, &'a str),
}

/// Applies `change` to the session store and says how it went: "ended N
/// session(s)" or why the store was not changed (servers refuse the old
/// sessions anyway: they check each one against the users table).
async fn in_store(stores: &StoreArgs, change: StoreChange<'_>) -> String {
    if stores.sessions_url() == "memory" {
        return "its sessions in the server's memory store end on their next request".into();
    }
    let result = match sessions(stores).await {
        // Through the library's sessions service: the audit log records it.
        Ok(store) => {
            let sessions = Sessions::new(store);
            match change {
                StoreChange::EndAll(id) => sessions.end_all(id, None).await,
                StoreChange::SetRole(id, role) => sessions.set_role(id, role).await.map(|()| 0),
            }
            .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.message),
    };
    match result {
        Ok(n) => format!("ended {n} session(s)"),
        Err(e) => {
            eprintln!("warning: {e}; the change is in the users table, so servers refuse the old sessions anyway, and they are swept when they expire");
            "the session store could not be reached (see the warning)".into()
        }
    }
}

fn db(e: crate::users::UsersError) -> Failure {
    Failure::runtime(e.to_string())
}

fn exists(name: &str, taken_by: &str) -> Failure {
    let same = if name == taken_by {
        String::new()
    } else {
        format!(" as {taken_by:?} (names are compared ignoring case and width)")
    };
    Failure::runtime(format!(
        "user {name:?} already exists{same}; use set-password or set-role"
    ))
}

fn email_taken(email: &str) -> Failure {
    Failure::runtime(format!(
        "the address {email} belongs to another user; remove it there first"
    ))
}

fn last_admin(name: &str, what: &str) -> Failure {
    Failure::runtime(format!(
        "{name:?} is the last admin; make another user admin first, or pass --force to {what} them anyway"
    ))
}

/// One line from standard input (the line ending removed, nothing else),
/// or a no-echo prompt, twice, on a terminal.
fn read_password(from_stdin: bool) -> Result<SecretString, Failure> {
    if from_stdin {
        // Zeroed on drop, with the line it was read into.
        let mut line = SecretString::default();
        let mut raw = String::new();
        let read = std::io::stdin().lock().read_line(&mut raw);
        let trimmed = raw.strip_suffix('\n').unwrap_or(&raw);
        let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
        if read.is_ok() {
            line = SecretString::from(trimmed);
        }
        secrecy::zeroize::Zeroize::zeroize(&mut raw);
        read.map_err(|e| {
            Failure::usage(format!("cannot read the password from standard input: {e}"))
        })?;
        return Ok(line);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(
            "no terminal to prompt on: pass --password-stdin and pipe the password in",
        ));
    }
    let first = rpassword::prompt_password("New password: ")
        .map(SecretString::from)
        .map_err(|e| Failure::runtime(e.to_string()))?;
    let second = rpassword::prompt_password("Repeat it: ")
        .map(SecretString::from)
        .map_err(|e| Failure::runtime(e.to_string()))?;
    if first.expose_secret() != second.expose_secret() {
        return Err(Failure::runtime(
            "the two passwords differ; nothing changed",
        ));
    }
    Ok(first)
}

async fn new_hash(name: &str, from_stdin: bool, policy: &PolicyArgs) -> Result<String, Failure> {
    let password = read_password(from_stdin)?;
    let policy = PasswordPolicy {
        min_chars: policy.min_password_length as usize,
        ..PasswordPolicy::default()
    };
    policy
        .check(name, password.expose_secret())
        .map_err(Failure::runtime)?;
    PasswordHasher::with_defaults()
        .hash(password.expose_secret())
        .await
        .map_err(|e| Failure::runtime(e.to_string()))
}

pub async fn run(command: UserCommand) -> Result<(), Failure> {
    match command {
        UserCommand::Add {
            name,
            role,
            password_stdin,
            email,
            stores,
            policy,
        } => {
            // A refused name is a refusal (exit 1), like a taken one: the
            // command line was well formed.
            let name = latchkey::username::normalize(&name)
                .map_err(|e| Failure::runtime(e.to_string()))?;
            valid_role(&role).map_err(Failure::usage)?;
            let users = users(&stores)?;
            // Asked first so nobody types a password for nothing; `add`
            // refuses a clash again, race-free.
            if let Some(other) = users.find(&name).await.map_err(db)? {
                return Err(exists(&name, &other.username));
            }
            if let Some(email) = &email {
                if users.by_email(email).await.map_err(db)?.is_some() {
                    return Err(email_taken(email));
                }
            }
            let hash = new_hash(&name, password_stdin, &policy).await?;
            let user = match users.add(&name, &hash, &role).await {
                Ok(user) => user,
                Err(UsersError::Exists(_)) => return Err(exists(&name, &name)),
                Err(e) => return Err(db(e)),
            };
            if let Some(email) = &email {
                if !users
                    .set_email(&user.id, Some(email), true)
                    .await
                    .map_err(db)?
                {
                    return Err(email_taken(email));
                }
            }
            println!("added user {name} with role {role}");
        }
        UserCommand::SetEmail {
            name,
            email,
            stores,
        } => {
            let users = users(&stores)?;
            let user = users.get(&name).await.map_err(db)?;
            if !users
                .set_email(&user.id, Some(&email), true)
                .await
                .map_err(db)?
            {
                return Err(email_taken(&email));
            }
            println!("{name}'s email address is now {email} (verified)");
        }
        UserCommand::ResetLink {
            name,
            ttl,
            public_url,
            stores,
        } => {
            let user = users(&stores)?.get(&name).await.map_err(db)?;
            if stores.sessions_url() == "memory" {
                return Err(Failure::runtime(
                    "reset links live in the session store, and a memory store is inside the server: \
                     use the admin dashboard's \"Send reset link\", or run the server with a shared --sessions store",
                ));
            }
            let store = sessions(&stores).await?;
            let token = latchkey::recovery::issue_reset_token(store.as_ref(), &user, ttl)
                .await
                .map_err(|e| Failure::runtime(e.to_string()))?;
            eprintln!(
                "one-time link for {name}, valid for {}:",
                humantime::format_duration(ttl)
            );
            println!(
                "{}",
                latchkey::recovery::link(&public_url, "/password/reset", &token)
            );
        }
        UserCommand::List { stores } => {
            let list = users(&stores)?.list().await.map_err(db)?;
            println!(
                "{:<24} {:<12} {:<20} LAST SIGN-IN",
                "USERNAME", "ROLE", "CREATED"
            );
            for u in &list {
                let last = u
                    .last_login_at
                    .map(crate::pages::when)
                    .unwrap_or_else(|| "never".into());
                println!(
                    "{:<24} {:<12} {:<20} {}",
                    u.username,
                    u.role,
                    crate::pages::when(u.created_at),
                    last
                );
            }
            println!("{} user(s)", list.len());
        }
        UserCommand::Remove {
            name,
            force,
            stores,
        } => {
            let user = match users(&stores)?.remove(&name, force).await.map_err(db)? {
                Change::Done(user) => user,
                Change::LastAdmin(user) => return Err(last_admin(&user.username, "remove")),
            };
            let how = in_store(&stores, StoreChange::EndAll(&user.id)).await;
            println!("removed user {name}; {how}");
        }
        UserCommand::SetPassword {
            name,
            password_stdin,
            stores,
            policy,
        } => {
            let users = users(&stores)?;
            let user = users.get(&name).await.map_err(db)?;
            let hash = new_hash(&name, password_stdin, &policy).await?;
            users.set_hash(&name, &hash).await.map_err(db)?;
            let how = in_store(&stores, StoreChange::EndAll(&user.id)).await;
            println!("password changed for {name}; {how}");
        }
        UserCommand::SetRole {
            name,
            role,
            force,
            stores,
        } => {
            valid_role(&role).map_err(Failure::usage)?;
            let user = match users(&stores)?
                .set_role(&name, &role, force)
                .await
                .map_err(db)?
            {
                Change::Done(user) => user,
                Change::LastAdmin(user) => return Err(last_admin(&user.username, "demote")),
            };
            // Servers read the role from the users table; the store's copy
            // is updated too so that it never disagrees for long.
            in_store(&stores, StoreChange::SetRole(&user.id, &role)).await;
            println!("{name} now has role {role}");
        }
        UserCommand::ResetMfa { name, stores } => {
            let users = users(&stores)?;
            let user = users.get(&name).await.map_err(db)?;
            let factors = crate::factors::open(&stores.database).map_err(Failure::usage)?;
            factors
                .remove_factors(&user.id)
                .await
                .map_err(|e| Failure::runtime(format!("cannot remove second factors: {e}")))?;
            users.bump_session_version(&user.id).await.map_err(db)?;
            tracing::info!(target: "latchkey::audit", event = "factors_removed", by = "cli", username = %name);
            let how = in_store(&stores, StoreChange::EndAll(&user.id)).await;
            println!("second factors of {name} turned off; signed out everywhere; {how}");
        }
        UserCommand::EndSessions { name, stores } => {
            let users = users(&stores)?;
            let user = users.get(&name).await.map_err(db)?;
            users.bump_session_version(&user.id).await.map_err(db)?;
            let how = in_store(&stores, StoreChange::EndAll(&user.id)).await;
            println!("signed {name} out everywhere; {how}");
        }
    }
    Ok(())
}
