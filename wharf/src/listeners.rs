//! The adapter listeners a process serves, from flags and settings: MQTT over TCP, TLS and
//! WebSocket, AMQP 1.0 over TCP and TLS, with one credentials rule for all of them.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use wharf_auth::Auth;
use wharf_log::Log;
use wharf_mqtt::Transport;

use crate::{settings::Settings, tenants::Tenants};

/// Listener flags shared by `wharf up` and `wharf adapter`.
#[derive(Args, Debug, Clone)]
pub struct ListenerArgs {
    /// MQTT over TCP ("off" to disable).
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: String,
    /// AMQP 1.0 over TCP ("off" to disable).
    #[arg(long, default_value = "127.0.0.1:5672")]
    pub amqp: String,
    /// AMQP 1.0 over TLS, e.g. 0.0.0.0:5671 (needs --tls-cert and --tls-key).
    #[arg(long)]
    pub amqps: Option<String>,
    /// Address resources (JSON, one object or an array, as for `wharf address apply`) put in
    /// the catalog at start-up.
    #[arg(long)]
    pub addresses: Option<PathBuf>,
    /// MQTT over TLS, e.g. 0.0.0.0:8883 (needs --tls-cert and --tls-key).
    #[arg(long)]
    pub mqtts: Option<String>,
    /// MQTT over WebSocket (path /mqtt), e.g. 127.0.0.1:8081.
    #[arg(long)]
    pub mqtt_ws: Option<String>,
    /// MQTT over WebSocket with TLS (path /mqtt), e.g. 0.0.0.0:8443.
    #[arg(long)]
    pub mqtt_wss: Option<String>,
    /// TLS certificate chain (PEM) for the TLS listeners.
    #[arg(long, env = "WHARF_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for the TLS listeners.
    #[arg(long, env = "WHARF_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Users file: TOML `[[user]]` entries with `name`, an argon2 `password_hash` (make one
    /// with `wharf user hash`) and optionally `tenant` (the default tenant if absent; every
    /// tenant named is served). Overrides `auth.users_file` in the settings.
    #[arg(long, env = "WHARF_USERS")]
    pub users: Option<PathBuf>,
    /// The management API, /metrics, /healthz and /readyz over HTTP ("off" to disable).
    #[arg(long, env = "WHARF_HTTP", default_value = "127.0.0.1:8080")]
    pub http: String,
    /// A token that makes a caller of the management API an admin (`Authorization: Bearer
    /// TOKEN`). Without one, callers without credentials are admins where anonymous clients
    /// are let in (by default: only on a loopback --http).
    #[arg(long, env = "WHARF_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// How often retention, compaction and garbage collection run (by whichever process of
    /// the deployment holds the housekeeping role).
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    pub housekeeping: std::time::Duration,
    /// Let other processes on this machine listen on the same ports (SO_REUSEPORT): several
    /// adapters on one store then share the clients.
    #[arg(long)]
    pub reuse_port: bool,
}

/// The anonymous rule and the users file's users (User resources are added by
/// `crate::users`).
pub fn auth(args: &ListenerArgs, settings: &Settings) -> Result<Auth> {
    let mut auth = Auth::new(settings.auth.anonymous);
    if let Some(path) = args.users.as_ref().or(settings.auth.users_file.as_ref()) {
        auth.load_users(path).map_err(anyhow::Error::msg)?;
        tracing::info!(users = auth.user_count(), file = %path.display(), "users loaded");
    }
    Ok(auth)
}

/// Bind `addr`, with SO_REUSEPORT if asked; failing start-up with the address if it cannot.
fn bind(what: &str, addr: &str, reuse_port: bool) -> Result<TcpListener> {
    let sa: SocketAddr = addr
        .parse()
        .with_context(|| format!("--{what}: {addr:?} is not an address like 127.0.0.1:1883"))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(sa),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket
        .bind(&sa.into())
        .with_context(|| format!("cannot listen for {what} on {addr}"))?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into())?)
}

/// Start every listener asked for; they stop when `stopped` turns true. Connections are
/// accepted by the default tenant's services and handed to their user's tenant.
pub async fn start(
    args: &ListenerArgs,
    settings: &Settings,
    log: &Log,
    auth: Arc<Auth>,
    stopped: watch::Receiver<bool>,
) -> Result<(Arc<Tenants>, Vec<JoinHandle<()>>)> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tokio_rustls::TlsAcceptor::from(
            wharf_adapter_core::runtime::tls::server_config(cert, key, &[])
                .map_err(anyhow::Error::msg)?,
        )),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    let tenants = Tenants::start(log, settings, auth).await?;
    let (mqtt, amqp) = (&tenants.default().mqtt, &tenants.default().amqp);
    let mut wanted = Vec::new();
    if args.mqtt != "off" {
        wanted.push(("mqtt", args.mqtt.clone(), Transport::Tcp));
    }
    let need_tls = |flag: &str| {
        tls.clone()
            .with_context(|| format!("--{flag} needs --tls-cert and --tls-key"))
    };
    if let Some(a) = &args.mqtts {
        wanted.push(("mqtts", a.clone(), Transport::Tls(need_tls("mqtts")?)));
    }
    if let Some(a) = &args.mqtt_ws {
        wanted.push(("mqtt-ws", a.clone(), Transport::WebSocket(None)));
    }
    if let Some(a) = &args.mqtt_wss {
        wanted.push((
            "mqtt-wss",
            a.clone(),
            Transport::WebSocket(Some(need_tls("mqtt-wss")?)),
        ));
    }
    let mut handles = Vec::new();
    let mut amqp_wanted = Vec::new();
    if args.amqp != "off" {
        amqp_wanted.push(("amqp", args.amqp.clone(), None));
    }
    if let Some(a) = &args.amqps {
        amqp_wanted.push(("amqps", a.clone(), Some(need_tls("amqps")?)));
    }
    for (what, addr, tls) in amqp_wanted {
        let listener = bind(what, &addr, args.reuse_port)?;
        tracing::info!(listener = what, %addr, "listening");
        let (amqp, mut stopped) = (amqp.clone(), stopped.clone());
        handles.push(tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            amqp.serve(listener, tls, stop).await;
        }));
    }
    for (what, addr, transport) in wanted {
        let listener = bind(what, &addr, args.reuse_port)?;
        tracing::info!(listener = what, %addr, "listening");
        let (mqtt, mut stopped) = (mqtt.clone(), stopped.clone());
        handles.push(tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            mqtt.serve(listener, transport, stop).await;
        }));
    }
    Ok((tenants, handles))
}
