//! Two rooms reliability machines (proto::rooms::reliable) driven by an
//! arbitrary sequence of events: sends, answers now or later, time passing
//! (sometimes backwards), datagrams delivered out of order, duplicated,
//! dropped or forged, peers forgotten. Checked against a model after every
//! step: no panic; M sends at most per message; an answer only for what is
//! outstanding; a give-up only after M sends; a request executed once per
//! set of copies (unless forgotten or aged out); every bound held; nothing
//! left in flight once time has run out.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chinwag_proto::rooms::reliable::{Config, Endpoint, Event, Incoming, SendError};
use chinwag_proto::rooms::{kind, Body, Message, Reason, SERVER};
use libfuzzer_sys::fuzz_target;

#[path = "../common/input.rs"]
mod input;
use input::Input;

/// What one machine's application knows.
#[derive(Default)]
struct Model {
    /// (peer, seq) -> (request bytes, sends seen on the wire)
    outstanding: HashMap<(u8, u16), (Vec<u8>, u32)>,
    /// (peer, request bytes) -> when first executed
    executed: HashMap<(u8, Vec<u8>), Instant>,
    /// Requests to answer later.
    pending: Vec<(u8, Message)>,
}

fn answer_to(m: &Message, user: u8) -> Message {
    let body = if m.body.kind() == kind::TEXTE {
        Body::TextAck
    } else {
        Body::Error {
            refused: m.body.kind(),
            reason: Reason::Malformed,
        }
    };
    Message {
        user,
        seq: m.seq,
        body,
    }
}

const TTL: Duration = Duration::from_secs(2);

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let (Some(a), Some(b)) = (input.byte(), input.byte()) else {
        return;
    };
    let cfg = Config {
        tries: 1 + (a % 12) as u32,
        outstanding_per_peer: 1 + (b % 8) as usize,
        answer_ttl: TTL,
        answers_per_peer: 100_000,
        answers_total: 1 << 20,
        answer_bytes: 1 << 26,
        ..Config::default()
    };
    let t_retry = cfg.retry_every;
    let mut ends = [
        Endpoint::<u8>::new(cfg.clone()),
        Endpoint::<u8>::new(cfg.clone()),
    ];
    let mut models = [Model::default(), Model::default()];
    // Peer 0 of each end is the other end; 1 and 2 are silent sinks.
    let mut flight: Vec<(usize, Vec<u8>)> = Vec::new();
    let t0 = Instant::now() + Duration::from_secs(3600);
    let mut now = t0;
    let mut clock = t0; // the latest time given, which the machines keep
    ends[0].handle_timeout(t0);
    ends[1].handle_timeout(t0);
    let mut forgotten_at: [HashMap<u8, Instant>; 2] = Default::default();
    let mut counter = 0u32;

    let step = |ends: &mut [Endpoint<u8>; 2],
                models: &mut [Model; 2],
                flight: &mut Vec<(usize, Vec<u8>)>| {
        for i in 0..2 {
            while let Some(t) = ends[i].poll_transmit() {
                let k = t.bytes[0] >> 3;
                if !chinwag_proto::rooms::is_answer(k) {
                    let seq = u16::from_be_bytes([t.bytes[2], t.bytes[3]]);
                    let o = models[i]
                        .outstanding
                        .get_mut(&(t.to, seq))
                        .expect("a request on the wire is outstanding");
                    assert_eq!(o.0, t.bytes, "the same bytes every time");
                    o.1 += 1;
                    assert!(o.1 <= cfg.tries, "more than M sends");
                }
                if t.to == 0 {
                    flight.push((1 - i, t.bytes));
                }
            }
            while let Some(Event::Unanswered { to, seq, .. }) = ends[i].poll_event() {
                let o = models[i]
                    .outstanding
                    .remove(&(to, seq))
                    .expect("a give-up for an outstanding message");
                assert_eq!(o.1, cfg.tries, "a give-up only after M sends");
            }
            for p in 0..3u8 {
                assert!(ends[i].outstanding(p) <= cfg.outstanding_per_peer);
                let model = models[i].outstanding.keys().filter(|k| k.0 == p).count();
                assert_eq!(ends[i].outstanding(p), model);
            }
            let (n, bytes) = ends[i].remembered();
            assert!(n <= cfg.answers_total && bytes <= cfg.answer_bytes);
        }
    };

    while let Some(op) = input.byte() {
        let i = (op & 1) as usize;
        match op >> 1 {
            // Send a text (or another request) to peer 0, 1 or 2.
            0..=24 => {
                let p = input.byte().unwrap_or(0) % 3;
                counter += 1;
                let body = match op % 3 {
                    0 => Body::Text {
                        chat: format!("t{counter}"),
                    },
                    1 => Body::ListRooms,
                    _ => Body::Invitation {
                        from: "x".into(),
                        mode: chinwag_proto::rooms::Mode::Centralised,
                        room: format!("r{counter}"),
                    },
                };
                let bytes_of = |seq| {
                    Message {
                        user: 9,
                        seq,
                        body: body.clone(),
                    }
                    .to_bytes()
                };
                match ends[i].send(now, p, 9, body.clone()) {
                    Ok(seq) => {
                        assert!(models[i]
                            .outstanding
                            .insert((p, seq), (bytes_of(seq), 0))
                            .is_none());
                    }
                    Err(SendError::Busy) => {
                        assert_eq!(ends[i].outstanding(p), cfg.outstanding_per_peer)
                    }
                    Err(SendError::NotARequest) => unreachable!(),
                }
            }
            // Time passes (and now and then goes back a little).
            25..=60 => {
                let d = Duration::from_millis(input.byte().unwrap_or(0) as u64 * 7);
                if op % 5 == 0 {
                    now = now.checked_sub(d).unwrap_or(now);
                } else {
                    now += d;
                }
                clock = clock.max(now);
                ends[0].handle_timeout(now);
                ends[1].handle_timeout(now);
            }
            // Deliver (or duplicate, or drop) a datagram in flight.
            61..=100 => {
                if flight.is_empty() {
                    continue;
                }
                let k = input.byte().unwrap_or(0) as usize % flight.len();
                let (to, bytes) = if op % 7 == 0 {
                    flight[k].clone()
                } else {
                    flight.swap_remove(k)
                };
                if op % 11 == 0 {
                    continue; // lost
                }
                deliver(
                    &mut ends,
                    &mut models,
                    to,
                    0,
                    &bytes,
                    now,
                    clock,
                    &forgotten_at,
                    op,
                );
            }
            // A forged or garbage datagram from any peer.
            101..=110 => {
                let from = input.byte().unwrap_or(0) % 3;
                let n = input.byte().unwrap_or(0) as usize % 64;
                let bytes = input.take(n).to_vec();
                deliver(
                    &mut ends,
                    &mut models,
                    i,
                    from,
                    &bytes,
                    now,
                    clock,
                    &forgotten_at,
                    op,
                );
            }
            // Answer a request held back.
            111..=120 => {
                if let Some((p, m)) = models[i].pending.pop() {
                    ends[i].answer(now, p, &answer_to(&m, SERVER));
                }
            }
            // Forget a peer; or cancel a message.
            121..=124 => {
                let p = input.byte().unwrap_or(0) % 3;
                ends[i].forget(p);
                models[i].outstanding.retain(|k, _| k.0 != p);
                models[i].pending.retain(|x| x.0 != p);
                forgotten_at[i].insert(p, clock);
            }
            _ => {
                let p = input.byte().unwrap_or(0) % 3;
                let Some(&(_, seq)) = models[i].outstanding.keys().find(|k| k.0 == p) else {
                    continue;
                };
                assert!(ends[i].cancel(p, seq));
                models[i].outstanding.remove(&(p, seq));
            }
        }
        step(&mut ends, &mut models, &mut flight);
    }
    // Let time run out: nothing may stay outstanding.
    now = clock + t_retry * (cfg.tries + 2);
    for _ in 0..(cfg.tries + 3) {
        ends[0].handle_timeout(now);
        ends[1].handle_timeout(now);
        step(&mut ends, &mut models, &mut flight);
        now += t_retry;
    }
    for i in 0..2 {
        assert!(models[i].outstanding.is_empty(), "left in flight");
        for p in 0..3u8 {
            assert_eq!(ends[i].outstanding(p), 0);
        }
    }
});

#[allow(clippy::too_many_arguments)]
fn deliver(
    ends: &mut [Endpoint<u8>; 2],
    models: &mut [Model; 2],
    to: usize,
    from: u8,
    bytes: &[u8],
    now: Instant,
    clock: Instant,
    forgotten_at: &[HashMap<u8, Instant>; 2],
    op: u8,
) {
    match ends[to].receive(now, from, bytes) {
        Incoming::Request(m) => {
            executed(&mut models[to], from, bytes, clock, &forgotten_at[to]);
            if op % 3 == 0 {
                models[to].pending.push((from, m));
            } else {
                ends[to].answer(now, from, &answer_to(&m, SERVER));
            }
        }
        Incoming::Unreadable { .. } => {
            executed(&mut models[to], from, bytes, clock, &forgotten_at[to]);
        }
        Incoming::Answer { request, message } => {
            let o = models[to]
                .outstanding
                .remove(&(from, message.seq))
                .expect("an answer settles an outstanding message");
            assert_eq!(o.0[0] >> 3, request);
            assert!(o.1 >= 1, "answered before it was sent");
        }
        Incoming::Duplicate { .. } | Incoming::Stray(_) | Incoming::Junk(_) => {}
    }
}

/// A request executed: never twice for one set of copies, unless its peer
/// was forgotten or the first execution has aged out since.
fn executed(
    m: &mut Model,
    from: u8,
    bytes: &[u8],
    clock: Instant,
    forgotten: &HashMap<u8, Instant>,
) {
    let key = (from, bytes.to_vec());
    if let Some(first) = m.executed.get(&key) {
        let reset = forgotten.get(&from).is_some_and(|f| *f >= *first);
        assert!(
            reset || clock >= *first + TTL,
            "a request executed twice within its answer's lifetime"
        );
    }
    m.executed.insert(key, clock);
}
