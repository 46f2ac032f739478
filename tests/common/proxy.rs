//! A fault-injecting TCP proxy on loopback, in front of one etcd endpoint.
//! It forwards bytes both ways and, when told to, resets each connection
//! after a random lifetime (RST, as a load balancer or a dying member does),
//! delays every chunk, or blackholes: accepts and reads but forwards
//! nothing, so requests hang. It listens on 127.0.0.1 only, and stops by
//! itself after a fixed time so a stuck test cannot leave it running.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a proxy lives at most.
const LIFETIME: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Faults {
    /// Each connection lives a random time in this range, then is reset.
    reset_after: Mutex<Option<(Duration, Duration)>>,
    delay_ms: AtomicU64,
    blackhole: AtomicBool,
    resets: AtomicU64,
    accepted: AtomicU64,
    /// Bytes forwarded, both ways.
    bytes: AtomicU64,
    seed: AtomicU64,
}

impl Faults {
    /// A random lifetime in the configured range (xorshift: no dependency,
    /// and tests need spread, not quality).
    fn lifetime(&self) -> Option<Duration> {
        let (min, max) = (*self.reset_after.lock().unwrap_or_else(|e| e.into_inner()))?;
        let mut x = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let span = max.saturating_sub(min).as_millis().max(1) as u64;
        Some(min + Duration::from_millis(x % span))
    }
}

/// A running proxy; it stops when dropped.
pub struct Proxy {
    pub port: u16,
    faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `127.0.0.1:target_port`, forwarding faithfully
    /// until told otherwise.
    pub async fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy on loopback");
        let port = listener.local_addr().expect("proxy address").port();
        let faults = Arc::new(Faults {
            seed: AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64),
            ),
            ..Faults::default()
        });
        let deadline = Instant::now() + LIFETIME;
        let shared = faults.clone();
        let task = tokio::spawn(async move {
            let stop = tokio::time::sleep_until(deadline.into());
            tokio::pin!(stop);
            loop {
                let accepted = tokio::select! {
                    _ = &mut stop => return,
                    a = listener.accept() => a,
                };
                let Ok((client, _)) = accepted else { continue };
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                let faults = shared.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout_at(
                        deadline.into(),
                        serve(client, target_port, faults),
                    )
                    .await;
                });
            }
        });
        Proxy { port, faults, task }
    }

    /// The URL of the proxy for a scheme ("http" or "https").
    pub fn endpoint(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// From now on, new connections are reset after a random lifetime in
    /// `[min, max)`.
    pub fn reset_after(&self, min: Duration, max: Duration) {
        *self
            .faults
            .reset_after
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((min, max));
    }

    /// Delays every forwarded chunk by `delay`.
    pub fn delay(&self, delay: Duration) {
        self.faults
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Stops (or resumes) forwarding, on open connections and new ones.
    pub fn blackhole(&self, on: bool) {
        self.faults.blackhole.store(on, Ordering::Relaxed);
    }

    /// Connections reset so far.
    pub fn resets(&self) -> u64 {
        self.faults.resets.load(Ordering::Relaxed)
    }

    /// Bytes forwarded so far, both ways.
    pub fn bytes(&self) -> u64 {
        self.faults.bytes.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.faults.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards one connection until either side closes or its lifetime ends,
/// then resets both sides.
async fn serve(client: TcpStream, target_port: u16, faults: Arc<Faults>) {
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", target_port)).await else {
        let _ = client.set_zero_linger();
        return;
    };
    // With SO_LINGER 0, closing a socket sends RST instead of FIN: the end
    // of a connection's lifetime is a reset, as a failing network makes it.
    for s in [&client, &upstream] {
        let _ = s.set_nodelay(true);
        let _ = s.set_zero_linger();
    }
    let lifetime = faults.lifetime();
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let forward = async {
        tokio::select! {
            _ = pump(cr, uw, &faults) => {}
            _ = pump(ur, cw, &faults) => {}
        }
    };
    match lifetime {
        Some(life) => {
            tokio::select! {
                _ = forward => {}
                _ = tokio::time::sleep(life) => {
                    faults.resets.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        None => forward.await,
    }
}

/// Copies one direction, chunk by chunk, under the current faults.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: &Faults,
) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = faults.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if faults.blackhole.load(Ordering::Relaxed) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        faults.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}
