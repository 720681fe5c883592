//! Unit tests of `sockets`: routine beacons and news go to their own
//! ports, and news is read at once while routine beacons rest.

use super::*;
use std::time::{Duration, Instant};

/// `[mesh]` on 127.0.0.240 with ports of this test run's own (apart from
/// the process tests' range) and `beacon_interval`.
fn mesh(beacon_interval: &str, offset: u16) -> MeshSection {
    let port = 50_000 + (std::process::id() % 2_000) as u16 * 5 + offset;
    let text = format!(
        "[mesh]\nport = {port}\nsync_port = {}\nnews_port = {}\nbind = \"127.0.0.240\"\n\
         broadcast = [\"127.255.255.255\"]\nbeacon_interval = \"{beacon_interval}\"\n\
         suspect_after = \"20s\"\nunreachable_after = \"30s\"\nopen = true\n",
        port + 1,
        port + 2
    );
    match shoal_config::parse(&text, std::path::Path::new("test.toml")) {
        Ok(config) => config.mesh,
        Err(problems) => panic!("{problems}"),
    }
}

fn sender() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.241:0").expect("bind");
    socket.set_broadcast(true).expect("broadcast");
    socket
}

/// The next datagram's bytes, and how long it took.
async fn next(sockets: &mut Sockets) -> (Vec<u8>, Duration) {
    let asked = Instant::now();
    match sockets.recv().await {
        Input::Datagram(arrival, len, _) => {
            assert_eq!(arrival, Arrival::Broadcast);
            (sockets.received(len).to_vec(), asked.elapsed())
        }
        _ => panic!("not a datagram"),
    }
}

#[test]
fn news_is_read_at_once_while_routine_beacons_rest() {
    // A 9 s interval: a busy LAN's beacon socket rests 3 s.
    let mesh = mesh("9s", 0);
    let rest = mesh.beacon_interval / BEACON_BATCH_DIVISOR;
    let to = |port| SocketAddr::from(([127, 255, 255, 255], port));
    mainloop::block_on(async {
        let mut sockets = Sockets::open(&mesh).expect("sockets");
        let sender = sender();
        // Busy (as after an interval with 20 beacons), and found empty:
        // the beacon socket rests from now.
        sockets.rate = 20;
        while sockets.try_recv().is_some() {}
        sender.send_to(b"routine", to(mesh.port)).expect("send");
        sender.send_to(b"news", to(mesh.news_port)).expect("send");
        // The news wakes the loop at once; the routine beacon that waited
        // is read in the same wake-up (any wake-up ends a rest).
        let (first, took) = next(&mut sockets).await;
        assert!(
            took < rest / 2,
            "{took:?} for {:?}",
            String::from_utf8_lossy(&first)
        );
        let (second, _) = next(&mut sockets).await;
        let mut both = [first, second];
        both.sort();
        assert_eq!(both, [b"news".to_vec(), b"routine".to_vec()]);
        // A routine beacon alone waits out the rest (nothing else wakes
        // the loop here), and is read then, not lost.
        while sockets.try_recv().is_some() {}
        let rested = Instant::now();
        sender.send_to(b"routine", to(mesh.port)).expect("send");
        let (only, _) = next(&mut sockets).await;
        assert_eq!(only, b"routine");
        assert!(
            rested.elapsed() >= rest - Duration::from_millis(50),
            "read after {:?}, before the end of a {rest:?} rest",
            rested.elapsed()
        );
    })
    .expect("main loop");
}

#[test]
fn routine_beacons_go_to_the_beacon_port_and_news_to_the_news_port() {
    let mesh = mesh("1s", 3);
    mainloop::block_on(async {
        let sockets = Sockets::open(&mesh).expect("sockets");
        let transmit = |destination, routine| Transmit {
            destination,
            payload: Box::default(),
            routine,
        };
        let broadcast = |port| vec![SocketAddr::from(([127, 255, 255, 255], port))];
        let routine = transmit(Destination::Broadcast, true);
        assert_eq!(sockets.targets(&routine), broadcast(mesh.port));
        let news = transmit(Destination::Broadcast, false);
        assert_eq!(sockets.targets(&news), broadcast(mesh.news_port));
        let peer = SocketAddr::from(([127, 0, 0, 9], 20195));
        let unicast = transmit(Destination::Unicast(peer), false);
        assert_eq!(sockets.targets(&unicast), [peer]);
    })
    .expect("main loop");
}

#[test]
fn a_flood_shortens_the_rest_so_the_receive_buffer_never_fills() {
    let mesh = mesh("9s", 6);
    let to = SocketAddr::from(([127, 255, 255, 255], mesh.port));
    mainloop::block_on(async {
        let mut sockets = Sockets::open(&mesh).expect("sockets");
        let sender = sender();
        sockets.rate = BATCH_MAX_RATE + 1;
        while sockets.try_recv().is_some() {}
        let rested = Instant::now();
        sender.send_to(b"flood", to).expect("send");
        let (only, _) = next(&mut sockets).await;
        assert_eq!(only, b"flood");
        // A tenth of the interval (900 ms), not a third (3 s).
        let short = mesh.beacon_interval / FLOOD_BATCH_DIVISOR;
        let full = mesh.beacon_interval / BEACON_BATCH_DIVISOR;
        assert!(
            rested.elapsed() >= short - Duration::from_millis(50)
                && rested.elapsed() < (short + full) / 2,
            "read after {:?}: {short:?} expected",
            rested.elapsed()
        );
    })
    .expect("main loop");
}
