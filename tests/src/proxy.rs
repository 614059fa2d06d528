//! A TCP proxy in front of a server, for tests of what a client does when its connection breaks: it
//! forwards every connection it accepts, and on demand cuts every live one at once ([`Proxy::cut`]) or
//! swallows the next answer and closes its connection ([`Proxy::lose_next_answer`]), as a network
//! that fails after the server did the work. New connections are accepted all along.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
                let connection = tokio::spawn(forward(client, server, accepting.clone()));
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

/// Copies both ways until either side closes, or an answer is to be lost.
async fn forward(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let upstream = tokio::io::copy(&mut from_client, &mut to_server);
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
            to_client.write_all(&buf[..n]).await?;
        }
    };
    // Either way ends the connection: both sockets drop here.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}
