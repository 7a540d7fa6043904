//! A TCP proxy in front of MongoDB that can make one insert's outcome unknown to the
//! client and apply it late: what a paused or overloaded server does when it runs an
//! insert it had read before, after the client gave up on that connection and asked
//! again on a new one.
//!
//! Once armed, the next `insert` into `events` is read whole (MongoDB's wire messages
//! start with their length as a little-endian int32), the client's connection is cut
//! (the driver sees a network error, so the outcome is unknown), and the message is
//! sent to the server `delay` later, on that same server connection. Everything else
//! passes through unchanged.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An `insert` command naming the `events` collection, as BSON puts it in an OP_MSG
/// body: the string element `insert: "events"`.
const INSERT_INTO_EVENTS: &[u8] = b"\x02insert\x00\x07\x00\x00\x00events\x00";

pub struct LateInsertProxy {
    armed: Arc<AtomicBool>,
    delivered: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl LateInsertProxy {
    /// Listens on a free loopback port in front of the server `uri` names; returns the
    /// proxy and the URI that reaches the server through it (see [`uri_through`]).
    /// `None` for a URI the proxy cannot stand in front of.
    pub async fn in_front_of(uri: &str, delay: Duration) -> Option<(LateInsertProxy, String)> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (proxied, upstream) = uri_through(uri, addr)?;
        let armed = Arc::new(AtomicBool::new(false));
        let delivered = Arc::new(AtomicBool::new(false));
        let (a, d) = (armed.clone(), delivered.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, a.clone(), d.clone(), delay));
            }
        });
        let proxy = LateInsertProxy {
            armed,
            delivered,
            task,
        };
        Some((proxy, proxied))
    }

    /// The next insert into `events` gets its connection cut and is applied late.
    pub fn arm(&self) {
        self.delivered.store(false, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    /// True once the held insert has been sent on and the server has answered it.
    pub fn delivered(&self) -> bool {
        self.delivered.load(Ordering::SeqCst)
    }
}

impl Drop for LateInsertProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `uri` with its single host replaced by `addr`, connecting to that address only
/// (a replica set's member list would lead the driver around the proxy) and without
/// the driver's own retry of a write (the daemon's lookup is what is tested); also
/// the host it named. `None` for an SRV URI or one with several hosts.
fn uri_through(uri: &str, addr: SocketAddr) -> Option<(String, String)> {
    let rest = uri.strip_prefix("mongodb://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (credentials, host) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    if host.contains(',') {
        return None;
    }
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:27017")
    };
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, q),
        None => (tail, ""),
    };
    let mut options: Vec<&str> = query
        .split('&')
        .filter(|o| {
            let name = o.split('=').next().unwrap_or("").to_ascii_lowercase();
            !o.is_empty()
                && !matches!(
                    name.as_str(),
                    "replicaset" | "directconnection" | "retrywrites"
                )
        })
        .collect();
    options.extend(["directConnection=true", "retryWrites=false"]);
    let path = if path.is_empty() { "/" } else { path };
    Some((
        format!("mongodb://{credentials}{addr}{path}?{}", options.join("&")),
        host,
    ))
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    armed: Arc<AtomicBool>,
    delivered: Arc<AtomicBool>,
    delay: Duration,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let (cut, cut_off) = tokio::sync::oneshot::channel::<()>();
    // The server's answers go back to the client until the client is cut off; then
    // the server side is handed back to hear the late insert's answer.
    let answers = tokio::spawn(async move {
        tokio::select! {
            _ = tokio::io::copy(&mut server_read, &mut client_write) => {}
            _ = cut_off => {}
        }
        server_read
    });
    loop {
        let mut length = [0u8; 4];
        if client_read.read_exact(&mut length).await.is_err() {
            break;
        }
        let total = i32::from_le_bytes(length).max(4) as usize;
        let mut message = length.to_vec();
        message.resize(total, 0);
        if client_read.read_exact(&mut message[4..]).await.is_err() {
            break;
        }
        let is_insert = message
            .windows(INSERT_INTO_EVENTS.len())
            .any(|w| w == INSERT_INTO_EVENTS);
        if is_insert && armed.swap(false, Ordering::SeqCst) {
            // Cut the client off (both halves of its socket closed), then play the
            // server's part late.
            let _ = cut.send(());
            drop(client_read);
            let Ok(mut server_read) = answers.await else {
                return;
            };
            tokio::time::sleep(delay).await;
            if server_write.write_all(&message).await.is_ok() {
                // Wait for the server's answer: the insert is applied, not abandoned.
                let mut reply_length = [0u8; 4];
                if server_read.read_exact(&mut reply_length).await.is_ok() {
                    delivered.store(true, Ordering::SeqCst);
                }
            }
            return;
        }
        if server_write.write_all(&message).await.is_err() {
            break;
        }
    }
    answers.abort();
}
