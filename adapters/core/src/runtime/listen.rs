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
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
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

/// Connections that have not finished their handshake yet (MQTT: CONNECT with accepted
/// credentials; AMQP: SASL and open), counted against a limit of their own, so that a flood
/// of connections that never get there cannot take the places of real clients. A connection
/// that enters when the limit is reached evicts the one that has waited longest (a real
/// client gets through its handshake in a round trip; what idles has no business holding a
/// place) — unless its credentials are being checked: those are busy, not idle, and if every
/// place is busy the newcomer is refused.
#[derive(Clone, Debug)]
pub struct Handshakes(Arc<std::sync::Mutex<HandshakeState>>);

#[derive(Debug)]
struct HandshakeState {
    limit: usize,
    next: u64,
    /// Waiting for the client, oldest first: told to end when evicted.
    idle: std::collections::BTreeMap<u64, tokio::sync::oneshot::Sender<()>>,
    /// Having their credentials checked.
    busy: usize,
}

/// One connection's place among [`Handshakes`]; dropping it (the handshake is done, or the
/// connection is) gives the place up.
#[derive(Debug)]
pub struct Handshake {
    gate: Handshakes,
    id: u64,
    busy: bool,
    evicted: tokio::sync::oneshot::Receiver<()>,
}

impl Handshakes {
    /// At most `limit` connections in their handshake at once.
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(std::sync::Mutex::new(HandshakeState {
            limit: limit.max(1),
            next: 0,
            idle: Default::default(),
            busy: 0,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HandshakeState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for a new connection (evicting the longest idle one if none is free);
    /// `None`: every place is busy checking credentials — close the connection.
    pub fn enter(&self) -> Option<Handshake> {
        let mut s = self.state();
        if s.idle.len() + s.busy >= s.limit {
            let (_, evict) = s.idle.pop_first()?;
            let _ = evict.send(());
        }
        let id = s.next;
        s.next += 1;
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.idle.insert(id, tx);
        Some(Handshake {
            gate: self.clone(),
            id,
            busy: false,
            evicted: rx,
        })
    }
}

impl Handshake {
    /// The connection's credentials are being checked: it may not be evicted meanwhile.
    pub fn checking(&mut self) {
        if !self.busy {
            let mut s = self.gate.state();
            if s.idle.remove(&self.id).is_some() {
                s.busy += 1;
                self.busy = true;
            }
        }
    }

    /// Run one step of the handshake a transport does before the protocol's (a TLS
    /// handshake, a WebSocket upgrade) until `deadline`, and only while no newer connection
    /// needs this place; `Err` says which ended it.
    pub async fn bounded<T>(
        &mut self,
        deadline: tokio::time::Instant,
        step: impl std::future::Future<Output = T>,
    ) -> Result<T, &'static str> {
        tokio::select! {
            done = tokio::time::timeout_at(deadline, step) => done.map_err(|_| "not done in time"),
            _ = self.evicted() => Err("closed to make room for newer connections"),
        }
    }

    /// Resolves when a newer connection took this one's place: end the connection.
    pub async fn evicted(&mut self) {
        if !self.busy && !self.evicted.is_terminated() && (&mut self.evicted).await.is_ok() {
            return;
        }
        // Busy, or told already: never (again).
        std::future::pending::<()>().await
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut s = self.gate.state();
        if self.busy {
            s.busy -= 1;
        } else {
            s.idle.remove(&self.id);
        }
    }
}

/// How long [`close_gracefully`] waits for the peer to close its side.
pub const LINGER: Duration = Duration::from_secs(2);

/// Close a connection the server ends (its last words — an MQTT DISCONNECT or CONNACK, an
/// AMQP close — already written) so that the peer can read them: shut the write side down
/// (FIN after the data), then read and discard whatever the peer still sends until it closes
/// or `linger` has passed. Closing a socket with unread input makes the kernel answer with
/// RST, and a peer's kernel that gets RST throws away data its application has not read yet
/// — the DISCONNECT among it.
pub async fn close_gracefully<S: AsyncRead + AsyncWrite + Unpin>(socket: &mut S, linger: Duration) {
    let _ = tokio::time::timeout(linger, async {
        let _ = socket.flush().await;
        let _ = socket.shutdown().await;
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
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
