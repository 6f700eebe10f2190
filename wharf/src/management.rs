//! The management API of a process (`--http`): the resources of its store, its metrics and
//! its health (`wharf_api`).

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
};

use anyhow::{Context, Result};
use tokio::{sync::watch, task::JoinHandle};
use wharf_resources::Catalogs;

use crate::{listeners::ListenerArgs, tenants::Tenants};

/// The metrics of this process: the store's requests, the adapters' connections and
/// messages, and the streams of the tenants it serves.
fn registry(tenants: &Arc<Tenants>) -> prometheus_client::registry::Registry {
    let mut registry = prometheus_client::registry::Registry::default();
    wharf_log::metrics::register(&mut registry);
    let weak = Arc::downgrade(tenants);
    wharf_adapter_core::metrics::register(&mut registry, move || {
        weak.upgrade()
            .map(|t| {
                t.list()
                    .into_iter()
                    .map(|(name, t)| (name, t.log.clone()))
                    .collect()
            })
            .unwrap_or_default()
    });
    registry
}

/// Catalogs over the store, using the logs the process has open.
pub async fn catalogs(tenants: &Tenants) -> Catalogs {
    let catalogs = Catalogs::new(tenants.default().log.clone());
    for (name, t) in tenants.list() {
        catalogs.with_log(&name, t.log.clone()).await;
    }
    catalogs
}

/// Serve the API on `--http` unless it is "off"; `listening` turns true once the process's
/// listeners are up. The server stops when `stopped` turns true.
pub fn start(
    args: &ListenerArgs,
    tenants: &Arc<Tenants>,
    catalogs: Catalogs,
    listening: Arc<AtomicBool>,
    mut stopped: watch::Receiver<bool>,
) -> Result<Option<JoinHandle<()>>> {
    if args.http == "off" {
        return Ok(None);
    }
    let addr: SocketAddr = args.http.parse().with_context(|| {
        format!(
            "--http: {:?} is not an address like 127.0.0.1:8080",
            args.http
        )
    })?;
    let std_listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen for the management API (--http) on {addr}"))?;
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let api = wharf_api::Api {
        catalogs,
        access: wharf_api::access::Access {
            admin_token: args.admin_token.clone().filter(|t| !t.is_empty()),
            auth: tenants.auth(),
        },
        metrics: Arc::new(registry(tenants)),
        listening,
        implicit_tenants: Arc::new(tenants.auth().file_tenants()),
        local: addr,
    };
    tracing::info!(listener = "http", %addr, "listening (management API, /metrics, /healthz)");
    Ok(Some(tokio::spawn(async move {
        let stop = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = wharf_api::serve(listener, api, stop).await {
            tracing::warn!(error = %e, "the management API stopped");
        }
    })))
}
