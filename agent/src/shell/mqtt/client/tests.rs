//! Tests of the MQTT connection task against a scripted broker on loopback.

use super::*;
use smol::net::TcpListener;

fn settings(port: u16) -> Settings {
    Settings {
        host: "127.0.0.1".to_owned(),
        port,
        client_id: "shoal-test".to_owned(),
        username: Some("user".to_owned()),
        password: Some(b"secret".to_vec()),
        keep_alive: Duration::from_secs(1),
        will: Some(("shoal/bridge/t".to_owned(), b"offline".to_vec())),
        subscriptions: vec!["shoal/+/exec/+/run".to_owned()],
        max_packet: 1024,
    }
}

/// Reads one whole packet from the client (fixed header, remaining length, body).
pub(crate) async fn read_packet(stream: &mut TcpStream) -> Vec<u8> {
    let mut first = [0u8; 2];
    stream.read_exact(&mut first).await.unwrap();
    let mut packet = first.to_vec();
    let mut length = usize::from(first[1] & 0x7f);
    let mut shift = 7;
    let mut last = first[1];
    while last & 0x80 != 0 {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).await.unwrap();
        packet.push(byte[0]);
        length += usize::from(byte[0] & 0x7f) << shift;
        shift += 7;
        last = byte[0];
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    packet.extend(body);
    packet
}

async fn within<T>(limit: Duration, work: impl std::future::Future<Output = T>) -> T {
    timeout(limit, work).await.expect("timed out")
}

/// Accepts the client's next connection and answers its CONNECT with `code`.
async fn accept(listener: &TcpListener, code: u8) -> TcpStream {
    let (mut broker, _) = within(Duration::from_secs(5), listener.accept())
        .await
        .unwrap();
    within(Duration::from_secs(5), read_packet(&mut broker)).await;
    broker.write_all(&[0x20, 2, 0, code]).await.unwrap();
    broker
}

/// The same, accepted, through its SUBSCRIBE and the client's `Connected`.
async fn connected(listener: &TcpListener, client: &Client) -> TcpStream {
    let mut broker = accept(listener, 0).await;
    within(Duration::from_secs(5), read_packet(&mut broker)).await;
    assert_eq!(
        within(Duration::from_secs(5), client.next_event()).await,
        ClientEvent::Connected
    );
    broker
}

#[test]
fn backoff_doubles_up_to_its_ceiling() {
    assert_eq!(backoff(0), Duration::from_secs(1));
    assert_eq!(backoff(1), Duration::from_secs(2));
    assert_eq!(backoff(4), Duration::from_secs(16));
    assert_eq!(backoff(5), MAX_BACKOFF);
    assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
}

#[test]
fn it_connects_subscribes_publishes_pings_and_takes_messages() {
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = Client::start(&ex, settings(port));
        let (mut broker, _) = within(Duration::from_secs(5), listener.accept())
            .await
            .unwrap();
        let hello = within(Duration::from_secs(5), read_packet(&mut broker)).await;
        assert_eq!(hello[0], 0x10);
        assert!(hello.windows(6).any(|w| w == b"secret"));
        assert!(hello.windows(7).any(|w| w == b"offline"));
        broker.write_all(&[0x20, 2, 0, 0]).await.unwrap();
        let subscribe = within(Duration::from_secs(5), read_packet(&mut broker)).await;
        assert_eq!(subscribe[0], 0x82);
        assert!(subscribe.windows(18).any(|w| w == b"shoal/+/exec/+/run"));
        assert_eq!(
            within(Duration::from_secs(5), client.next_event()).await,
            ClientEvent::Connected
        );
        assert!(client.stats().up.get());
        assert!(client.publish("shoal/a/t".to_owned(), b"21.5".to_vec(), true));
        let published = within(Duration::from_secs(5), read_packet(&mut broker)).await;
        assert_eq!(published, packet::publish("shoal/a/t", b"21.5", true));
        // A message for us, QoS 1: acknowledged and handed over.
        let mut message = vec![0x32, 0];
        let body = {
            let mut b = vec![0, 21];
            b.extend_from_slice(b"shoal/b/exec/open/run");
            b.extend_from_slice(&[0, 9]);
            b.extend_from_slice(b"PRESS");
            b
        };
        message[1] = body.len() as u8;
        message.extend(body);
        broker.write_all(&message).await.unwrap();
        assert_eq!(
            within(Duration::from_secs(5), read_packet(&mut broker)).await,
            vec![0x40, 2, 0, 9]
        );
        assert_eq!(
            within(Duration::from_secs(5), client.next_event()).await,
            ClientEvent::Message {
                topic: "shoal/b/exec/open/run".to_owned(),
                payload: b"PRESS".to_vec(),
                retained: false,
            }
        );
        // Idle for the keepalive: a ping, answered.
        let ping = within(Duration::from_secs(3), read_packet(&mut broker)).await;
        assert_eq!(ping, vec![0xc0, 0]);
        broker.write_all(&[0xd0, 0]).await.unwrap();
        // Closing sends DISCONNECT, so the broker drops the Last Will.
        let closing = ex.spawn(client.close(Duration::from_secs(2)));
        assert_eq!(
            within(Duration::from_secs(3), read_packet(&mut broker)).await,
            vec![0xe0, 0]
        );
        closing.await;
    }));
}

#[test]
fn a_refusal_garbage_and_silence_each_end_the_connection_with_a_reason_and_a_retry() {
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = Client::start(&ex, settings(port));
        // 1: bad password.
        let _broker = accept(&listener, 4).await;
        let ClientEvent::Disconnected { reason, retry_in } =
            within(Duration::from_secs(5), client.next_event()).await
        else {
            panic!("not a disconnect");
        };
        assert!(reason.contains("bad user name or password"), "{reason}");
        assert_eq!(retry_in, Duration::from_secs(1));
        // 2: accepted, then garbage (a packet type no broker sends).
        let mut broker = connected(&listener, &client).await;
        broker.write_all(&[0x10, 0]).await.unwrap();
        let ClientEvent::Disconnected { reason, retry_in } =
            within(Duration::from_secs(5), client.next_event()).await
        else {
            panic!("not a disconnect");
        };
        assert!(reason.contains("unexpected packet type 1"), "{reason}");
        assert_eq!(retry_in, Duration::from_secs(2), "backoff grows");
        // 3: an oversized message is skipped, the next one arrives, and a
        // broker that closes mid-packet is a disconnect.
        let mut broker = connected(&listener, &client).await;
        let big = packet::publish("z/x", &vec![7u8; 5000], false);
        broker.write_all(&big).await.unwrap();
        broker
            .write_all(&packet::publish("z/y", b"{}", false))
            .await
            .unwrap();
        assert_eq!(
            within(Duration::from_secs(5), client.next_event()).await,
            ClientEvent::Message {
                topic: "z/y".to_owned(),
                payload: b"{}".to_vec(),
                retained: false,
            }
        );
        assert_eq!(client.stats().dropped.get(), 1);
        broker
            .write_all(&packet::publish("z/y", b"{}", false)[..4])
            .await
            .unwrap();
        drop(broker);
        let ClientEvent::Disconnected { reason, .. } =
            within(Duration::from_secs(5), client.next_event()).await
        else {
            panic!("not a disconnect");
        };
        assert!(reason.contains("closed"), "{reason}");
        assert_eq!(client.stats().connects.get(), 2);
        assert_eq!(client.stats().disconnects.get(), 3);
    }));
}

#[test]
fn an_unreachable_broker_is_a_disconnect_with_a_reason() {
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(async {
        // A port nothing listens on (bound, then closed).
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let client = Client::start(&ex, settings(port));
        let ClientEvent::Disconnected { reason, .. } =
            within(Duration::from_secs(5), client.next_event()).await
        else {
            panic!("not a disconnect");
        };
        assert!(reason.contains("cannot connect"), "{reason}");
        assert!(!client.stats().up.get());
    }));
}

#[test]
fn a_broker_that_stops_reading_fills_the_queue_to_its_bound_and_no_further() {
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = Client::start(&ex, settings(port));
        // Accepted, but it never reads the SUBSCRIBE or anything after.
        let broker = accept(&listener, 0).await;
        assert_eq!(
            within(Duration::from_secs(5), client.next_event()).await,
            ClientEvent::Connected
        );
        // The broker reads nothing more: socket buffers fill, then the queue.
        let payload = vec![b'x'; 2048];
        let mut first_refusal = None;
        let mut refused = 0;
        for n in 0..20_000 {
            if !client.publish(format!("t/{n}"), payload.clone(), false) {
                refused += 1;
                first_refusal.get_or_insert(n);
            }
            if n % 64 == 0 {
                // Let the task write what the socket takes.
                smol::Timer::after(Duration::from_millis(1)).await;
            }
        }
        let first_refusal = first_refusal.expect("the queue never filled");
        // Refused only once the queue held its bound (plus what the socket
        // buffers took), and from then on the queue stays full.
        assert!(first_refusal >= OUT_QUEUE, "refused at {first_refusal}");
        assert_eq!(client.queued(), OUT_QUEUE);
        assert!(refused > 10_000, "{refused}");
        drop(broker);
    }));
}

#[test]
fn later_subscriptions_go_out_in_order_and_their_answers_are_quiet() {
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = Client::start(&ex, settings(port));
        let mut broker = connected(&listener, &client).await;
        let filters = vec!["shoal/+".to_owned()];
        assert!(client.publish("shoal/a/t".to_owned(), b"1".to_vec(), true));
        assert!(client.hand(Outgoing::Subscribe(filters.clone())));
        assert!(client.hand(Outgoing::Unsubscribe(filters.clone())));
        let read = |broker: &mut TcpStream| {
            let mut broker = broker.clone();
            async move { within(Duration::from_secs(5), read_packet(&mut broker)).await }
        };
        assert_eq!(
            read(&mut broker).await,
            packet::publish("shoal/a/t", b"1", true)
        );
        assert_eq!(read(&mut broker).await, packet::subscribe(2, &filters));
        assert_eq!(read(&mut broker).await, packet::unsubscribe(2, &filters));
        // A refused later subscription and an UNSUBACK end nothing.
        broker.write_all(&[0x90, 3, 0, 2, 0x80]).await.unwrap();
        broker.write_all(&[0xb0, 2, 0, 2]).await.unwrap();
        assert!(client.publish("shoal/a/t".to_owned(), b"2".to_vec(), true));
        assert_eq!(
            read(&mut broker).await,
            packet::publish("shoal/a/t", b"2", true)
        );
        assert!(client.stats().up.get());
        assert_eq!(client.stats().published.get(), 2);
    }));
}
