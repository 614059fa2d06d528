//! A TCP proxy in front of a server, for tests of what a client does when its connection breaks: it
//! forwards every connection it accepts, and on demand cuts every live one at once ([`Proxy::cut`]) or
//! swallows the next answer and closes its connection ([`Proxy::lose_next_answer`]), as a network
//! that fails after the server did the work, or leaves every live one open but silent
//! ([`Proxy::stall`]), as a peer gone without closing. New connections are accepted all along.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A running proxy; stops (and closes its connections) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: AbortHandle,
}

#[derive(Default)]
struct Shared {
    live: Mutex<Vec<AbortHandle>>,
    lose_answer: AtomicBool,
    lost: AtomicUsize,
    /// Connections are numbered as accepted; those numbered below this one are stalled.
    accepted: AtomicU64,
    stalled_below: AtomicU64,
    /// The request line (`GET /path HTTP/1.1`) of every request that went through.
    requests: Mutex<Vec<String>>,
}

impl Proxy {
    /// A proxy of the server at `base` (`http://host:port`).
    pub async fn to(base: &str) -> Self {
        let target: SocketAddr = base
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("a base URL of an address");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("an address");
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let number = accepting.accepted.fetch_add(1, Ordering::SeqCst);
                let connection = tokio::spawn(forward(client, server, accepting.clone(), number));
                let mut live = accepting.live.lock().unwrap();
                live.retain(|c| !c.is_finished());
                live.push(connection.abort_handle());
            }
        })
        .abort_handle();
        Self {
            addr,
            shared,
            accept,
        }
    }

    /// `http://127.0.0.1:<port>`: the proxy's address.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every live connection: how many there were.
    pub fn cut(&self) -> usize {
        let live = std::mem::take(&mut *self.shared.live.lock().unwrap());
        live.iter()
            .filter(|c| !c.is_finished())
            .map(|c| c.abort())
            .count()
    }

    /// The next bytes the server sends, on any connection, are dropped with their connection.
    pub fn lose_next_answer(&self) {
        self.shared.lose_answer.store(true, Ordering::SeqCst);
    }

    /// Every live connection stays open but carries nothing more from the server: how many there
    /// were. Later connections work.
    pub fn stall(&self) -> usize {
        let accepted = self.shared.accepted.load(Ordering::SeqCst);
        self.shared.stalled_below.store(accepted, Ordering::SeqCst);
        let live = self.shared.live.lock().unwrap();
        live.iter().filter(|c| !c.is_finished()).count()
    }

    /// How many requests went through whose path starts with `path`.
    pub fn requests_to(&self, path: &str) -> usize {
        let requests = self.shared.requests.lock().unwrap();
        requests
            .iter()
            .filter(|line| line.split(' ').nth(1).is_some_and(|p| p.starts_with(path)))
            .count()
    }

    /// How many answers were lost so.
    pub fn answers_lost(&self) -> usize {
        self.shared.lost.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Copies both ways until either side closes, or an answer is to be lost; once stalled, drops what
/// the server sends.
async fn forward(client: TcpStream, server: TcpStream, shared: Arc<Shared>, number: u64) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let upstream = async {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = from_client.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            // A request's head starts a read (bodies here are small; a line split across reads is
            // not a request line, and is not counted).
            let text = String::from_utf8_lossy(&buf[..n]);
            if let Some(line) = text.lines().next().filter(|l| l.ends_with("HTTP/1.1")) {
                shared.requests.lock().unwrap().push(line.to_owned());
            }
            to_server.write_all(&buf[..n]).await?;
        }
    };
    let downstream = async {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = from_server.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            if shared.lose_answer.swap(false, Ordering::SeqCst) {
                shared.lost.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            if number < shared.stalled_below.load(Ordering::SeqCst) {
                continue;
            }
            to_client.write_all(&buf[..n]).await?;
        }
    };
    // Either way ends the connection: both sockets drop here.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}
