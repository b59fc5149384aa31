//! Command-line flags of `chatgate-bench`, and their conversion into the
//! scenarios' parameters.
//!
//! Owns the `clap` definitions (store and secret flags mirror the
//! gateway's, with the same environment variables, so a plan prepared with
//! the gateway's settings mints tokens the gateway accepts) and
//! [`execute`], which runs a subcommand and returns its rendered report.
//!
//! Must never: print (the binary prints what [`execute`] returns).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::conns::{self, ConnsSpec};
use crate::fanout::{self, FanoutSpec};
use crate::ladder::{self, LadderData, LadderSpec};
use crate::net::parse_targets;
use crate::plan::{self, Plan, PrepareSpec, StoreTarget};
use crate::resume::{self, ResumeSpec};
use crate::runner::{ClientDriver, ConnectOptions};
use crate::soak::{self, SoakSpec};
use crate::storm::{self, StormSpec};
use crate::BenchError;
use chatgate::cli::{resolve_secret, SecretError};
use chatgate::config::JwtConfig;

/// chatgate-bench: provision a load-test plan, then drive a gateway with it.
#[derive(Debug, Parser)]
#[command(name = "chatgate-bench", version, about)]
pub struct BenchCli {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Create C conversations of M fresh users each; write their tokens to a plan file.
    Prepare(PrepareArgs),
    /// Every plan member connected; K senders per conversation at an open-loop rate.
    Fanout(FanoutArgs),
    /// Open N idle authenticated sockets and hold them (heartbeats, RSS per connection).
    Conns(ConnsArgs),
    /// Connect, wait for admission, close — N times with C at once (handshakes/s).
    Storm(StormArgs),
    /// N protocol-v2 sockets reconnect at once with `?since=`; time until all resumed.
    Resume(ResumeArgs),
    /// One fanout run per offered rate; stores the series in a data file and draws it as SVG.
    Ladder(LadderArgs),
    /// Draws a ladder data file as SVG (no run).
    Plot(PlotArgs),
    /// Connect/disconnect churn for a soak: v1 and v2 sessions, resumes, typing, reactions.
    Soak(SoakArgs),
    /// Draws a soak's samples (CSV) as SVG and prints the flatness verdict per series.
    SoakPlot(SoakPlotArgs),
}

/// Flags of `prepare`.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Conversations to create.
    #[arg(long)]
    pub conversations: usize,
    /// Fresh users per conversation.
    #[arg(long)]
    pub members: usize,
    /// Embedded SQLite database of the gateway (as its `--database`).
    #[arg(long, env = "CHATGATE_DATABASE", default_value = "chatgate.db")]
    pub database: PathBuf,
    /// PostgreSQL URL of the gateway's store (as its `--database-url`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// HS256 secret (as the gateway's `--jwt-secret`); without it, the one
    /// kept in `<database>.secret`, exactly as the gateway resolves it.
    #[arg(long, env = "CHATGATE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Name of the user-id claim (as the gateway's flag).
    #[arg(long, env = "CHATGATE_JWT_USER_ID_CLAIM", default_value = "user_id")]
    pub jwt_user_id_claim: String,
    /// Name of the token-type claim (as the gateway's flag).
    #[arg(
        long,
        env = "CHATGATE_JWT_TOKEN_TYPE_CLAIM",
        default_value = "token_type"
    )]
    pub jwt_token_type_claim: String,
    /// Token lifetime, e.g. 1h, 24h.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Gateway URL written into the plan (`url_base`).
    #[arg(long, default_value = "ws://127.0.0.1:8000")]
    pub url_base: String,
    /// Username prefix (usernames: `<prefix>_<run>_<conversation>_<member>`).
    #[arg(long, default_value = "lt")]
    pub prefix: String,
    /// Plan file to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// Flags shared by the scenarios.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Plan file written by `prepare`.
    #[arg(long)]
    pub plan: PathBuf,
    /// Gateway URL(s), comma-separated (member j of a conversation uses
    /// URL j mod count). Default: the plan's `url_base`.
    #[arg(long)]
    pub url: Option<String>,
    /// Source addresses to bind, comma-separated, used in turn (each gives
    /// about 28,000 ephemeral ports), e.g. 127.0.0.2,127.0.0.3.
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,
    /// Load threads (one monoio runtime each).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// io driver of the load threads: epoll or uring. Default: epoll for
    /// fanout and conns, uring for storm (the faster for each, measured).
    #[arg(long, value_enum)]
    pub io_driver: Option<ClientDriver>,
    /// Handshakes in flight at once, per thread, while connecting.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Longest one connect plus upgrade may take.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Longest connecting every socket may take.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub connect_phase_timeout: Duration,
    /// Gateway process id(s), comma-separated: RSS read from /proc before and after.
    #[arg(long, value_delimiter = ',')]
    pub gateway_pid: Vec<u32>,
    /// Offer protocol v2 (`chatgate.v2`) on every socket (presence cost).
    #[arg(long)]
    pub v2: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Flags of `fanout` (and of every step of `ladder`, whose `--rate` is ignored).
#[derive(Debug, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Senders per conversation (its first K members).
    #[arg(long, default_value_t = 1)]
    pub senders_per_conv: usize,
    /// Messages per second over all senders (open loop); required by `fanout`.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Measured sending time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Sending before the measurement starts.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Longest wait for the last deliveries after sending stops.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// Pad each message's content to at least this many bytes.
    #[arg(long, default_value_t = 0)]
    pub content_bytes: usize,
    /// Use only the plan's first N conversations.
    #[arg(long)]
    pub conversations: Option<usize>,
    /// Use only the first M members of each conversation.
    #[arg(long)]
    pub members: Option<usize>,
}

/// Flags of `ladder`.
#[derive(Debug, Args)]
pub struct LadderArgs {
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// Offered rates (messages/s over all senders), run in this order, e.g. 5000,10000,20000.
    #[arg(long, value_delimiter = ',', required = true)]
    pub rates: Vec<f64>,
    /// Wait between steps, so the gateway drains what the previous step left.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub pause: Duration,
    /// Label of this series in the data file (a series of the same label is replaced).
    #[arg(long)]
    pub label: String,
    /// JSON data file collecting the series (created if missing).
    #[arg(long)]
    pub data: PathBuf,
    /// Title stored in the data file (drawn above the picture).
    #[arg(long)]
    pub title: Option<String>,
    /// SVG to draw from the data file after the run.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// Flags of `plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// JSON data file written by `ladder`.
    #[arg(long)]
    pub data: PathBuf,
    /// SVG to write.
    #[arg(long)]
    pub svg: PathBuf,
    /// Replaces the data file's title in the picture.
    #[arg(long)]
    pub title: Option<String>,
}

/// Flags of `conns`.
#[derive(Debug, Args)]
pub struct ConnsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Sockets to open (socket i uses plan member i mod members).
    #[arg(long)]
    pub count: usize,
    /// How long to hold them once connected.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// The gateway's --ping-interval: each socket must see hold/interval heartbeats.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expect_ping_interval: Option<Duration>,
}

/// Flags of `storm`.
#[derive(Debug, Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Handshakes to attempt.
    #[arg(long)]
    pub count: usize,
    /// Clients at once (over all threads).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// Flags of `resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Sockets to open at once (socket i uses plan member i mod members).
    #[arg(long)]
    pub count: usize,
    /// The `since` message id every socket resumes from (0: the beginning).
    #[arg(long, default_value_t = 0)]
    pub since: i64,
}

/// Flags of `soak`.
#[derive(Debug, Args)]
pub struct SoakArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// How long the clients keep churning.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Clients at once (each loops: connect, send, hold, close, pause).
    #[arg(long, default_value_t = 20)]
    pub clients: usize,
    /// How long each session stays open.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// Wait between a client's sessions.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub pause: Duration,
}

/// Flags of `soak-plot`.
#[derive(Debug, Args)]
pub struct SoakPlotArgs {
    /// CSV written by loadtest/soak.sh (t_s,node,<series>…).
    #[arg(long)]
    pub csv: PathBuf,
    /// SVG to write.
    #[arg(long)]
    pub svg: PathBuf,
    /// Seconds at the start left out of the verdict.
    #[arg(long, default_value_t = 300.0)]
    pub warmup: f64,
    /// Largest drift still called flat, as a fraction.
    #[arg(long, default_value_t = 0.10)]
    pub tolerance: f64,
    /// Title above the picture.
    #[arg(long, default_value = "chatgate soak")]
    pub title: String,
}

/// A subcommand's result: the rendered report and whether its checks held.
#[derive(Debug)]
pub struct Outcome {
    pub report: String,
    pub ok: bool,
}

/// Runs a subcommand.
pub fn execute(cli: BenchCli) -> Result<Outcome, BenchError> {
    match cli.command {
        BenchCommand::Prepare(a) => prepare(a),
        BenchCommand::Fanout(a) => {
            let (plan, opts) = load(&a.connect, ClientDriver::Epoll)?;
            let plan = plan.subset(a.conversations, a.members);
            let r = fanout::run(&plan, opts, fanout_spec(&a))?;
            render(&r, r.text(), r.ok, a.connect.json)
        }
        BenchCommand::Ladder(a) => {
            let f = &a.fanout;
            let (plan, opts) = load(&f.connect, ClientDriver::Epoll)?;
            let plan = plan.subset(f.conversations, f.members);
            let spec = LadderSpec {
                rates: a.rates.clone(),
                step: fanout_spec(f),
                pause: a.pause,
                label: a.label.clone(),
                data: a.data.clone(),
                title: a.title.clone(),
                svg: a.svg.clone(),
            };
            let series = ladder::run(&plan, opts, &spec)?;
            let ok = series.points.iter().any(|p| p.ok);
            render(&series, ladder::text(&series), ok, f.connect.json)
        }
        BenchCommand::Plot(a) => {
            let mut data = LadderData::load_or_default(&a.data)?;
            if let Some(title) = a.title {
                data.title = title;
            }
            ladder::plot::draw(&data, &a.svg)?;
            Ok(Outcome {
                report: format!("{} series drawn to {}", data.series.len(), a.svg.display()),
                ok: true,
            })
        }
        BenchCommand::Soak(a) => {
            let (plan, opts) = load(&a.connect, ClientDriver::Epoll)?;
            let spec = SoakSpec {
                duration: a.duration,
                clients: a.clients,
                hold: a.hold,
                pause: a.pause,
            };
            let r = soak::run(&plan, opts, spec)?;
            render(&r, r.text(), r.ok, a.connect.json)
        }
        BenchCommand::SoakPlot(a) => soak_plot(&a),
        BenchCommand::Conns(a) => {
            let (plan, opts) = load(&a.connect, ClientDriver::Epoll)?;
            let spec = ConnsSpec {
                count: a.count,
                hold: a.hold,
                expect_ping_interval: a.expect_ping_interval,
                gateway_pids: a.connect.gateway_pid.clone(),
                progress: !a.connect.quiet,
            };
            let r = conns::run(&plan, opts, spec)?;
            render(&r, r.text(), r.ok, a.connect.json)
        }
        BenchCommand::Storm(a) => {
            let (plan, opts) = load(&a.connect, ClientDriver::Uring)?;
            let spec = StormSpec {
                count: a.count,
                concurrency: a.concurrency,
            };
            let r = storm::run(&plan, opts, spec)?;
            render(&r, r.text(), r.ok, a.connect.json)
        }
        BenchCommand::Resume(a) => {
            let (plan, opts) = load(&a.connect, ClientDriver::Epoll)?;
            let spec = ResumeSpec {
                count: a.count,
                since: a.since,
                progress: !a.connect.quiet,
            };
            let r = resume::run(&plan, opts, spec)?;
            render(&r, r.text(), r.ok, a.connect.json)
        }
    }
}

/// Reads the soak's CSV, draws it and judges every series.
fn soak_plot(a: &SoakPlotArgs) -> Result<Outcome, BenchError> {
    let csv = std::fs::read_to_string(&a.csv)
        .map_err(|e| BenchError::Invalid(format!("cannot read {}: {e}", a.csv.display())))?;
    let data = soak::plot::parse(&csv)?;
    soak::plot::draw(&data, a.warmup, &a.title, &a.svg)?;
    let verdicts = soak::plot::verdicts(&data, a.warmup, a.tolerance);
    let (report, ok) = soak::plot::text(&verdicts, a.warmup, a.tolerance);
    Ok(Outcome { report, ok })
}

/// A fan-out run's parameters from its flags.
fn fanout_spec(a: &FanoutArgs) -> FanoutSpec {
    FanoutSpec {
        senders_per_conv: a.senders_per_conv,
        rate: a.rate,
        warmup: a.warmup,
        duration: a.duration,
        drain: a.drain,
        content_bytes: a.content_bytes,
        gateway_pids: a.connect.gateway_pid.clone(),
        progress: !a.connect.quiet,
    }
}

fn prepare(a: PrepareArgs) -> Result<Outcome, BenchError> {
    if a.jwt_secret.is_none() && a.database_url.is_some() {
        return Err(SecretError::Required.into());
    }
    let jwt = JwtConfig {
        secret: resolve_secret(a.jwt_secret.as_deref(), &a.database)?,
        leeway: Duration::ZERO,
        user_id_claim: a.jwt_user_id_claim,
        token_type_claim: a.jwt_token_type_claim,
        jti_claim: Some("jti".into()),
    };
    let target = match a.database_url {
        Some(url) => StoreTarget::Postgres(url),
        None => StoreTarget::Sqlite(a.database),
    };
    let spec = PrepareSpec {
        conversations: a.conversations,
        members: a.members,
        prefix: a.prefix,
        ttl: a.ttl,
        url_base: a.url_base,
    };
    let plan = plan::prepare(&target, &jwt, &spec)?;
    plan.save(&a.out)?;
    Ok(Outcome {
        report: format!(
            "prepared run {}: {} conversations x {} members ({} users), tokens valid {}; plan written to {}",
            plan.run,
            spec.conversations,
            spec.members,
            plan.member_count(),
            humantime::format_duration(spec.ttl),
            a.out.display()
        ),
        ok: true,
    })
}

/// Reads the plan and builds the connection options.
fn load(
    a: &ConnectArgs,
    default_driver: ClientDriver,
) -> Result<(Plan, ConnectOptions), BenchError> {
    let plan = Plan::load(&a.plan)?;
    let urls = a.url.clone().unwrap_or_else(|| plan.url_base.clone());
    let opts = ConnectOptions {
        targets: parse_targets(&urls)?,
        source_ips: a.source_ips.clone(),
        threads: a.threads,
        concurrency: a.connect_concurrency,
        timeout: a.connect_timeout,
        phase_timeout: a.connect_phase_timeout,
        driver: a.io_driver.unwrap_or(default_driver),
        v2: a.v2,
    };
    Ok((plan, opts))
}

fn render<R: serde::Serialize>(
    report: &R,
    text: String,
    ok: bool,
    json: bool,
) -> Result<Outcome, BenchError> {
    let report = if json {
        serde_json::to_string_pretty(report).expect("reports serialize")
    } else {
        text
    };
    Ok(Outcome { report, ok })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let cli = BenchCli::try_parse_from([
            "chatgate-bench",
            "fanout",
            "--plan",
            "p.json",
            "--rate",
            "1000",
            "--source-ips",
            "127.0.0.2,127.0.0.3",
            "--gateway-pid",
            "12",
            "--duration",
            "3s",
        ])
        .unwrap();
        let BenchCommand::Fanout(a) = cli.command else {
            panic!("not fanout")
        };
        assert_eq!(a.connect.source_ips.len(), 2);
        assert_eq!(a.connect.gateway_pid, vec![12]);
        assert_eq!(a.duration, Duration::from_secs(3));
        assert_eq!(a.warmup, Duration::from_secs(2));
        assert_eq!(a.senders_per_conv, 1);
        assert!(BenchCli::try_parse_from(["chatgate-bench", "conns", "--plan", "p"]).is_err());
        let cli = BenchCli::try_parse_from([
            "chatgate-bench",
            "ladder",
            "--plan",
            "p.json",
            "--rates",
            "1000,2000.5",
            "--label",
            "pg",
            "--data",
            "l.json",
        ])
        .unwrap();
        let BenchCommand::Ladder(l) = cli.command else {
            panic!("not ladder")
        };
        assert_eq!(l.rates, vec![1000.0, 2000.5]);
        assert_eq!(l.pause, Duration::from_secs(3));
        assert!(l.svg.is_none());
        let cli = BenchCli::try_parse_from([
            "chatgate-bench",
            "prepare",
            "--conversations",
            "2",
            "--members",
            "3",
            "--out",
            "p.json",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, BenchCommand::Prepare(ref p) if p.ttl == Duration::from_secs(86400))
        );
    }
}
