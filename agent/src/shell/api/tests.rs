//! Unit tests of `api`: the HTTP side of the API: decoding, tokens, flags,
//! connection limits.
use super::*;

#[test]
fn percent_escapes_are_decoded_and_bad_ones_kept() {
    assert_eq!(percent_decode("gw%2D1"), "gw-1");
    assert_eq!(percent_decode("plain"), "plain");
    assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
    assert_eq!(percent_decode("é%"), "é%");
}

#[test]
fn the_token_comparison_needs_the_whole_token() {
    assert!(constant_time_eq(b"secret", b"secret"));
    assert!(!constant_time_eq(b"secret", b"secre"));
    assert!(!constant_time_eq(b"", b"secret"));
    assert!(!constant_time_eq(b"secret!", b"secret"));
}

#[test]
fn query_flags() {
    assert!(query_flag("healthy=true", "healthy"));
    assert!(query_flag("x=1&healthy", "healthy"));
    assert!(!query_flag("healthy=false", "healthy"));
    assert!(!query_flag("", "healthy"));
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([192, 168, 1, last])
}

#[test]
fn one_address_gets_at_most_its_share_and_it_comes_back_on_close() {
    let mut connections = Connections::default();
    for _ in 0..MAX_CONNECTIONS_PER_CLIENT {
        assert_eq!(connections.try_open(ip(1)), Ok(()));
    }
    assert_eq!(connections.try_open(ip(1)), Err(Refusal::PerClient));
    assert_eq!(connections.try_open(ip(2)), Ok(()));
    connections.close(ip(1));
    assert_eq!(connections.try_open(ip(1)), Ok(()));
    assert_eq!(connections.try_open(ip(1)), Err(Refusal::PerClient));
}

#[test]
fn the_last_slots_go_only_to_addresses_with_none_open() {
    let mut connections = Connections::default();
    let shared = MAX_CONNECTIONS - RESERVED_FOR_NEW_CLIENTS;
    // Two slots each up to the reserve.
    for n in 0..shared {
        assert_eq!(connections.try_open(ip((n / 2) as u8)), Ok(()), "{n}");
    }
    assert_eq!(connections.try_open(ip(0)), Err(Refusal::PerClient));
    // The reserve: one each for addresses with none, until every slot is
    // taken.
    for n in 0..RESERVED_FOR_NEW_CLIENTS {
        assert_eq!(connections.try_open(ip(100 + n as u8)), Ok(()), "{n}");
    }
    assert_eq!(connections.try_open(ip(200)), Err(Refusal::Full));
    assert_eq!(connections.total, MAX_CONNECTIONS);
    assert_eq!(
        connections.by_client.len(),
        shared / 2 + RESERVED_FOR_NEW_CLIENTS
    );
}

#[test]
fn an_address_leaves_the_table_with_its_last_connection() {
    let mut connections = Connections::default();
    // Every slot from distinct addresses: the table is full too.
    for n in 0..MAX_CONNECTIONS {
        assert_eq!(connections.try_open(ip(n as u8)), Ok(()));
    }
    assert_eq!(connections.try_open(ip(255)), Err(Refusal::Full));
    for n in 0..MAX_CONNECTIONS {
        connections.close(ip(n as u8));
    }
    assert_eq!(connections.total, 0);
    assert!(connections.by_client.is_empty());
    // Closing what is not open changes nothing.
    connections.close(ip(1));
    assert_eq!(connections.total, 0);
    assert_eq!(connections.try_open(ip(255)), Ok(()));
}

#[test]
fn clients_are_ipv4_addresses_or_ipv6_prefixes() {
    let v4: IpAddr = "192.168.1.7".parse().expect("an address");
    let mapped: IpAddr = "::ffff:192.168.1.7".parse().expect("an address");
    assert_eq!(client_of(v4), v4);
    assert_eq!(client_of(mapped), v4);
    let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("an address");
    let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("an address");
    let other: IpAddr = "2001:db8:1:3::1".parse().expect("an address");
    assert_eq!(client_of(a), client_of(b));
    assert_eq!(
        client_of(a),
        "2001:db8:1:2::".parse::<IpAddr>().expect("an address")
    );
    assert_ne!(client_of(a), client_of(other));
}
