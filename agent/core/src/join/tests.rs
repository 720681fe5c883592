//! Unit tests of `join`: the exchange, single use, expiry, no oracle, rate limits, bounds.

use super::*;
use crate::wire::name;
use proptest::prelude::*;

const KEY: MeshKey = MeshKey([0x42; 32]);

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, last])
}

fn secret(n: u8) -> Secret {
    Secret([n; SECRET_LEN])
}

fn ask(secret: &Secret, nonce: u8) -> [u8; REQUEST_LEN] {
    request(
        secret,
        [nonce; NONCE_LEN],
        &name("pi-new").expect("valid"),
        NodeId(77),
    )
}

#[test]
fn the_holder_of_the_token_gets_the_key_once() {
    let mut tokens = Tokens::default();
    tokens
        .issue(at(0), secret(1), Duration::from_secs(900))
        .expect("issued");
    assert_eq!(tokens.outstanding(at(0)), 1);
    let (reply, outcome) = tokens.handle(at(10), ip(2), &ask(&secret(1), 5), &KEY);
    assert_eq!(
        outcome,
        Outcome::Joined {
            name: name("pi-new").expect("valid"),
            node: NodeId(77)
        }
    );
    let reply = reply.expect("answered");
    assert_eq!(reply.len(), ANSWER_LEN);
    assert!(reply.len() <= REQUEST_LEN);
    assert_eq!(
        open_reply(&secret(1), [5; NONCE_LEN], &reply),
        Ok(Answer::Key(KEY.0))
    );
    assert_eq!(tokens.outstanding(at(10)), 0);
    // Its answer got lost: the same request is answered again.
    let (reply, outcome) = tokens.handle(at(2_000), ip(2), &ask(&secret(1), 5), &KEY);
    assert_eq!(outcome, Outcome::AnsweredAgain);
    assert_eq!(
        open_reply(&secret(1), [5; NONCE_LEN], &reply.expect("answered")),
        Ok(Answer::Key(KEY.0))
    );
    // Anyone else with the token (a second Pi, a copy) is told it is used.
    let (reply, outcome) = tokens.handle(at(4_000), ip(3), &ask(&secret(1), 6), &KEY);
    assert_eq!(outcome, Outcome::Used);
    assert_eq!(
        open_reply(&secret(1), [6; NONCE_LEN], &reply.expect("answered")),
        Ok(Answer::Used)
    );
}

#[test]
fn an_expired_token_says_so_only_to_its_holder() {
    let mut tokens = Tokens::default();
    tokens
        .issue(at(0), secret(1), Duration::from_secs(1))
        .expect("issued");
    let (reply, outcome) = tokens.handle(at(1_000), ip(2), &ask(&secret(1), 5), &KEY);
    assert_eq!(outcome, Outcome::Expired);
    let reply = reply.expect("answered");
    assert_eq!(
        open_reply(&secret(1), [5; NONCE_LEN], &reply),
        Ok(Answer::Expired)
    );
    // Without the secret the answer is unreadable, even its status.
    assert_eq!(
        open_reply(&secret(9), [5; NONCE_LEN], &reply),
        Err(JoinError::NotAnAnswer)
    );
}

#[test]
fn a_wrong_token_learns_nothing_and_gets_no_more_bytes_than_it_sent() {
    let mut tokens = Tokens::default();
    tokens
        .issue(at(0), secret(1), Duration::from_secs(900))
        .expect("issued");
    // An unknown token, and the right token id with a forged seal: the same
    // 12-byte refusal (nothing says the id was right).
    let unknown = ask(&secret(2), 1);
    let mut forged = ask(&secret(1), 2);
    forged[60] ^= 1;
    let mut replies = Vec::new();
    for (n, request) in [unknown, forged].iter().enumerate() {
        let (reply, outcome) = tokens.handle(at(0), ip(n as u8 + 10), request, &KEY);
        assert_eq!(outcome, Outcome::Wrong);
        let reply = reply.expect("refused");
        assert_eq!(reply.len(), REFUSED_LEN);
        assert!(reply.len() < request.len());
        replies.push(reply);
    }
    assert_eq!(
        open_reply(&secret(2), [1; NONCE_LEN], &replies[0]),
        Err(JoinError::Refused)
    );
    assert_eq!(&replies[0][..4], &replies[1][..4]);
    // The token is still good for its holder.
    let (_, outcome) = tokens.handle(at(0), ip(20), &ask(&secret(1), 3), &KEY);
    assert!(matches!(outcome, Outcome::Joined { .. }));
    // Anything that is not a whole request gets no reply at all.
    for short in [
        &b"SJ"[..],
        &ask(&secret(1), 4)[..100],
        &[0u8; REQUEST_LEN][..],
    ] {
        let (reply, outcome) = tokens.handle(at(0), ip(30), short, &KEY);
        assert_eq!((reply, outcome), (None, Outcome::Malformed));
    }
}

#[test]
fn attempts_are_limited_per_source_and_in_total() {
    let mut tokens = Tokens::default();
    tokens
        .issue(at(0), secret(1), Duration::from_secs(900))
        .expect("issued");
    // One source brute-forcing: a burst, then one per second.
    let mut answered = 0;
    for n in 0..100u32 {
        let t = u64::from(n) * 100; // ten a second for ten seconds
        let guess = Secret([n as u8; SECRET_LEN]);
        let (reply, _) = tokens.handle(at(t), ip(2), &ask(&guess, 1), &KEY);
        answered += usize::from(reply.is_some());
    }
    assert!(
        (10..=usize::try_from(JOIN_BURST).expect("small") + 10).contains(&answered),
        "{answered} of 100 answered"
    );
    // Spoofed sources together: at most the total rate.
    let mut tokens = Tokens::default();
    let mut answered = 0;
    for n in 0..1000u32 {
        let (reply, _) = tokens.handle(
            at(u64::from(n)),
            IpAddr::from(n.to_be_bytes()),
            &ask(&secret(2), 1),
            &KEY,
        );
        answered += usize::from(reply.is_some());
    }
    // A full burst, then the rate, over that second.
    assert!(
        answered <= 2 * JOIN_TOTAL_PER_SECOND as usize,
        "{answered} in one second"
    );
    assert!(tokens.sources.len() <= MAX_SOURCES);
    assert!(!tokens.sources.is_empty());
}

#[test]
fn outstanding_tokens_are_bounded_and_spent_ones_make_room() {
    let mut tokens = Tokens::default();
    for n in 0..MAX_TOKENS as u8 {
        tokens
            .issue(at(0), secret(n), Duration::from_secs(900))
            .expect("issued");
    }
    assert_eq!(
        tokens.issue(at(0), secret(200), Duration::from_secs(900)),
        Err(IssueError::TooMany)
    );
    // One is used: room for another.
    let (_, outcome) = tokens.handle(at(10), ip(2), &ask(&secret(3), 1), &KEY);
    assert!(matches!(outcome, Outcome::Joined { .. }));
    tokens
        .issue(at(20), secret(200), Duration::from_secs(900))
        .expect("room");
    assert!(tokens.issued.len() <= MAX_TOKENS);
}

proptest! {
    #[test]
    fn any_datagram_is_handled_without_panic_and_never_answered_with_more(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        join_magic in any::<bool>(),
    ) {
        let mut tokens = Tokens::default();
        tokens.issue(at(0), secret(1), Duration::from_secs(900)).expect("issued");
        let mut bytes = bytes;
        if join_magic && bytes.len() >= 4 {
            bytes[..4].copy_from_slice(&[b'S', b'J', VERSION, 1]);
        }
        let (reply, _) = tokens.handle(at(0), ip(2), &bytes, &KEY);
        if let Some(reply) = reply {
            prop_assert!(reply.len() <= bytes.len());
        }
        let _ = open_reply(&secret(1), [0; NONCE_LEN], &bytes);
    }
}
