//! Direct descriptors: a worker's connections live in its ring's file
//! table, and when that table is all but full new connections get a fast
//! 503 from the reserve kept for it, instead of waiting in the backlog.

mod common;

use std::time::{Duration, Instant};

use common::*;

const TABLE: usize = 64;
const RESERVE: usize = 8;

#[test]
fn a_full_file_table_answers_503_from_the_reserve_and_recovers() {
    let config = format!(
        "[server]\nworkers = 1\noverload_reserve = {RESERVE}\n\
         [io]\nfile_table = {TABLE}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\npublish_ms = 50\n"
    );
    let Some(gw) = Gateway::start(&config) else {
        return;
    };
    // Up to the reserve, connections are served. (The admin listener's
    // connections share the table; none is open now.)
    let usable = TABLE - RESERVE;
    let mut held: Vec<Ws> = (0..usable).map(|_| ws_connect(&gw)).collect();

    // Every connection beyond it is refused at once, each counted.
    let refused = 20;
    for _ in 0..refused {
        let started = Instant::now();
        let r = http_exchange(gw.addr, upgrade_request("/echo", "").as_bytes());
        assert_eq!(r.status, 503, "beyond the table's usable part");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refused in {:?}",
            started.elapsed()
        );
    }
    let rejected = retry(Duration::from_secs(5), || {
        let m = gw.metrics();
        let n = m.get("gateway_handshake_rejections_total", &[("status", "503")]);
        (n == refused as f64).then_some(n)
    });
    assert_eq!(rejected, Some(refused as f64), "503s counted");

    // The held connections still work, and closing some frees their entries.
    for ws in held.iter_mut().take(3) {
        assert_echo(ws, tungstenite::Message::text("still here"));
    }
    held.truncate(held.len() - 10);
    let mut more = Vec::new();
    retry(Duration::from_secs(5), || {
        while more.len() < 10 {
            match try_ws_connect(gw.addr, gw.echo_url(), None) {
                Ok((ws, _)) => more.push(ws),
                Err(_) => return None,
            }
        }
        Some(())
    })
    .expect("entries of closed connections are reused");
    drop(held);
    drop(more);
    assert_still_serving(&gw);
}
