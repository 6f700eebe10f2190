//! What every adapter listener does the same way: accept connections up to a limit until
//! shut down, and count the connections being served so that shutdown can wait for them.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};

/// Accept connections on `listener` until `shutdown` resolves, at most `max` served at once
/// (more wait in the accept queue). `serve(socket, peer, local, permit)` is called for each;
/// it should spawn the connection's task and hold `permit` until the connection ends.
pub async fn accept_connections(
    listener: TcpListener,
    max: usize,
    shutdown: impl std::future::Future<Output = ()>,
    mut serve: impl FnMut(TcpStream, SocketAddr, SocketAddr, OwnedSemaphorePermit),
) {
    let permits = Arc::new(Semaphore::new(max));
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "listener has no address");
            return;
        }
    };
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (socket, peer) = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        serve(socket, peer, local, permit);
    }
}

/// The connections a service is serving (by all its listeners).
#[derive(Clone, Debug, Default)]
pub struct Active(Arc<AtomicUsize>);

/// One connection counted as active while this lives.
#[derive(Debug)]
pub struct ActiveGuard(Arc<AtomicUsize>);

impl Active {
    /// Count a connection until the guard is dropped (also if its task panics).
    pub fn enter(&self) -> ActiveGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Tell every connection to end (`stopping` turns true) and wait until none is served,
    /// or `grace` passed; a warning naming `service` says how many were left.
    pub async fn stop(
        &self,
        stopping: &tokio::sync::watch::Sender<bool>,
        grace: Duration,
        service: &str,
    ) {
        stopping.send_replace(true);
        let deadline = tokio::time::Instant::now() + grace;
        while self.count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.count();
        if left > 0 {
            tracing::warn!(
                left,
                service,
                "connections still open after the shutdown grace period"
            );
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
