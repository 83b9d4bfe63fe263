//! Listening sockets: one `SO_REUSEPORT` socket per worker on the same port,
//! so the kernel spreads incoming connections over the workers.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// How the listeners are set up.
#[derive(Debug, Clone, Copy)]
pub struct ListenOptions {
    /// `listen(2)` backlog per listener.
    pub backlog: u32,
    /// Join an address another process already listens on (see
    /// [`reuseport_listeners`]).
    pub share: bool,
    /// `SO_SNDBUF` / `SO_RCVBUF` for every accepted connection (inherited
    /// from the listener); 0 leaves the kernel's autotuning on.
    pub send_buffer: u32,
    /// See `send_buffer`.
    pub recv_buffer: u32,
}

/// Creates `count` listeners bound to `addr`. With port 0 the first picks a
/// free port and the others bind to that same port.
///
/// `SO_REUSEPORT` would also let them join a socket another process already
/// listens on, silently splitting the traffic with it; unless `share` is set,
/// that is refused first (`AddrInUse`).
pub fn reuseport_listeners(
    addr: SocketAddr,
    count: usize,
    opts: ListenOptions,
) -> io::Result<(Vec<OwnedFd>, SocketAddr)> {
    if !opts.share && addr.port() != 0 {
        ensure_not_listened_on(addr)?;
    }
    let mut fds = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let fd = bind_one(bound, opts)?;
        bound = local_addr(fd.as_raw_fd())?;
        fds.push(fd);
    }
    Ok((fds, bound))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Sets an integer socket option.
pub fn set_int_opt(fd: i32, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Converts a socket address to its C form.
pub fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Creates a TCP socket of `addr`'s family (close-on-exec; non-blocking if
/// asked: connection sockets are, see the accept flags in the worker).
pub fn tcp_socket(addr: &SocketAddr, nonblocking: bool) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let flags = if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: plain syscall; the result is checked before use.
    let fd =
        check(unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | flags, 0) })?;
    // SAFETY: `fd` is a fresh descriptor we exclusively own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `bind(2)` of socket `fd` to `addr`.
pub fn bind(fd: i32, addr: &SocketAddr) -> io::Result<()> {
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    check(unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) })
        .map(drop)
}

/// Binds a probe socket without `SO_REUSEPORT`. `SO_REUSEADDR` keeps
/// TIME_WAIT leftovers of an earlier run from counting, but a listening socket
/// still conflicts, so `EADDRINUSE` here means someone is serving on `addr`.
fn ensure_not_listened_on(addr: SocketAddr) -> io::Result<()> {
    let probe = tcp_socket(&addr, false)?;
    set_int_opt(probe.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    match bind(probe.as_raw_fd(), &addr) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            e.kind(),
            format!(
                "bind {addr}: another process is already listening there \
                 (set server.share_port = true to share it deliberately)"
            ),
        )),
        other => other,
    }
}

fn bind_one(addr: SocketAddr, opts: ListenOptions) -> io::Result<OwnedFd> {
    let fd = tcp_socket(&addr, false)?;
    let raw = fd.as_raw_fd();
    set_int_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    set_int_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux, which
    // saves a setsockopt per connection.
    set_int_opt(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    // So are the buffer sizes (and the lock that turns autotuning off).
    for (name, size) in [
        (libc::SO_SNDBUF, opts.send_buffer),
        (libc::SO_RCVBUF, opts.recv_buffer),
    ] {
        if size > 0 {
            set_int_opt(
                raw,
                libc::SOL_SOCKET,
                name,
                size.min(i32::MAX as u32) as i32,
            )?;
        }
    }
    bind(raw, &addr).map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
    // SAFETY: plain syscall on a socket we own.
    check(unsafe { libc::listen(raw, opts.backlog.min(i32::MAX as u32) as i32) })?;
    Ok(fd)
}

/// The address a socket is bound to.
pub fn local_addr(fd: i32) -> io::Result<SocketAddr> {
    socket_name(fd, libc::getsockname)
}

/// The address of a connected socket's peer.
pub fn peer_addr(fd: i32) -> io::Result<SocketAddr> {
    socket_name(fd, libc::getpeername)
}

type NameCall = unsafe extern "C" fn(i32, *mut libc::sockaddr, *mut libc::socklen_t) -> i32;

fn socket_name(fd: i32, call: NameCall) -> io::Result<SocketAddr> {
    // SAFETY: zeroed sockaddr_storage is valid; the call writes at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: pointers to live locals with the correct length.
    check(unsafe {
        call(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    })?;
    to_socket_addr(&storage)
}

fn to_socket_addr(storage: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match storage.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port)))
        }
        f => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected address family {f}"),
        )),
    }
}

/// Reads a socket address the kernel wrote (e.g. an accept's peer).
pub(crate) fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    to_socket_addr(storage).ok()
}

/// A socket address in 19 bytes where `Option<SocketAddr>` takes 32: kept
/// for every connection, so it counts in the per-connection memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PeerAddr {
    ip: [u8; 16],
    port: u16,
    /// 0: unknown, 4 or 6.
    family: u8,
}

impl From<Option<SocketAddr>> for PeerAddr {
    fn from(addr: Option<SocketAddr>) -> Self {
        match addr {
            None => Self::default(),
            Some(SocketAddr::V4(a)) => {
                let mut ip = [0; 16];
                ip[..4].copy_from_slice(&a.ip().octets());
                Self {
                    ip,
                    port: a.port(),
                    family: 4,
                }
            }
            Some(SocketAddr::V6(a)) => Self {
                ip: a.ip().octets(),
                port: a.port(),
                family: 6,
            },
        }
    }
}

impl PeerAddr {
    /// The address, if it was known.
    pub(crate) fn get(self) -> Option<SocketAddr> {
        match self.family {
            4 => {
                let ip = std::net::Ipv4Addr::new(self.ip[0], self.ip[1], self.ip[2], self.ip[3]);
                Some(SocketAddr::new(ip.into(), self.port))
            }
            6 => Some(SocketAddr::new(
                std::net::Ipv6Addr::from(self.ip).into(),
                self.port,
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addr_round_trip() {
        for a in ["10.1.2.3:4567", "[2001:db8::1]:443", "127.0.0.1:0"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(PeerAddr::from(Some(a)).get(), Some(a));
            let (storage, _) = sockaddr(&a);
            assert_eq!(from_sockaddr(&storage), Some(a));
        }
        assert_eq!(PeerAddr::from(None).get(), None);
        assert!(std::mem::size_of::<PeerAddr>() <= 20);
    }
}
