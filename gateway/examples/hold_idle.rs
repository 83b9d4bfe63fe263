//! Opens N WebSocket connections to a gateway, exchanges one small message
//! on each, then holds them idle until stdin closes. Used by
//! `ci/measure-idle-memory.sh` to measure the gateway's memory per idle
//! connection; deliberately plain blocking sockets so the tool itself is
//! obviously correct.
//!
//! Usage: `hold_idle ADDR N [PATH]`; prints `holding N` once all are idle.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn handshake(addr: SocketAddr, path: &str) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::other("EOF during handshake"));
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&head).into_owned(),
        ));
    }
    // One masked 5-byte text frame, then read its 7-byte unmasked echo.
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 5, 1, 2, 3, 4];
    frame.extend(b"hello".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    s.write_all(&frame)?;
    let mut echo = [0u8; 7];
    s.read_exact(&mut echo)?;
    if &echo[2..] != b"hello" {
        return Err(std::io::Error::other("bad echo"));
    }
    Ok(s)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr: SocketAddr = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: hold_idle ADDR N [PATH]");
    let n: usize = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .expect("usage: hold_idle ADDR N [PATH]");
    let path = args.get(3).map_or("/echo", String::as_str);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        match handshake(addr, path) {
            Ok(s) => conns.push(s),
            Err(e) => {
                eprintln!("connection {i} failed: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("holding {}", conns.len());
    std::io::stdout().flush().ok();
    // Hold until stdin closes.
    let mut line = String::new();
    while std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        line.clear();
    }
}
