//! Tests of the bridge itself against a scripted broker on loopback: a
//! mesh with more retained topics than the send queue holds still reaches
//! the broker whole, and points under the bridge's own names are skipped.

use super::client::tests::read_packet;
use super::*;
use futures_lite::AsyncWriteExt;
use shoal_core::{Identity, Reading};
use smol::net::{TcpListener, TcpStream};
use std::cell::RefCell;
use std::rc::Rc;

/// A node named `name` holding `points` numeric points of its own.
fn node_with(name: &str, points: &[&str]) -> Node {
    let identity = Identity {
        key: shoal_core::sign::NodeKey::from_seed([9; 32]),
        name: wire::name(name).expect("valid"),
        incarnation: 1,
    };
    let config = shoal_core::Config {
        max_points_per_node: points.len().max(1),
        ..shoal_core::Config::default()
    };
    let mut node = Node::new(identity, config, 1, Instant::ZERO).expect("valid");
    for point in points {
        let reading = Reading {
            name: wire::name(point).expect("valid"),
            value: Value::Float(1.5),
            unit: wire::unit("°C").expect("valid"),
            ts_ms: 1,
        };
        node.handle_reading(Instant::ZERO, reading).expect("kept");
    }
    node
}

fn config(port: u16) -> Config {
    let text = format!("[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\"\n");
    shoal_config::parse(&text, std::path::Path::new("test.toml")).expect("valid")
}

fn executor() -> &'static smol::LocalExecutor<'static> {
    Box::leak(Box::new(smol::LocalExecutor::new()))
}

/// Accepts the bridge's connection: CONNECT answered, SUBSCRIBE read.
async fn accept(listener: &TcpListener) -> TcpStream {
    let (mut broker, _) = listener.accept().await.expect("accepts");
    read_packet(&mut broker).await;
    broker.write_all(&[0x20, 2, 0, 0]).await.expect("writes");
    read_packet(&mut broker).await;
    broker
}

/// The bridge connected and past its settling time, so its next tick
/// makes it the bridge and publishes everything.
async fn connected_bridge(
    ex: &'static smol::LocalExecutor<'static>,
    node: &mut Node,
    listener: &TcpListener,
) -> (Bridge, TcpStream, Instant) {
    let port = listener.local_addr().expect("bound").port();
    let mut bridge = Bridge::start(ex, &config(port), node, Instant::ZERO, None).expect("a bridge");
    let broker = accept(listener).await;
    let event = bridge.next_event().await;
    assert_eq!(event, ClientEvent::Connected);
    bridge.on_client(node, Instant::ZERO, event);
    (bridge, broker, Instant::from_millis(30_000))
}

/// Every retained topic the broker side reads, in a task.
fn collect(
    ex: &smol::LocalExecutor<'static>,
    mut broker: TcpStream,
) -> Rc<RefCell<BTreeSet<String>>> {
    let topics = Rc::new(RefCell::new(BTreeSet::new()));
    let sink = Rc::clone(&topics);
    ex.spawn(async move {
        loop {
            let raw = read_packet(&mut broker).await;
            if let Ok(packet::Decoded::Packet(
                packet::Incoming::Publish {
                    topic,
                    retain: true,
                    ..
                },
                _,
            )) = packet::decode(&raw, usize::MAX)
            {
                sink.borrow_mut().insert(topic);
            }
        }
    })
    .detach();
    topics
}

#[test]
fn a_mesh_larger_than_the_send_queue_reaches_the_broker_whole() {
    let names: Vec<String> = (0..600).map(|n| format!("p{n}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut node = node_with("big", &names);
    let ex = executor();
    smol::block_on(ex.run(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let (mut bridge, broker, mut now) = connected_bridge(ex, &mut node, &listener).await;
        // The broker reads nothing yet: the first pass overflows the queue.
        bridge.tick(&mut node, now);
        assert_eq!(bridge.role(), Role::Active);
        assert!(bridge.counters.queue_full > 0, "{:?}", bridge.counters);
        assert_eq!(bridge.client.queued(), client::OUT_QUEUE);
        assert!(bridge.published.len() < 3 * names.len());
        let topics = collect(ex, broker);
        let wanted = |topics: &BTreeSet<String>| {
            names.iter().all(|name| {
                topics.contains(&format!("shoal/big/{name}"))
                    && topics.contains(&format!("shoal/big/{name}/attributes"))
            })
        };
        let mut passes = 0;
        while !wanted(&topics.borrow()) {
            passes += 1;
            assert!(
                passes <= 20,
                "not whole after 20 s: {} topics",
                topics.borrow().len()
            );
            smol::Timer::after(Duration::from_millis(50)).await;
            now = now + Duration::from_secs(1);
            bridge.tick(&mut node, now);
        }
        let configs = topics
            .borrow()
            .iter()
            .filter(|t| t.starts_with("homeassistant/sensor/"))
            .count();
        assert_eq!(configs, names.len());
        assert!(!bridge.resend);
        eprintln!(
            "{} topics through a queue of {} in {passes} passes ({} refused at first)",
            topics.borrow().len(),
            client::OUT_QUEUE,
            bridge.counters.queue_full
        );
    }));
}

#[test]
fn points_under_the_bridges_own_names_are_not_published() {
    for (name, points, skipped) in [
        (
            "kitchen",
            ["availability", "t"],
            "shoal/kitchen/availability/attributes",
        ),
        ("bridge", ["x", "t"], "shoal/bridge/t"),
    ] {
        let mut node = node_with(name, &points);
        let ex = executor();
        smol::block_on(ex.run(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
            let (mut bridge, broker, now) = connected_bridge(ex, &mut node, &listener).await;
            let topics = collect(ex, broker);
            bridge.tick(&mut node, now);
            let mut waited = 0;
            while !topics.borrow().contains("shoal/bridge") {
                waited += 1;
                assert!(waited < 100, "nothing published");
                smol::Timer::after(Duration::from_millis(20)).await;
            }
            smol::Timer::after(Duration::from_millis(100)).await;
            let topics = topics.borrow();
            assert!(!topics.contains(skipped), "{skipped} in {topics:?}");
            let kept = format!("shoal/{name}/t");
            assert_eq!(topics.contains(&kept), name != "bridge", "{topics:?}");
            assert!(bridge.reserved_logged);
        }));
    }
}
