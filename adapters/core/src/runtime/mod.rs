//! The adapters' runtime: [`listen`] (the accept loop with a connection limit, handshake
//! places, and the count shutdown waits on), [`tls`] (rustls from PEM files), [`tenancy`]
//! (each connection moved to its tenant's service once its user is known), and below, the
//! background work.
//!
//! The background work of an adapter process, owned: every task that outlives a request —
//! competing consumers, the adapter lease, the wills and takeover followers, periodic upkeep —
//! is spawned through one [`Background`] and watches its cancellation token.
//!
//! Shutdown order (`wharf/src/tenants.rs` `Tenants::shutdown`):
//! 1. stop accepting (the listeners' shutdown future);
//! 2. tell the clients and end their connections (MQTT 5 DISCONNECT 0x8B, AMQP close), each
//!    connection saving its session, settling or publishing its will;
//! 3. [`Background::shutdown`]: cancel; each task does its last step — a competing consumer
//!    commits its acknowledgements and releases its blocks (other adapters take them at once,
//!    not after the lease expires), the adapter lease is released (survivors publish any will
//!    still registered, delayed ones included), followers stop — and the process waits for
//!    them, up to a grace period;
//! 4. exit.

pub mod listen;
pub mod tenancy;
pub mod tls;

pub use tenancy::{Router, Routing, Tenancy};

use std::{future::Future, sync::Arc, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// See the module docs. Clones share the token and the tasks.
#[derive(Clone, Debug, Default)]
pub struct Background {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Background {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawn a task that ends, after its last step, once [`Background::cancelled`] resolves
    /// (or, for a task that belongs to a connection, when its connection ends it: connections
    /// end before the background is cancelled). The handle is for an owner that waits for
    /// the task or aborts it; dropping it detaches nothing (the tracker still waits).
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Run the job `name` every `period` for as long as `owner` lives (the task holds it
    /// weakly) and the process is not shutting down; each run is in a `job` tracing span
    /// with its name.
    pub fn periodic<T, F, Fut>(&self, name: &'static str, period: Duration, owner: &Arc<T>, job: F)
    where
        T: Send + Sync + 'static,
        F: Fn(Arc<T>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        use tracing::Instrument;
        let weak = Arc::downgrade(owner);
        let cancelled = self.cancelled();
        self.spawn(async move {
            tokio::pin!(cancelled);
            loop {
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    () = &mut cancelled => return,
                }
                let Some(owner) = weak.upgrade() else { return };
                job(owner)
                    .instrument(tracing::debug_span!("job", name))
                    .await;
            }
        });
    }

    /// Resolves when the process shuts down (owned: a task keeps it across its loop).
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }

    /// Cancel every task and wait up to `grace` for them to finish. `false`: some had not.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        let done = tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok();
        if !done {
            tracing::warn!(
                left = self.tracker.len(),
                "background tasks still running at the end of the shutdown grace period"
            );
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    #[tokio::test]
    async fn periodic_jobs_run_while_their_owner_lives_and_stop_at_shutdown() {
        use std::sync::atomic::AtomicUsize;
        let bg = Background::new();
        let owner = Arc::new(AtomicUsize::new(0));
        bg.periodic("count", Duration::from_millis(5), &owner, |o| async move {
            o.fetch_add(1, Ordering::SeqCst);
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(owner.load(Ordering::SeqCst) >= 3, "it ran every period");
        // Shutdown ends it at once (not after a period).
        assert!(bg.shutdown(Duration::from_secs(1)).await);
        let after = owner.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(owner.load(Ordering::SeqCst), after, "no run after shutdown");
        // A job whose owner is gone ends by itself.
        let bg = Background::new();
        let gone = Arc::new(AtomicUsize::new(0));
        bg.periodic("gone", Duration::from_millis(5), &gone, |_| async {});
        drop(gone);
        tokio::time::sleep(Duration::from_millis(30)).await;
        bg.tracker.close();
        assert!(bg.tracker.is_empty(), "the job ended with its owner");
    }

    #[tokio::test]
    async fn shutdown_waits_for_the_last_step() {
        let bg = Background::new();
        let last_step = Arc::new(AtomicBool::new(false));
        let (b, done) = (bg.clone(), last_step.clone());
        bg.spawn(async move {
            b.cancelled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            done.store(true, Ordering::SeqCst);
        });
        assert!(bg.shutdown(Duration::from_secs(5)).await);
        assert!(last_step.load(Ordering::SeqCst));
        // A task that ignores the token is waited for only up to the grace period.
        let stuck = Background::new();
        stuck.spawn(std::future::pending());
        assert!(!stuck.shutdown(Duration::from_millis(20)).await);
    }
}
