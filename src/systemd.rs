//! systemd's readiness protocol: a `Type=notify` service tells the service manager
//! `READY=1` once it serves and `STOPPING=1` when it begins to shut down, in a
//! datagram to the socket named by `NOTIFY_SOCKET` (a path, or `@name` for the
//! abstract namespace). Without that variable there is no service manager to tell.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (e.g. `READY=1`) to the service manager, if there is one.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(err) = send(&socket, state) {
        tracing::warn!(error = %err, state, "cannot notify systemd");
    }
}

fn send(socket: &OsStr, state: &str) -> std::io::Result<()> {
    let addr = match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(socket)?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}
