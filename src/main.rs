//! The `chatgate` binary: parses flags, sets up logging, runs a subcommand.
//! All logic lives in the library; errors become messages and exit codes
//! here (64 for a configuration the gateway refuses, 3 for a schema that
//! `chatgate migrate --check` finds out of date).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chatgate::auth::mint_token;
use chatgate::cli::{Cli, Command, ConversationAction, LogFormat, MigrateArgs, UserAction};
use chatgate::store::postgres::{Admin as PgAdmin, MigrateOptions};
use chatgate::store::sqlite::Admin;
use chatgate::{Gateway, GatewayError, JwtConfig};
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// EX_USAGE: the configuration is unusable.
const EXIT_CONFIG: u8 = 64;
/// `chatgate migrate --check`: something is missing or invalid.
const EXIT_OUT_OF_DATE: u8 = 3;

/// `migrate --check` found the schema out of date (already printed).
#[derive(Debug, thiserror::Error)]
#[error("the schema is not up to date: run `chatgate migrate`")]
struct OutOfDate;

/// A flag combination `migrate` refuses.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(&'static str);

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chatgate: {e:#}");
            let config_error = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<GatewayError>(),
                    Some(GatewayError::Config(_))
                ) || c.is::<chatgate::config::ConfigError>()
                    || c.is::<Usage>()
            });
            ExitCode::from(match () {
                _ if config_error => EXIT_CONFIG,
                _ if e.is::<OutOfDate>() => EXIT_OUT_OF_DATE,
                _ => 1,
            })
        }
    }
}

fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.common.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.common.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        None | Some(Command::Serve) => serve(&cli, cli.jwt()?),
        Some(Command::Migrate(args)) => migrate(&cli, args),
        Some(Command::Token { user_id, ttl }) => {
            println!("{}", mint_token(&cli.jwt()?, *user_id, *ttl));
            Ok(())
        }
        Some(Command::User {
            action:
                UserAction::Add {
                    username,
                    first_name,
                    last_name,
                },
        }) => {
            let id = match &cli.common.database_url {
                Some(url) => PgAdmin::connect(url)?.create_user(username, first_name, last_name)?,
                None => Admin::open(&cli.common.database)?
                    .create_user(username, first_name, last_name)?,
            };
            println!("{id}");
            Ok(())
        }
        Some(Command::Conversation {
            action: ConversationAction::Create { members },
        }) => {
            let id = match &cli.common.database_url {
                Some(url) => PgAdmin::connect(url)?.create_conversation(members)?,
                None => Admin::open(&cli.common.database)?.create_conversation(members)?,
            };
            println!("{id}");
            Ok(())
        }
    }
}

fn migrate(cli: &Cli, args: &MigrateArgs) -> anyhow::Result<()> {
    let Some(url) = &cli.common.database_url else {
        if args.print_sql || args.check {
            return Err(Usage("--print-sql and --check need --database-url (PostgreSQL)").into());
        }
        Admin::open(&cli.common.database).context("migrating the database")?;
        println!("database {} is up to date", cli.common.database.display());
        return Ok(());
    };
    let admin = PgAdmin::connect(url).context("connecting to the Postgres database")?;
    if args.print_sql || args.check {
        let plan = admin
            .migration_plan()
            .context("reading the Postgres catalog")?;
        if args.print_sql {
            print!("{}", plan.script(args.lock_timeout));
            return Ok(());
        }
        if plan.is_up_to_date() {
            println!("the Postgres database is up to date");
            return Ok(());
        }
        for problem in plan.problems() {
            println!("{problem}");
        }
        return Err(OutOfDate.into());
    }
    let options = MigrateOptions {
        lock_timeout: args.lock_timeout,
        ..MigrateOptions::default()
    };
    let report = admin
        .migrate_with(&options)
        .context("migrating the Postgres database")?;
    if report.executed.is_empty() {
        println!("the Postgres database is up to date (nothing to do)");
    } else {
        println!(
            "the Postgres database is up to date ({} statements, {} retried after a lock timeout)",
            report.executed.len(),
            report.retries
        );
    }
    Ok(())
}

fn serve(cli: &Cli, jwt: JwtConfig) -> anyhow::Result<()> {
    let config = cli.config(jwt.clone());
    config.validate()?;
    // The embedded store is migrated and, when fresh, seeded with a demo;
    // a Postgres database belongs to the Django app and is left as it is.
    let demo = match &cli.common.database_url {
        Some(_) => None,
        None => {
            let admin = Admin::open(&cli.common.database).context("opening the database")?;
            if cli.serve.demo && admin.user_count()? == 0 {
                Some(seed_demo(&admin)?)
            } else {
                None
            }
        }
    };
    // Catch SIGTERM/SIGINT before the listeners exist: a signal that arrives
    // while the gateway starts is kept and drains it as soon as it runs.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    let gateway = Gateway::start(config)?;
    if let Some((conv, users)) = demo {
        print_demo(&jwt, gateway.local_addr(), conv, &users, cli.serve.web);
    }
    let handle = gateway.shutdown_handle();
    std::thread::Builder::new()
        .name("chatgate-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(signal = sig, "shutting down");
                handle.trigger();
            }
        })?;
    gateway.wait();
    tracing::info!("stopped");
    Ok(())
}

/// Two demo users in one conversation, on a fresh embedded database.
fn seed_demo(admin: &Admin) -> anyhow::Result<(i64, Vec<(i64, &'static str)>)> {
    let alice = admin.create_user("alice", "Alice", "Liddell")?;
    let bob = admin.create_user("bob", "Bob", "Builder")?;
    let conv = admin.create_conversation(&[alice, bob])?;
    Ok((conv, vec![(alice, "alice"), (bob, "bob")]))
}

fn print_demo(
    jwt: &JwtConfig,
    addr: std::net::SocketAddr,
    conv: i64,
    users: &[(i64, &str)],
    web: bool,
) {
    let ttl = Duration::from_secs(24 * 3600);
    // A wildcard listen address is not something a browser can open.
    let host = match addr.ip() {
        ip if ip.is_unspecified() => std::net::SocketAddr::new([127, 0, 0, 1].into(), addr.port()),
        _ => addr,
    };
    println!("\nFresh database: demo users and conversation {conv} created (links valid 24 h).");
    if web {
        println!("Open each link in its own browser tab and chat:\n");
    }
    for (id, name) in users {
        let token = mint_token(jwt, *id, ttl);
        if web {
            println!("  {name}: http://{host}/#conversation={conv}&token={token}");
        } else {
            println!("  {name} (user {id}): ws://{host}/ws/chat/{conv}/?token={token}");
        }
    }
    println!("\nMore tokens: chatgate token --user-id N\n");
}
