//! Private connections: pending requests, issued connect ids and live relays.
//! Owns the single-use, expiring, address-bound rules for connect ids. It
//! holds relay sockets only to hand them between the two ends and to let
//! CLOSE_CONNECTION shut them; it never reads or writes them.

use std::collections::HashMap;
use std::net::{IpAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, SendError, Sender};

use super::Refusal;

/// What a LOGIN_PRIVATE gets from the hub.
pub enum RelayJoin {
    /// First end: wait on `rx` for the second end's socket until `deadline`,
    /// and by then the second end has already written ESTABLISHED on both.
    /// `woken` hangs up (poll(2) reports POLLHUP, a read returns 0) once
    /// the hub lets go of this end: the hand-over is then in `rx`, or the
    /// id was cancelled (`rx` disconnected). So the end's thread can wait
    /// on its own client's socket and on the hub at once.
    First {
        rx: Receiver<Arc<TcpStream>>,
        woken: UnixStream,
        deadline: Instant,
    },
    /// Second end: write ESTABLISHED to `other` and to yourself, then send
    /// your own socket through `notify` and start pumping.
    Second {
        other: Arc<TcpStream>,
        notify: Handover,
    },
    /// The id was never issued, or was already used.
    Unknown,
    Expired,
    /// The connection comes from an address neither user is connected from.
    WrongAddress,
    /// Too many relays at once.
    Full,
}

struct Waiting {
    stream: Arc<TcpStream>,
    notify: Handover,
}

/// The second end's way to the waiting first end: its socket through the
/// channel, then the wake-up socket closed (dropped with the hand-over,
/// also when the id is cancelled and nothing is sent).
pub struct Handover {
    tx: Sender<Arc<TcpStream>>,
    _wake: UnixStream,
}

impl Handover {
    /// Give the waiting end `stream` and wake it.
    pub fn send(self, stream: Arc<TcpStream>) -> Result<(), SendError<Arc<TcpStream>>> {
        self.tx.send(stream)
    }
}

struct Ticket {
    users: [String; 2],
    ips: [IpAddr; 2],
    expires: Instant,
    waiting: Option<Waiting>,
}

struct Relay {
    users: [String; 2],
    ends: Vec<Arc<TcpStream>>,
    halves_done: u8,
}

/// Sockets of a relay torn down by CLOSE_CONNECTION, for the caller to shut.
#[derive(Debug)]
pub struct CloseOutcome {
    pub sockets: Vec<Arc<TcpStream>>,
}

#[derive(Default)]
pub(super) struct Private {
    /// (requester, target) -> expiry.
    requests: HashMap<(String, String), Instant>,
    tickets: HashMap<i64, Ticket>,
    relays: HashMap<i64, Relay>,
    /// Relays that ended by themselves (both directions closed), remembered
    /// until the expiry given: a CLOSE_CONNECTION racing that ending is
    /// still confirmed to both users.
    ended: HashMap<i64, ([String; 2], Instant)>,
    /// Cluster mode: the address of a requester of another node, per
    /// pending request (its stand-in has none).
    remote_ips: HashMap<(String, String), IpAddr>,
    /// Cluster mode: this node's `node_index`, the top byte of every
    /// connect id it issues (docs/scaling.md).
    pub(super) node_index: Option<u8>,
}

/// Ended relays remembered at most, whatever their expiry.
const ENDED_KEPT: usize = 4096;

fn pair_matches(users: &[String; 2], a: &str, b: &str) -> bool {
    (users[0] == a && users[1] == b) || (users[0] == b && users[1] == a)
}

impl Private {
    pub(super) fn add_request(
        &mut self,
        now: Instant,
        requester: &str,
        target: &str,
        expires: Instant,
        max_per_user: usize,
    ) -> Result<(), Refusal> {
        let key = (requester.to_owned(), target.to_owned());
        if !self.requests.contains_key(&key) {
            let mine = self
                .requests
                .iter()
                .filter(|((r, _), exp)| r == requester && **exp > now)
                .count();
            if mine >= max_per_user {
                return Err(Refusal::Limit);
            }
        }
        self.requests.insert(key, expires);
        Ok(())
    }

    /// The address a requester of another node connects from, remembered
    /// with its pending request.
    pub(super) fn set_remote_ip(&mut self, requester: &str, target: &str, ip: IpAddr) {
        self.remote_ips
            .insert((requester.to_owned(), target.to_owned()), ip);
    }

    /// What [`Private::set_remote_ip`] kept for this request, taken.
    pub(super) fn take_remote_ip(&mut self, requester: &str, target: &str) -> Option<IpAddr> {
        self.remote_ips
            .remove(&(requester.to_owned(), target.to_owned()))
    }

    /// Remove a live pending request; false if there is none.
    pub(super) fn take_request(&mut self, now: Instant, requester: &str, target: &str) -> bool {
        match self
            .requests
            .remove(&(requester.to_owned(), target.to_owned()))
        {
            Some(exp) => exp > now,
            None => false,
        }
    }

    pub(super) fn ticket_count(&self) -> usize {
        self.tickets.len()
    }

    pub(super) fn issue_id(
        &mut self,
        requester: &str,
        target: &str,
        ips: [IpAddr; 2],
        expires: Instant,
    ) -> i64 {
        let id = loop {
            // 64 random bits: ids cannot be guessed, and never repeat a live one.
            let mut id: i64 = rand::random();
            if let Some(index) = self.node_index {
                // The top byte names this node; 56 random bits remain.
                id = ((u64::from(index) << 56) | (id as u64 & ((1 << 56) - 1))) as i64;
            }
            if !self.tickets.contains_key(&id) && !self.relays.contains_key(&id) {
                break id;
            }
        };
        self.tickets.insert(
            id,
            Ticket {
                users: [requester.to_owned(), target.to_owned()],
                ips,
                expires,
                waiting: None,
            },
        );
        id
    }

    pub(super) fn join(
        &mut self,
        now: Instant,
        id: i64,
        ip: IpAddr,
        stream: Arc<TcpStream>,
        max_relays: usize,
    ) -> RelayJoin {
        let Some(ticket) = self.tickets.get_mut(&id) else {
            return RelayJoin::Unknown;
        };
        if ticket.expires <= now {
            self.tickets.remove(&id);
            return RelayJoin::Expired;
        }
        if !ticket.ips.contains(&ip) {
            return RelayJoin::WrongAddress;
        }
        if ticket.waiting.is_none() {
            let waiting = self
                .tickets
                .values()
                .filter(|t| t.waiting.is_some())
                .count();
            if self.relays.len() + waiting >= max_relays {
                return RelayJoin::Full;
            }
            // Two descriptors per waiting end, closed with it.
            let Ok((wake, woken)) = UnixStream::pair() else {
                return RelayJoin::Full;
            };
            let ticket = self.tickets.get_mut(&id).expect("checked above");
            let (tx, rx) = bounded(1);
            let notify = Handover { tx, _wake: wake };
            ticket.waiting = Some(Waiting { stream, notify });
            return RelayJoin::First {
                rx,
                woken,
                deadline: ticket.expires,
            };
        }
        let ticket = self.tickets.remove(&id).expect("checked above");
        let waiting = ticket.waiting.expect("checked above");
        // Keep handles to both ends so CLOSE_CONNECTION can shut them.
        let ends = vec![waiting.stream.clone(), stream];
        self.relays.insert(
            id,
            Relay {
                users: ticket.users,
                ends,
                halves_done: 0,
            },
        );
        RelayJoin::Second {
            other: waiting.stream,
            notify: waiting.notify,
        }
    }

    pub(super) fn abandon(&mut self, id: i64) -> bool {
        match self.tickets.get(&id) {
            Some(t) if t.waiting.is_some() => {
                self.tickets.remove(&id);
                true
            }
            _ => false,
        }
    }

    /// The waiting first end of `id` on `stream` lost its client: forget
    /// that end (its slot is free) and keep the id for its users until it
    /// expires. False if `stream` no longer waits there (the second end
    /// took it, or the id is gone).
    pub(super) fn leave(&mut self, id: i64, stream: &Arc<TcpStream>) -> bool {
        match self.tickets.get_mut(&id) {
            Some(t)
                if t.waiting
                    .as_ref()
                    .is_some_and(|w| Arc::ptr_eq(&w.stream, stream)) =>
            {
                t.waiting = None;
                true
            }
            _ => false,
        }
    }

    pub(super) fn half_done(&mut self, id: i64, remember_until: Instant) {
        if let Some(r) = self.relays.get_mut(&id) {
            r.halves_done += 1;
            if r.halves_done >= 2 {
                let relay = self.relays.remove(&id).expect("just seen");
                if self.ended.len() < ENDED_KEPT {
                    self.ended.insert(id, (relay.users, remember_until));
                }
            }
        }
    }

    /// Relays running and first ends waiting: what `max_relays` bounds.
    pub(super) fn in_use(&self) -> usize {
        self.relays.len()
            + self
                .tickets
                .values()
                .filter(|t| t.waiting.is_some())
                .count()
    }

    pub(super) fn relay_count(&self) -> usize {
        self.relays.len()
    }

    pub(super) fn close(
        &mut self,
        id: i64,
        requester: &str,
        target: &str,
    ) -> Result<CloseOutcome, Refusal> {
        if self
            .relays
            .get(&id)
            .is_some_and(|r| pair_matches(&r.users, requester, target))
        {
            let relay = self.relays.remove(&id).expect("checked above");
            return Ok(CloseOutcome {
                sockets: relay.ends,
            });
        }
        if self
            .tickets
            .get(&id)
            .is_some_and(|t| pair_matches(&t.users, requester, target))
        {
            let ticket = self.tickets.remove(&id).expect("checked above");
            let sockets = ticket.waiting.map(|w| vec![w.stream]).unwrap_or_default();
            return Ok(CloseOutcome { sockets });
        }
        if self
            .ended
            .get(&id)
            .is_some_and(|(users, _)| pair_matches(users, requester, target))
        {
            self.ended.remove(&id);
            return Ok(CloseOutcome {
                sockets: Vec::new(),
            });
        }
        Err(Refusal::NotPending)
    }

    /// `name`'s chat session ended: its pending requests go, and so does
    /// every connect id issued to it and not yet established, so the
    /// partner's end (waiting, or yet to come) never waits for it. A
    /// waiting end's thread wakes at once (its hand-over channel
    /// disconnects) and closes that end. Returns the waiting ends released.
    pub(super) fn forget_user(&mut self, name: &str) -> usize {
        self.requests.retain(|(r, t), _| r != name && t != name);
        self.remote_ips.retain(|(r, t), _| r != name && t != name);
        let mut released = 0;
        self.tickets.retain(|_, t| {
            let keep = !t.users.iter().any(|u| u == name);
            if !keep && t.waiting.is_some() {
                released += 1;
            }
            keep
        });
        released
    }

    pub(super) fn sweep(&mut self, now: Instant) {
        self.requests.retain(|_, exp| *exp > now);
        let requests = &self.requests;
        self.remote_ips.retain(|k, _| requests.contains_key(k));
        self.ended.retain(|_, (_, until)| *until > now);
        // A waiting first end watches its own deadline; only idle tickets go here.
        self.tickets
            .retain(|_, t| t.expires > now || t.waiting.is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};
    use std::time::Duration;

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const TTL: Duration = Duration::from_secs(10);

    fn pair(a: &str, b: &str) -> [String; 2] {
        [a.to_owned(), b.to_owned()]
    }

    #[test]
    fn requests_count_per_requester_and_live_until_their_expiry() {
        let mut p = Private::default();
        let t0 = Instant::now();
        p.add_request(t0, "a", "b", t0 + TTL, 2).unwrap();
        p.add_request(t0, "a", "c", t0 + TTL, 2).unwrap();
        assert_eq!(
            p.add_request(t0, "a", "d", t0 + TTL, 2),
            Err(Refusal::Limit)
        );
        // Someone else's requests do not count against a.
        p.add_request(t0, "x", "b", t0 + TTL, 2).unwrap();
        // At their expiry a's requests stop counting, and cannot be taken.
        p.add_request(t0 + TTL, "a", "d", t0 + 2 * TTL, 2).unwrap();
        assert!(!p.take_request(t0 + TTL, "a", "b"));
        assert!(p.take_request(t0 + TTL - Duration::from_millis(1), "x", "b"));
    }

    #[test]
    fn the_sweep_drops_what_expired_and_keeps_the_rest() {
        let mut p = Private::default();
        let t0 = Instant::now();
        p.add_request(t0, "a", "b", t0 + TTL, 16).unwrap();
        p.add_request(t0, "c", "d", t0 + 2 * TTL, 16).unwrap();
        p.issue_id("a", "b", [IP, IP], t0 + TTL);
        let waiting = p.issue_id("c", "d", [IP, IP], t0 + 2 * TTL);
        p.ended.insert(1, (pair("a", "b"), t0 + TTL));
        p.ended.insert(2, (pair("c", "d"), t0 + 2 * TTL));
        // Exactly at the first expiry, the first of each is gone.
        p.sweep(t0 + TTL);
        assert_eq!(
            (p.requests.len(), p.tickets.len(), p.ended.len()),
            (1, 1, 1)
        );
        // A first end waiting on its ticket watches its own deadline: the
        // sweep leaves that ticket alone even after it expired.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = Arc::new(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap());
        assert!(matches!(
            p.join(t0, waiting, IP, s, 10),
            RelayJoin::First { .. }
        ));
        p.sweep(t0 + 3 * TTL);
        assert_eq!(
            (p.requests.len(), p.tickets.len(), p.ended.len()),
            (0, 1, 0)
        );
    }

    #[test]
    fn a_relay_ends_with_its_second_direction_and_ended_ones_are_bounded() {
        let mut p = Private::default();
        let until = Instant::now() + TTL;
        for id in 0..=ENDED_KEPT as i64 {
            p.relays.insert(
                id,
                Relay {
                    users: pair("a", "b"),
                    ends: Vec::new(),
                    halves_done: 0,
                },
            );
            p.half_done(id, until);
            assert_eq!(p.relay_count(), 1, "one direction still pumps");
            p.half_done(id, until);
            assert_eq!(p.relay_count(), 0);
        }
        assert_eq!(p.ended.len(), ENDED_KEPT);
        assert!(p.close(ENDED_KEPT as i64 - 1, "a", "b").is_ok());
        assert_eq!(
            p.close(ENDED_KEPT as i64, "b", "a").unwrap_err(),
            Refusal::NotPending,
            "past the bound, not remembered"
        );
    }

    fn socket(l: &TcpListener) -> Arc<TcpStream> {
        Arc::new(TcpStream::connect(l.local_addr().unwrap()).unwrap())
    }

    #[test]
    fn a_user_leaving_cancels_its_unestablished_ids_and_frees_the_waiting_slot_at_once() {
        use crossbeam_channel::TryRecvError;
        let mut p = Private::default();
        let t0 = Instant::now();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let waited = p.issue_id("a", "b", [IP, IP], t0 + TTL);
        let unused = p.issue_id("b", "c", [IP, IP], t0 + TTL);
        let others = p.issue_id("c", "d", [IP, IP], t0 + TTL);
        let RelayJoin::First { rx, .. } = p.join(t0, waited, IP, socket(&l), 1) else {
            panic!("first end")
        };
        assert_eq!(p.in_use(), 1);
        assert!(
            matches!(p.join(t0, others, IP, socket(&l), 1), RelayJoin::Full),
            "max_relays 1 is taken by the waiting end"
        );
        // A user of neither pair leaving changes nothing.
        assert_eq!(p.forget_user("z"), 0);
        assert_eq!(p.in_use(), 1);
        // b will never come: a's waiting end is released (its thread sees
        // the hand-over channel disconnect), and b's unused id goes too.
        assert_eq!(p.forget_user("b"), 1);
        assert_eq!(p.in_use(), 0);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)));
        assert!(matches!(
            p.join(t0, unused, IP, socket(&l), 1),
            RelayJoin::Unknown
        ));
        // The slot is back at once for another pair.
        assert!(matches!(
            p.join(t0, others, IP, socket(&l), 1),
            RelayJoin::First { .. }
        ));
        assert!(matches!(
            p.join(t0, others, IP, socket(&l), 1),
            RelayJoin::Second { .. }
        ));
        // An established relay outlives its users' chat sessions.
        assert_eq!(p.forget_user("c"), 0);
        assert_eq!((p.relay_count(), p.in_use()), (1, 1));
    }

    #[test]
    fn a_waiting_end_that_leaves_frees_its_slot_and_keeps_the_id() {
        use std::io::Read;
        let mut p = Private::default();
        let t0 = Instant::now();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let id = p.issue_id("a", "b", [IP, IP], t0 + TTL);
        let (gone, stranger) = (socket(&l), socket(&l));
        let RelayJoin::First { rx, mut woken, .. } = p.join(t0, id, IP, gone.clone(), 1) else {
            panic!("first end")
        };
        // Only the end waiting there may leave it.
        assert!(!p.leave(id, &stranger));
        assert!(!p.leave(id ^ 1, &gone));
        assert_eq!(p.in_use(), 1);
        assert!(p.leave(id, &gone));
        assert_eq!(p.in_use(), 0);
        // Its waiting thread would see the hub let go (a hang-up, nothing
        // handed over), but it left already; the id stays for its users.
        assert_eq!(woken.read(&mut [0u8; 1]).unwrap(), 0);
        assert!(rx.try_recv().is_err());
        let RelayJoin::First { .. } = p.join(t0, id, IP, socket(&l), 1) else {
            panic!("the id is still valid")
        };
        let RelayJoin::Second { notify, .. } = p.join(t0, id, IP, socket(&l), 1) else {
            panic!("second end")
        };
        assert!(!p.leave(id, &gone), "established: nothing to leave");
        drop(notify);
    }

    #[test]
    fn in_cluster_mode_connect_ids_name_their_node_in_the_top_byte() {
        let mut p = Private::default();
        let until = Instant::now() + TTL;
        let free: Vec<i64> = (0..64)
            .map(|_| p.issue_id("a", "b", [IP, IP], until))
            .collect();
        assert!(free.iter().any(|id| (*id as u64 >> 56) != 0xab));
        p.node_index = Some(0xab);
        let mut low = 0u64;
        for _ in 0..64 {
            let id = p.issue_id("a", "b", [IP, IP], until) as u64;
            assert_eq!(id >> 56, 0xab);
            low |= id & ((1 << 56) - 1);
        }
        assert!(low >> 50 != 0, "the other 56 bits stay random");
    }

    #[test]
    fn only_the_two_users_of_a_pair_match_it() {
        let users = pair("a", "b");
        assert!(pair_matches(&users, "a", "b"));
        assert!(pair_matches(&users, "b", "a"));
        for (x, y) in [
            ("a", "c"),
            ("c", "b"),
            ("b", "c"),
            ("c", "a"),
            ("a", "a"),
            ("b", "b"),
        ] {
            assert!(!pair_matches(&users, x, y), "{x}, {y}");
        }
    }
}
