//! A tiny receive-buffer pool (4 x 4 KiB, incremental) shared by twelve
//! peers that send 256 KiB each without reading and one live connection:
//! the pool runs dry again and again (multishot receives end with ENOBUFS
//! and are re-armed), and still no connection stops being read.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::listener::{reuseport_listeners, ListenOptions};
use engine::spawn::{spawn, SpawnOptions, WorkerSetup};
use engine::{CloseCause, ConnId, EngineConfig, Handler, Io, Origin};

type Received = Arc<Mutex<HashMap<u32, usize>>>;

struct Echo {
    received: Received,
}

impl Handler for Echo {
    type Conn = ();
    fn on_open(&mut self, _: &mut Io, _: ConnId, _: Origin) {}
    fn on_data(&mut self, io: &mut Io, id: ConnId, _: &mut (), data: &mut [u8]) {
        *self
            .received
            .lock()
            .unwrap()
            .entry(id.index() as u32)
            .or_default() += data.len();
        let _ = io.send(id, Bytes::copy_from_slice(data));
    }
    fn on_deadline(&mut self, _: &mut Io, _: ConnId, _: &mut ()) {}
    fn on_closed(&mut self, _: &mut Io, _: ConnId, _: (), _: CloseCause) {}
}

#[test]
fn a_starved_pool_stalls_no_one() {
    let opts = ListenOptions {
        backlog: 128,
        share: false,
        send_buffer: 8192,
        recv_buffer: 0,
    };
    let (mut fds, addr): (_, SocketAddr) =
        reuseport_listeners("127.0.0.1:0".parse().unwrap(), 1, opts).unwrap();
    let received: Received = Arc::default();
    let shutdown = Arc::new(AtomicBool::new(false));
    let engine = EngineConfig {
        ring_entries: 64,
        recv_buffers: 4,
        recv_buffer_size: 4096,
        drain_ms: 500,
        file_table: 64,
        incremental_recv: true,
    };
    let (r, s) = (received.clone(), shutdown.clone());
    let fd = Mutex::new(fds.pop());
    let spawned = spawn(
        SpawnOptions {
            name: "starve".into(),
            workers: 1,
            cpus: Vec::new(),
            engine,
        },
        &shutdown,
        move |_| {
            Ok(WorkerSetup {
                handler: Echo {
                    received: r.clone(),
                },
                listeners: fd.lock().unwrap().take().into_iter().collect(),
                shutdown: s.clone(),
                bell: None,
            })
        },
        |_, w| *w.io_and_handler().0.stats(),
    )
    .unwrap();
    let total = 256usize << 10;
    let stalled: Vec<_> = (0..12)
        .map(|k| {
            let s = TcpStream::connect(addr).unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
            engine::listener::set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 8192).unwrap();
            let mut w = s.try_clone().unwrap();
            let data: Vec<u8> = (0..total).map(|i| (i + k) as u8).collect();
            let t = std::thread::spawn(move || {
                let _ = w.write_all(&data);
            });
            (s, t)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut live = TcpStream::connect(addr).unwrap();
    live.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let until = Instant::now() + Duration::from_millis(800);
    let mut n = 0usize;
    while Instant::now() < until {
        let msg = vec![(n % 251) as u8; 100 + n % 3000];
        live.write_all(&msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        live.read_exact(&mut back).expect("live connection echoes");
        n += 1;
    }
    // Every stalled peer's bytes are all read eventually (the server keeps
    // their echoes in memory: this handler has no backpressure).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got: Vec<usize> = received.lock().unwrap().values().copied().collect();
        let full = got.iter().filter(|&&g| g == total).count();
        if full >= 12 {
            break;
        }
        assert!(Instant::now() < deadline, "not all read: {got:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    shutdown.store(true, Ordering::Relaxed);
    for (s, t) in stalled {
        drop(s);
        let _ = t.join();
    }
    for r in spawned.join() {
        let stats = r.expect("worker");
        assert!(
            stats.recv_enobufs() > 0,
            "the pool never ran dry: {stats:?}"
        );
    }
}
