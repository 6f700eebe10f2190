//! Routing connections to their tenant's service: a process's listeners accept the clients
//! of every tenant, and each connection moves to its tenant's service as soon as its user is
//! known (MQTT CONNECT, AMQP SASL), before it touches the store.

use std::fmt;

/// A tenant's service being found: boxed, so that routers of any kind fit one type.
pub type Routing<S> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<std::sync::Arc<S>, String>> + Send>>;

/// Finds the service of a tenant (starting it on first use). A process's listeners accept the
/// clients of every tenant; each connection moves to its tenant's service as soon as its user
/// is known (MQTT CONNECT, AMQP SASL), before it touches the store.
pub struct Router<S>(std::sync::Arc<Find<S>>);

/// What a [`Router`] calls.
type Find<S> = dyn Fn(&str) -> Routing<S> + Send + Sync;

impl<S> Clone for Router<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<S> fmt::Debug for Router<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Router")
    }
}

impl<S> Router<S> {
    pub fn new(find: impl Fn(&str) -> Routing<S> + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(find))
    }

    /// The service of `tenant`.
    pub async fn route(&self, tenant: &str) -> Result<std::sync::Arc<S>, String> {
        (self.0)(tenant).await
    }
}

/// A service's place among tenants: the tenant it serves, and (for the services that accept
/// connections) where other tenants' clients go.
pub struct Tenancy<S> {
    own: String,
    router: std::sync::OnceLock<Router<S>>,
}

impl<S> fmt::Debug for Tenancy<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenancy")
            .field("own", &self.own)
            .field("routes", &self.router.get().is_some())
            .finish()
    }
}

impl<S> Tenancy<S> {
    pub fn new(own: &str) -> Self {
        Self {
            own: own.to_string(),
            router: std::sync::OnceLock::new(),
        }
    }

    /// The tenant this service serves.
    pub fn own(&self) -> &str {
        &self.own
    }

    /// Hand clients of other tenants to the services `router` finds (set once, before
    /// serving; without it they are refused).
    pub fn route(&self, router: Router<S>) {
        let _ = self.router.set(router);
    }

    /// The service for a client of `tenant`: `this` (the service of [`Tenancy::own`]), or the
    /// one the router finds.
    pub async fn service(
        &self,
        this: &std::sync::Arc<S>,
        tenant: &str,
    ) -> Result<std::sync::Arc<S>, String> {
        if tenant == self.own {
            return Ok(this.clone());
        }
        match self.router.get() {
            Some(router) => router.route(tenant).await,
            None => Err(format!("tenant {tenant:?} is not served by this adapter")),
        }
    }
}
