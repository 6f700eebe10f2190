//! The tenants a process serves. Each tenant is a whole log under its own prefix of the store
//! (`tenants/<name>/`; the default tenant's is the store root) with its own MQTT and AMQP
//! services: its own default topic address, addresses, sessions, retained messages and wills.
//! Listeners accept every client; a connection moves to its user's tenant once the user is
//! known (`wharf_adapter_core::runtime::Router`).
//!
//! A process serves the default tenant and every tenant its users file names, all started at
//! start-up: so any adapter publishes the wills of a dead adapter's clients, sweeps expired
//! sessions and compacts retained messages in every tenant, whether or not one of the
//! tenant's clients is connected to it.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use wharf_adapter_core::runtime::Router;
use wharf_adapter_core::{bridge::Bridge, record::Protocol, runtime::Background};
use wharf_amqp::Amqp;
use wharf_auth::Auth;
use wharf_log::{Log, Store};
use wharf_log_format::catalog::DEFAULT_TENANT;
use wharf_mqtt::Mqtt;

use crate::settings::Settings;

/// How often the catalog is looked at for changed topic claims (one LIST per tenant).
const CLAIMS_REFRESH: Duration = Duration::from_secs(2);

/// Cross-protocol delivery: each adapter maps the other's records through their decoders
/// (MQTT subscribers get what AMQP clients send to `/topic/...`, AMQP receivers what MQTT
/// clients publish).
fn bridge() -> Bridge {
    Bridge::default()
        .with(Protocol::Mqtt, wharf_mqtt::message::envelope)
        .with(Protocol::Amqp, wharf_amqp::bridge::envelope)
}

/// One tenant's log and services.
#[derive(Debug)]
pub struct Tenant {
    pub log: Log,
    /// Its limits, as its services enforce them (set by `crate::users`).
    pub quota: Arc<wharf_adapter_core::quota::Quota>,
    pub mqtt: Arc<Mqtt>,
    pub amqp: Arc<Amqp>,
}

impl Tenant {
    /// Start the services of `name` on its `log`.
    async fn start(
        name: &str,
        log: Log,
        settings: &Settings,
        auth: Arc<Auth>,
        background: &Background,
    ) -> Result<Self> {
        let quota = Arc::new(wharf_adapter_core::quota::Quota::default());
        let mut mqtt_settings = settings.mqtt.to_mqtt();
        mqtt_settings.session.quota = quota.clone();
        mqtt_settings.bridge = bridge();
        mqtt_settings.background = background.clone();
        let mut amqp_settings = settings.amqp.to_amqp();
        amqp_settings.quota = quota.clone();
        amqp_settings.bridge = bridge();
        amqp_settings.background = background.clone();
        let mqtt = Mqtt::new(name, log.clone(), mqtt_settings, auth.clone());
        // Addresses claiming MQTT topics, before the first client: every adapter routes alike.
        mqtt.follow_claims(CLAIMS_REFRESH).await.with_context(|| {
            format!("reading the MQTT topic claims of tenant {name:?} from the catalog")
        })?;
        let amqp = Amqp::new(
            name,
            log.clone(),
            amqp_settings,
            auth,
            Some(mqtt.wills()),
            mqtt.claims(),
        );
        Ok(Self {
            log,
            quota,
            mqtt,
            amqp,
        })
    }
}

/// Open the log of tenant `name` in the store whose root is `root` (its URL names the tenant).
pub async fn open_log(root: &Store, name: &str, settings: &Settings) -> Result<Log> {
    crate::open_log(root.tenant(name)?, settings).await
}

/// Every tenant a process serves, by name: the default one, the users file's, and those with
/// a Tenant resource — started when the resource appears ([`Tenants::ensure`]) and stopped
/// when it is deleted ([`Tenants::remove`]), without a restart.
#[derive(Debug)]
pub struct Tenants {
    served: std::sync::RwLock<BTreeMap<String, Arc<Tenant>>>,
    /// The default tenant's (always served; its services accept every connection).
    default: Arc<Tenant>,
    /// Who may connect (the users file and User resources).
    auth: Arc<Auth>,
    settings: Settings,
    /// Tenants being started, one at a time.
    starting: tokio::sync::Mutex<()>,
    /// Every tenant's background tasks, shut down after the connections.
    background: Background,
}

/// A router to one kind of service (`pick`) of the tenants served. It holds them weakly: the
/// default tenant's services, which route, are among them.
fn router<S: Send + Sync + 'static>(
    tenants: &Arc<Tenants>,
    pick: fn(&Tenant) -> &Arc<S>,
) -> Router<S> {
    let weak = Arc::downgrade(tenants);
    Router::new(move |name| {
        let found = weak
            .upgrade()
            .and_then(|t| t.get(name).map(|t| pick(&t).clone()));
        let name = name.to_string();
        Box::pin(async move { found.ok_or_else(|| format!("tenant {name:?} is not served")) })
    })
}

impl Tenants {
    /// Start the default tenant on `log` (the store root's) and every tenant `auth`'s users are
    /// in; the default tenant's services hand other tenants' clients over.
    pub async fn start(log: &Log, settings: &Settings, auth: Arc<Auth>) -> Result<Arc<Self>> {
        let mut served = BTreeMap::new();
        let background = Background::new();
        let mut names = auth.file_tenants();
        names.push(DEFAULT_TENANT.to_string());
        names.sort();
        names.dedup();
        for name in names {
            let tenant_log = if name == DEFAULT_TENANT {
                log.clone()
            } else {
                open_log(log.store(), &name, settings).await?
            };
            let tenant =
                Tenant::start(&name, tenant_log, settings, auth.clone(), &background).await?;
            served.insert(name, Arc::new(tenant));
        }
        if served.len() > 1 {
            tracing::info!(
                tenants = ?served.keys().collect::<Vec<_>>(),
                "serving several tenants"
            );
        }
        let Some(default) = served.get(DEFAULT_TENANT).cloned() else {
            anyhow::bail!("the default tenant was not started");
        };
        let tenants = Arc::new(Self {
            served: std::sync::RwLock::new(served),
            default,
            auth,
            settings: settings.clone(),
            starting: tokio::sync::Mutex::new(()),
            background,
        });
        let default = tenants.default();
        default.mqtt.route_tenants(router(&tenants, |t| &t.mqtt));
        default.amqp.route_tenants(router(&tenants, |t| &t.amqp));
        Ok(tenants)
    }

    /// Serve tenant `name` from now on, if it is not served yet (a user or a Tenant resource
    /// named it after start-up).
    pub async fn ensure(&self, name: &str) -> Result<()> {
        let _one_at_a_time = self.starting.lock().await;
        if self.get(name).is_some() {
            return Ok(());
        }
        let log = open_log(self.default.log.store(), name, &self.settings).await?;
        let tenant = Tenant::start(
            name,
            log,
            &self.settings,
            self.auth.clone(),
            &self.background,
        )
        .await?;
        tracing::info!(tenant = name, "serving a new tenant");
        self.served
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Arc::new(tenant));
        Ok(())
    }

    /// Stop serving tenant `name` (its Tenant resource was deleted): its connections end
    /// with a reason (MQTT 5 DISCONNECT 0x87, AMQP `amqp:connection:forced`), and new ones are
    /// refused. The default tenant and the users file's tenants stay. Its log stays in the
    /// store. Its background followers (wills, takeover) run until the process stops.
    pub fn remove(&self, name: &str) -> bool {
        if name == DEFAULT_TENANT || self.auth.file_tenants().iter().any(|t| t == name) {
            return false;
        }
        let removed = self
            .served
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        match removed {
            Some(t) => {
                tracing::info!(tenant = name, "tenant deleted: closing its connections");
                t.mqtt.tenant_deleted();
                t.amqp.tenant_deleted();
                true
            }
            None => false,
        }
    }

    pub fn auth(&self) -> Arc<Auth> {
        self.auth.clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Tenant>> {
        self.served
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The default tenant (always served): its services accept every connection.
    pub fn default(&self) -> &Tenant {
        &self.default
    }

    /// The tenants served now, by name.
    pub fn list(&self) -> Vec<(String, Arc<Tenant>)> {
        self.served
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect()
    }

    /// Shut down in order (see `wharf_adapter_core::runtime`): the listeners have stopped
    /// accepting; end every connection (all are counted by the default tenant's services,
    /// which accepted them) and wait up to `grace`; then cancel the background tasks of every
    /// tenant and wait up to `grace` for their last steps (commits, released leases).
    pub async fn shutdown(&self, grace: Duration) {
        let d = self.default();
        tokio::join!(d.mqtt.shutdown(grace), d.amqp.shutdown(grace));
        self.background.shutdown(grace).await;
    }
}
