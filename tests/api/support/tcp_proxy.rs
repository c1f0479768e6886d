//! A TCP proxy a test puts between runrate and a server it depends on, to make that
//! server unreachable (connections dropped and refused) or hung (connections kept but
//! nothing passed on), and then bring it back: the faults of a network a real server
//! cannot be made to show on demand.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bytes pass both ways.
    Forward,
    /// Open connections are closed and new ones closed at once.
    Drop,
    /// Connections are kept open, new ones accepted, but no byte is passed on.
    Hang,
}

pub struct TcpProxy {
    pub address: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let address = listener.local_addr().expect("its address");
        let (mode, _) = watch::channel(Mode::Forward);
        let modes = mode.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = modes.subscribe();
                tokio::spawn(relay(client, upstream, mode));
            }
        });
        TcpProxy { address, mode }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    if *mode.borrow_and_update() == Mode::Drop {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Either direction ending ends both: the halves drop and both sockets close.
    tokio::select! {
        _ = pipe(client_read, server_write, mode.clone()) => {}
        _ = pipe(server_read, client_write, mode) => {}
    }
}

async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = mode.wait_for(|mode| *mode == Mode::Drop) => return,
        };
        let Ok(read @ 1..) = read else {
            return;
        };
        // Held while hung; gone when dropped.
        match mode.wait_for(|mode| *mode != Mode::Hang).await {
            Ok(mode) if *mode == Mode::Forward => {}
            _ => return,
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
