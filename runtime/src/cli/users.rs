//! `kiln users` and `kiln keys`: an app's users, their sessions, and its
//! token signing keys, through the admin API.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::admin::{ServerArgs, millis, text};

#[derive(Args)]
pub struct UsersArgs {
    #[command(subcommand)]
    command: UsersCommand,
    /// The app.
    #[arg(long, global = true, default_value = "")]
    app: String,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Users in creation order; `--search` narrows to an email prefix.
    List {
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// Continue after this user id (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
    /// One user.
    Show { id: String },
    /// Disables a user; every session ends at once.
    Disable { id: String },
    /// Enables a disabled user.
    Enable { id: String },
    /// Deletes a user and their sessions.
    Delete { id: String },
    /// Replaces a user's roles (none: removes them all).
    Roles { id: String, roles: Vec<String> },
    /// A user's sessions.
    Sessions { id: String },
    /// Revokes one session of a user, or all of them.
    Revoke { id: String, session: Option<String> },
}

#[derive(Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Makes a new signing key current; tokens signed by the old ones verify until they expire.
    Rotate {
        #[arg(long)]
        app: String,
    },
}

pub fn run(args: UsersArgs) -> anyhow::Result<()> {
    if args.app.is_empty() {
        anyhow::bail!("which app? pass --app APP");
    }
    let base = format!("/admin/v1/apps/{}/users", args.app);
    let server = &args.server;
    match args.command {
        UsersCommand::List {
            search,
            limit,
            after,
        } => {
            let mut query = format!("limit={limit}");
            for (key, value) in [("search", search), ("after", after)] {
                if let Some(value) = value {
                    let encoded: String =
                        form_urlencoded::byte_serialize(value.as_bytes()).collect();
                    query.push_str(&format!("&{key}={encoded}"));
                }
            }
            let body = server.get(&format!("{base}?{query}"))?;
            let users = body["users"].as_array().cloned().unwrap_or_default();
            if users.is_empty() {
                println!("no users");
            }
            for user in &users {
                println!("{}", line(user));
            }
            if let Some(next) = body["next"].as_str() {
                println!("more: --after {next}");
            }
        }
        UsersCommand::Show { id } => {
            let body = server.get(&format!("{base}/{id}"))?;
            println!("{}", serde_json::to_string_pretty(&body["user"])?);
        }
        UsersCommand::Disable { id } => {
            let body = server.call(Method::POST, &format!("{base}/{id}/disable"), None)?;
            println!("disabled {}", line(&body["user"]));
        }
        UsersCommand::Enable { id } => {
            let body = server.call(Method::POST, &format!("{base}/{id}/enable"), None)?;
            println!("enabled {}", line(&body["user"]));
        }
        UsersCommand::Delete { id } => {
            server.call(Method::DELETE, &format!("{base}/{id}"), None)?;
            println!("deleted {id}");
        }
        UsersCommand::Roles { id, roles } => {
            let body = server.call(
                Method::PUT,
                &format!("{base}/{id}/roles"),
                Some(json!({ "roles": roles })),
            )?;
            println!("{}", line(&body["user"]));
        }
        UsersCommand::Sessions { id } => {
            let body = server.get(&format!("{base}/{id}/sessions"))?;
            let sessions = body["sessions"].as_array().cloned().unwrap_or_default();
            if sessions.is_empty() {
                println!("no sessions");
            }
            for s in sessions {
                println!(
                    "{} last used {} from {} ({}){}",
                    text(&s["id"]),
                    millis(&s["last_used_ms"]),
                    text(&s["address"]),
                    text(&s["device"]),
                    if s["mfa"] == true { " mfa" } else { "" },
                );
            }
        }
        UsersCommand::Revoke { id, session } => {
            let path = match &session {
                Some(session) => format!("{base}/{id}/sessions/{session}"),
                None => format!("{base}/{id}/sessions"),
            };
            let body = server.call(Method::DELETE, &path, None)?;
            println!("revoked {} session(s) of {id}", body["revoked"]);
        }
    }
    Ok(())
}

pub fn keys(args: KeysArgs) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Rotate { app } => {
            let body = args.server.call(
                Method::POST,
                &format!("/admin/v1/apps/{app}/auth/keys/rotate"),
                None,
            )?;
            println!("app {app} now signs with key {}", text(&body["kid"]));
        }
    }
    Ok(())
}

fn line(user: &Value) -> String {
    let roles: Vec<&str> = user["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    format!(
        "{} {}{}{}{}",
        text(&user["id"]),
        user["email"].as_str().unwrap_or("(anonymous)"),
        if roles.is_empty() {
            String::new()
        } else {
            format!(" roles={}", roles.join(","))
        },
        if user["disabled"] == true {
            " disabled"
        } else {
            ""
        },
        if user["email_verified"] == true {
            " verified"
        } else {
            ""
        },
    )
}
