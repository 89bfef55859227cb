//! `prodcat users` (people and service clients of the API, with their roles) and
//! `prodcat audit` (every write through the API: who, what, when, from where).

use clap::{Args, Subcommand};
use prodcat_catalogue::audit::{self, AuditFilter};
use prodcat_catalogue::users::{
    add_user, generate_secret, list_users, set_disabled, set_password, set_role,
};
use prodcat_catalogue::{NewUser, Role, UserKind};

use crate::commands::data::format_time;
use crate::output;
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a person (password grant) or a service client (client credentials grant).
    Add(AddArgs),
    /// List users with their role and kind.
    List,
    /// Disable a user: no new tokens, and the tokens it holds stop working within seconds on
    /// every replica.
    Disable { name: String },
    /// Allow a disabled user again (it signs in anew).
    Enable { name: String },
    /// Give a user another role; the tokens it holds stop working.
    Role {
        name: String,
        /// admin, reviewer, service or viewer.
        role: String,
    },
    /// Set a user's password or client secret (random and printed once when not given); the
    /// tokens it holds stop working.
    Password {
        name: String,
        #[arg(long, env = "PRODCAT_NEW_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Login name (people) or client id (services).
    pub name: String,
    /// admin (everything), reviewer (products, review queue, search), service (predict, jobs)
    /// or viewer (read products, search).
    #[arg(long)]
    pub role: String,
    /// A service client (client credentials grant) rather than a person.
    #[arg(long)]
    pub service: bool,
    /// The password or client secret (at least 8 characters). Without it a random one is
    /// generated and printed once.
    #[arg(long, env = "PRODCAT_NEW_USER_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

pub async fn run(settings: &Settings, command: UsersCommand) -> anyhow::Result<()> {
    let database = settings.open_database().await?;
    match command {
        UsersCommand::Add(args) => {
            let role = Role::parse(&args.role)?;
            let generated = args.password.is_none();
            let secret = args.password.unwrap_or_else(generate_secret);
            let kind = if args.service {
                UserKind::Service
            } else {
                UserKind::Person
            };
            let user = add_user(
                &database,
                &NewUser {
                    name: args.name.clone(),
                    role,
                    kind,
                    secret: secret.clone(),
                },
            )
            .await?;
            println!(
                "added {} {} with role {}",
                user.kind.as_str(),
                user.name,
                user.role.as_str()
            );
            if generated {
                let what = if args.service {
                    "client secret"
                } else {
                    "password"
                };
                println!("{what} (shown once): {secret}");
            }
            let grant = if args.service {
                format!(
                    "-d grant_type=client_credentials -d client_id={} -d client_secret=...",
                    user.name
                )
            } else {
                format!(
                    "-d grant_type=password -d username={} -d password=...",
                    user.name
                )
            };
            println!("token: curl -s http://127.0.0.1:8080/v1/auth/token {grant}");
        }
        UsersCommand::List => {
            let mut table = output::table(&["name", "role", "kind", "created", "state"]);
            for user in list_users(&database).await? {
                table.add_row(vec![
                    user.name,
                    user.role.as_str().to_string(),
                    user.kind.as_str().to_string(),
                    format_time(user.created_at_ms),
                    if user.disabled { "disabled" } else { "active" }.to_string(),
                ]);
            }
            println!("{table}");
        }
        UsersCommand::Disable { name } => {
            set_disabled(&database, &name, true).await?;
            println!("{name} is disabled");
        }
        UsersCommand::Enable { name } => {
            set_disabled(&database, &name, false).await?;
            println!("{name} is enabled");
        }
        UsersCommand::Role { name, role } => {
            set_role(&database, &name, Role::parse(&role)?).await?;
            println!("{name} now has the role {role}; its earlier tokens no longer work");
        }
        UsersCommand::Password { name, password } => {
            let generated = password.is_none();
            let secret = password.unwrap_or_else(generate_secret);
            set_password(&database, &name, &secret).await?;
            if generated {
                println!("{name}'s new password (shown once): {secret}");
            } else {
                println!("{name}'s password is changed");
            }
            println!("its earlier tokens no longer work");
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries of this age or younger, e.g. 30m, 24h, 7d.
    #[arg(long)]
    pub since: Option<String>,
    /// Only this user's entries.
    #[arg(long)]
    pub actor: Option<String>,
    /// Entries shown at most (newest first).
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run_audit(settings: &Settings, args: AuditArgs) -> anyhow::Result<()> {
    let database = settings.open_database().await?;
    let since_ms = match &args.since {
        Some(text) => Some(prodcat_storage::now_ms() - prodcat_pipelines::parse_duration_ms(text)?),
        None => None,
    };
    let entries = audit::list(
        &database,
        &AuditFilter {
            since_ms,
            actor: args.actor.clone(),
            limit: args.limit.clamp(1, 100_000),
        },
    )
    .await?;
    if args.json {
        for entry in &entries {
            println!(
                "{}",
                serde_json::json!({
                    "at": format_time(entry.at_ms), "atMs": entry.at_ms, "actor": entry.actor,
                    "role": entry.role, "action": entry.action, "target": entry.target,
                    "detail": entry.detail, "client": entry.client_address, "status": entry.status,
                })
            );
        }
        return Ok(());
    }
    let mut table = output::table(&["when", "who", "role", "action", "detail", "from", "status"]);
    for entry in &entries {
        table.add_row(vec![
            format_time(entry.at_ms),
            entry.actor.clone(),
            entry.role.clone(),
            entry.action.clone(),
            entry.detail.clone(),
            entry.client_address.clone(),
            entry.status.to_string(),
        ]);
    }
    println!("{table}");
    if entries.is_empty() {
        println!("no audited requests match");
    }
    Ok(())
}
