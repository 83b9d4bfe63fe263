//! `ws://` URLs: just enough parsing to connect and to write the request line
//! and `Host` header. `wss://` is refused with a clear error (no TLS here).

use std::net::{SocketAddr, ToSocketAddrs};

/// A parsed, resolved `ws://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// Resolved address to connect to (the first the resolver returns).
    pub addr: SocketAddr,
    /// The `Host` header value (host and port as written).
    pub host: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Parses and resolves a `ws://host[:port][/path]` URL.
pub fn parse(url: &str) -> Result<WsUrl, String> {
    let rest = match url.split_once("://") {
        Some(("ws", rest)) => rest,
        Some(("wss", _)) => {
            return Err("wss:// is not supported (no TLS in the bench client); use ws://".into())
        }
        Some((scheme, _)) => return Err(format!("scheme {scheme:?} is not ws")),
        None => return Err("expected ws://host[:port]/path".into()),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err("missing host".into());
    }
    let has_port = match authority.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => authority.contains(':'),
    };
    let with_port = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority:?} resolves to no address"))?;
    Ok(WsUrl {
        addr,
        host: authority.to_string(),
        path: path.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_path() {
        let u = parse("ws://127.0.0.1:9001/echo?x=1").unwrap();
        assert_eq!(u.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(u.host, "127.0.0.1:9001");
        assert_eq!(u.path, "/echo?x=1");
    }

    #[test]
    fn defaults_port_and_path() {
        let u = parse("ws://127.0.0.1").unwrap();
        assert_eq!(u.addr.port(), 80);
        assert_eq!(u.path, "/");
        let u = parse("ws://[::1]:81/a").unwrap();
        assert_eq!(u.addr, "[::1]:81".parse().unwrap());
        assert_eq!(parse("ws://[::1]/").unwrap().addr.port(), 80);
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        assert!(parse("wss://127.0.0.1/").unwrap_err().contains("wss"));
        assert!(parse("http://127.0.0.1/").unwrap_err().contains("not ws"));
        assert!(parse("127.0.0.1:80").is_err());
        assert!(parse("ws:///x").unwrap_err().contains("host"));
    }
}
