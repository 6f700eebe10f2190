//! # wharf
//!
//! The `wharf` command: run Wharf (`wharf up`) and look inside a store (`wharf streams`,
//! `wharf dump`, `wharf store check`), append and consume from the command line.
//!
//! `wharf up` and `wharf adapter` serve the MQTT adapter (`adapters/mqtt`) and the AMQP 1.0
//! adapter (`adapters/amqp`) for every tenant of their users file ([`tenants`]); the other
//! commands work on one tenant's log (`--tenant`, the default tenant's otherwise).

mod address;
mod housekeeper;
mod housekeeping;
mod inspect;
mod listeners;
mod management;
mod produce;
mod resource_cmds;
mod settings;
mod tenants;
mod users;

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use wharf_log::{Log, Store, SystemClock};
use wharf_log_format::catalog::DEFAULT_TENANT;

use crate::settings::Settings;

#[derive(Parser, Debug)]
#[command(
    name = "wharf",
    version,
    about = "Wharf: messaging on a log in object storage"
)]
struct Cli {
    /// Store URL: file://DIR, s3://bucket/prefix[?endpoint=URL], memory://
    #[arg(long, global = true, env = "WHARF_STORE")]
    store: Option<String>,
    /// Settings file (TOML).
    #[arg(long, global = true, env = "WHARF_CONFIG")]
    config: Option<PathBuf>,
    /// The tenant whose log a command works on (its streams, cursors and addresses live under
    /// `tenants/<name>/` in the store; the default tenant's at the root). Adapters serve every
    /// tenant of their users file and take no --tenant.
    #[arg(long, global = true, env = "WHARF_TENANT")]
    tenant: Option<String>,
    /// The management API that get, apply, describe and delete talk to (e.g.
    /// http://127.0.0.1:8080); without it they work on the store directly.
    #[arg(long, global = true, env = "WHARF_SERVER")]
    server: Option<String>,
    /// The admin token for --server.
    #[arg(long, global = true, env = "WHARF_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A user's NAME:PASSWORD for --server (a user with `manage` on its tenant's addresses).
    #[arg(long, global = true, env = "WHARF_CREDENTIALS", hide_env_values = true)]
    credentials: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run Wharf in one process on the embedded store (./wharf-data unless --store says
    /// otherwise): the MQTT and AMQP listeners, the management API, and housekeeping.
    Up {
        #[command(flatten)]
        listen: listeners::ListenerArgs,
    },
    /// Run one stateless adapter on a shared store: the listeners and the management API;
    /// one adapter of a deployment at a time also does the housekeeping. Several adapters may
    /// serve one store.
    Adapter {
        #[command(flatten)]
        listen: listeners::ListenerArgs,
    },
    /// Users for the adapters' credentials.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Address resources in the catalog.
    Address {
        #[command(subcommand)]
        command: AddressCommand,
    },
    /// List resources (addresses, plans, tenants, users) with their status, or show one.
    Get {
        /// addresses, plans, tenants or users.
        kind: String,
        name: Option<String>,
        #[arg(short, long, value_enum, default_value_t = resource_cmds::Output::Table)]
        output: resource_cmds::Output,
    },
    /// Create or replace the resources of a file (JSON, or YAML documents; `-` for standard
    /// input), of any kind.
    Apply {
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Show a resource, its status and, for an address, its stream, consumers and backlog.
    Describe { kind: String, name: String },
    /// Delete a resource.
    Delete { kind: String, name: String },
    /// The tenants that have a log in the store, one name per line.
    Tenants,
    /// Store operations.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// List streams with their offsets, sizes and segment counts.
    Streams {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print records of a stream as JSON lines.
    Dump(inspect::DumpArgs),
    /// Append records to a stream: one per line of standard input, or generated ones.
    Append(produce::AppendArgs),
    /// Read a stream through a durable cursor, printing and acknowledging each record.
    Consume(produce::ConsumeArgs),
    /// Show a cursor's acknowledgement state.
    Cursor { stream: String, name: String },
}

#[derive(Subcommand, Debug)]
enum AddressCommand {
    /// Create or replace the Address resources in a JSON file (an object or an array); each
    /// goes to the tenant its `metadata.tenant` names (else --tenant, else the default).
    Apply {
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Print every Address resource as a JSON line.
    List,
    /// Delete an Address resource.
    Delete { name: String },
    /// Print the JSON Schema of an Address resource.
    Schema,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Print an argon2 hash of the password read from standard input (its first line), for
    /// a users file entry.
    Hash,
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Check that the store honours create-only writes (put-if-absent).
    Check,
    /// Compact once: rewrite old small segments into fewer, per-stream ones.
    Compact {
        /// At most this many compaction segments.
        #[arg(long, default_value_t = 64)]
        max: usize,
    },
    /// Delete segments no stream needs (see gc_grace in log/README.md).
    Gc,
    /// Write segment N (an Arrow IPC file: `pyarrow.ipc.open_file`, DuckDB, Polars) to
    /// standard output, wherever the store keeps it (on the local filesystem, most segments
    /// are entries of the log's journal rather than files).
    Segment {
        /// The segment's number (`wharf streams` shows how many there are).
        seq: u64,
    },
}

/// jemalloc rather than glibc's malloc: under a publishing load glibc's per-thread arenas kept
/// 40–90 MB more resident than was allocated (adapters/README, memory).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wharf: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wharf: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A shutdown future for the main task, and a receiver that listeners wait on.
fn shutdown_watch() -> (
    impl std::future::Future<Output = ()>,
    tokio::sync::watch::Receiver<bool>,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let fut = async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    };
    (fut, rx)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what Kubernetes sends).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Open the store named on the command line, in the settings, or the default.
fn open_store(cli_store: Option<&str>, settings: &Settings) -> Result<Store> {
    let (url, source) = match (cli_store, settings.store.as_deref()) {
        (Some(url), _) => (url.to_string(), "--store (or WHARF_STORE)"),
        (None, Some(url)) => (url.to_string(), "store (settings file)"),
        (None, None) => {
            // ./wharf-data, as an absolute path: the default store.
            let cwd = std::env::current_dir().context("the working directory")?;
            (
                format!("file://{}", cwd.join("wharf-data").display()),
                "the default store",
            )
        }
    };
    Store::open(&url).with_context(|| format!("{source}: {url:?} cannot be used"))
}

async fn open_log(store: Store, settings: &Settings) -> Result<Log> {
    let url = store.url.clone();
    Log::open_with(store, settings.log.clone(), Arc::new(SystemClock))
        .await
        .with_context(|| format!("cannot open the log in {url}"))
}

/// Serve the listeners and the management API, and take the housekeeping role in turn, until
/// SIGINT or SIGTERM.
async fn serve(
    store: Store,
    settings: &Settings,
    listen: &listeners::ListenerArgs,
    tenant: &str,
    up: &str,
) -> Result<ExitCode> {
    store.verify_conditional_put().await?;
    let log = open_log(store, settings).await?;
    let (stop, stopped) = shutdown_watch();
    if let Some(file) = &listen.addresses {
        address::apply(&log, settings, file, tenant).await?;
    }
    let listening = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // User resources before the first client, so that their tenants are served from the start.
    let auth = listeners::auth(listen, settings)?;
    let mut follower = users::Follower::new(&log);
    follower
        .poll(&auth)
        .await
        .context("reading User and Tenant resources from the catalog")?;
    let (services, handles) =
        listeners::start(listen, settings, &log, Arc::new(auth), stopped.clone()).await?;
    for (name, _) in catalog_tenants(&log).await? {
        if let Err(e) = services.ensure(&name).await {
            tracing::warn!(tenant = name, error = %e, "cannot serve the tenant");
        }
    }
    follower.apply_limits(&services);
    let users = tokio::spawn(users::follow(follower, services.clone(), stopped.clone()));
    let catalogs = management::catalogs(&services).await;
    let api = management::start(
        listen,
        &services,
        catalogs.clone(),
        listening.clone(),
        stopped.clone(),
    )?;
    listening.store(true, std::sync::atomic::Ordering::Release);
    let housekeeper = housekeeper::Housekeeper {
        tenants: services.clone(),
        catalogs,
        settings: settings.clone(),
        every: listen.housekeeping,
        implicit_tenants: services.auth().file_tenants().into_iter().collect(),
    };
    let housekeeper = tokio::spawn(housekeeper.run(stopped));
    tracing::info!(store = %log.store().url, "{up}");
    stop.await;
    for h in handles {
        let _ = h.await;
    }
    services.shutdown(Duration::from_secs(5)).await;
    users.abort();
    // The housekeeping lease is released, so that another process takes the role at once.
    let _ = tokio::time::timeout(Duration::from_secs(5), housekeeper).await;
    if let Some(api) = api {
        let _ = tokio::time::timeout(Duration::from_secs(5), api).await;
    }
    tracing::info!("shutting down");
    Ok(ExitCode::SUCCESS)
}

/// The tenants declared by Tenant resources.
async fn catalog_tenants(root: &Log) -> Result<Vec<(String, serde_json::Value)>> {
    Ok(root
        .catalog()
        .list("Tenant")
        .await?
        .into_iter()
        .map(|e| (e.name, e.body))
        .collect())
}

/// get / apply / describe / delete against `server`; `None` for other commands.
async fn resource_command(cli: &Cli, server: &str) -> Result<Option<ExitCode>> {
    if !matches!(
        cli.command,
        Command::Get { .. }
            | Command::Apply { .. }
            | Command::Describe { .. }
            | Command::Delete { .. }
    ) {
        return Ok(None);
    }
    let tenant = cli.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
    let target = resource_cmds::Target::api(
        server,
        cli.token.as_deref(),
        cli.credentials.as_deref(),
        tenant,
    )?;
    resources(&cli.command, &target).await.map(Some)
}

async fn resources(command: &Command, target: &resource_cmds::Target) -> Result<ExitCode> {
    match command {
        Command::Get { kind, name, output } => {
            let kind = resource_cmds::kind_arg(kind)?;
            resource_cmds::get(target, kind, name.as_deref(), *output).await?;
        }
        Command::Apply { file } => resource_cmds::apply(target, file).await?,
        Command::Describe { kind, name } => {
            resource_cmds::describe(target, resource_cmds::kind_arg(kind)?, name).await?;
        }
        Command::Delete { kind, name } => {
            let kind = resource_cmds::kind_arg(kind)?;
            if !target.delete(kind, name).await? {
                anyhow::bail!("{} {name:?} does not exist", kind.to_ascii_lowercase());
            }
            println!("{}/{name} deleted", kind.to_ascii_lowercase());
        }
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let settings = Settings::load(cli.config.as_deref())?;
    if let Command::User {
        command: UserCommand::Hash,
    } = &cli.command
    {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let password = line.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            anyhow::bail!("no password on standard input");
        }
        println!(
            "{}",
            wharf_auth::hash_password(password.as_bytes()).map_err(anyhow::Error::msg)?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(server) = &cli.server
        && let Some(code) = resource_command(&cli, server).await?
    {
        return Ok(code);
    }
    let root = open_store(cli.store.as_deref(), &settings)?;
    let tenant = cli.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
    if cli.tenant.is_some() && matches!(cli.command, Command::Up { .. } | Command::Adapter { .. }) {
        anyhow::bail!(
            "--tenant: adapters serve every tenant of their users file (the `tenant` of each \
             user), not one"
        );
    }
    // The log a command works on: the tenant's.
    let store = root.tenant(tenant).context("--tenant")?;
    match cli.command {
        Command::Store { command } => {
            store.verify_conditional_put().await?;
            match command {
                StoreCommand::Check => {
                    println!("{}: create-only writes are honoured", store.url);
                }
                StoreCommand::Compact { max } => {
                    let log = open_log(store, &settings).await?;
                    println!("{:?}", log.compact(max).await?);
                }
                StoreCommand::Gc => {
                    let log = open_log(store, &settings).await?;
                    println!("{:?}", log.collect_garbage().await?);
                }
                StoreCommand::Segment { seq } => {
                    let log = open_log(store, &settings).await?;
                    let Some(bytes) = log.segment_bytes(seq).await? else {
                        eprintln!("wharf: no segment {seq} in {}", log.store().url);
                        return Ok(ExitCode::FAILURE);
                    };
                    use std::io::Write;
                    std::io::stdout().lock().write_all(&bytes)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::User { .. } => Ok(ExitCode::SUCCESS), // handled above
        Command::Adapter { listen } => {
            serve(store, &settings, &listen, tenant, "wharf adapter is up").await
        }
        Command::Up { listen } => serve(store, &settings, &listen, tenant, "wharf is up").await,
        Command::Get { .. }
        | Command::Apply { .. }
        | Command::Describe { .. }
        | Command::Delete { .. } => {
            if matches!(cli.command, Command::Apply { .. } | Command::Delete { .. }) {
                root.verify_conditional_put().await?;
            }
            let log = open_log(root, &settings).await?;
            let target = resource_cmds::Target::store(log, tenant);
            resources(&cli.command, &target).await
        }
        Command::Tenants => {
            println!("{DEFAULT_TENANT}");
            for name in root.tenants().await? {
                println!("{name}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Address { command } => {
            if let AddressCommand::Schema = command {
                let schema = wharf_resources::Address::json_schema();
                println!("{}", serde_json::to_string_pretty(&schema)?);
                return Ok(ExitCode::SUCCESS);
            }
            if !matches!(command, AddressCommand::List) {
                store.verify_conditional_put().await?;
            }
            if let AddressCommand::Apply { file } = &command {
                // Resources name their tenant: applied from the root.
                let log = open_log(root, &settings).await?;
                address::apply(&log, &settings, file, tenant).await?;
                return Ok(ExitCode::SUCCESS);
            }
            let log = open_log(store, &settings).await?;
            match command {
                AddressCommand::Apply { .. } | AddressCommand::Schema => {} // above
                AddressCommand::List => address::list(&log).await?,
                AddressCommand::Delete { name } => address::delete(&log, &name).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Streams { json } => {
            let log = open_log(store, &settings).await?;
            inspect::streams(&log, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Dump(args) => {
            let log = open_log(store, &settings).await?;
            inspect::dump(&log, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cursor { stream, name } => {
            let log = open_log(store, &settings).await?;
            inspect::cursor(&log, &stream, &name).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Append(args) => {
            store.verify_conditional_put().await?;
            let log = open_log(store, &settings).await?;
            produce::append(&log, args).await
        }
        Command::Consume(args) => {
            store.verify_conditional_put().await?;
            let log = open_log(store, &settings).await?;
            produce::consume(&log, args).await
        }
    }
}
