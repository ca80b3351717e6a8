//! `latchkey user ...`: manage users from the command line. Changes that
//! end sessions act on the session store directly, so a running server
//! sees them on the next request.

use std::io::{BufRead, IsTerminal};

use latchkey::password::{PasswordHasher, PasswordPolicy};
use latchkey::store::Store;

use crate::cli::{valid_role, PolicyArgs, StoreArgs, UserCommand};
use crate::users::{Change, Users, UsersError};
use crate::Failure;

fn users(stores: &StoreArgs) -> Result<Users, Failure> {
    Users::open(&stores.database).map_err(Failure::usage)
}

async fn sessions(stores: &StoreArgs) -> Result<std::sync::Arc<dyn Store>, Failure> {
    let url = stores.sessions_url();
    if url == "memory" {
        eprintln!("note: --sessions memory lives inside the server process; this command cannot end sessions there (they end when the server restarts)");
    }
    latchkey::store::open(url)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))
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

fn last_admin(name: &str, what: &str) -> Failure {
    Failure::runtime(format!(
        "{name:?} is the last admin; make another user admin first, or pass --force to {what} them anyway"
    ))
}

fn store_err(e: latchkey::store::StoreError) -> Failure {
    Failure::runtime(e.to_string())
}

/// One line from standard input (the line ending removed, nothing else),
/// or a no-echo prompt, twice, on a terminal.
fn read_password(from_stdin: bool) -> Result<String, Failure> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| {
            Failure::usage(format!("cannot read the password from standard input: {e}"))
        })?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        return Ok(line.to_owned());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(
            "no terminal to prompt on: pass --password-stdin and pipe the password in",
        ));
    }
    let first = rpassword::prompt_password("New password: ")
        .map_err(|e| Failure::runtime(e.to_string()))?;
    let second =
        rpassword::prompt_password("Repeat it: ").map_err(|e| Failure::runtime(e.to_string()))?;
    if first != second {
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
    policy.check(name, &password).map_err(Failure::runtime)?;
    PasswordHasher::with_defaults()
        .hash(&password)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))
}

pub async fn run(command: UserCommand) -> Result<(), Failure> {
    match command {
        UserCommand::Add {
            name,
            role,
            password_stdin,
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
            let hash = new_hash(&name, password_stdin, &policy).await?;
            match users.add(&name, &hash, &role).await {
                Ok(_) => {}
                Err(UsersError::Exists(_)) => return Err(exists(&name, &name)),
                Err(e) => return Err(db(e)),
            }
            println!("added user {name} with role {role}");
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
            let n = sessions(&stores)
                .await?
                .delete_user(&user.id, None)
                .await
                .map_err(store_err)?;
            println!("removed user {name}; ended {n} session(s)");
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
            let n = sessions(&stores)
                .await?
                .delete_user(&user.id, None)
                .await
                .map_err(store_err)?;
            println!("password changed for {name}; ended {n} session(s)");
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
            sessions(&stores)
                .await?
                .set_role(&user.id, &role)
                .await
                .map_err(store_err)?;
            println!("{name} now has role {role}");
        }
        UserCommand::EndSessions { name, stores } => {
            let user = users(&stores)?.get(&name).await.map_err(db)?;
            let n = sessions(&stores)
                .await?
                .delete_user(&user.id, None)
                .await
                .map_err(store_err)?;
            println!("ended {n} session(s) of {name}");
        }
    }
    Ok(())
}
