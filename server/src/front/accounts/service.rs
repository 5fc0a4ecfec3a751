//! Accounts policy: registration, password login, friends, stored messages,
//! history, guests' mail, and the accounts side of calls (the call model
//! itself is the hub's). Online names come from the shared hub; rows live in
//! the store. Replies that depend on a row are sent from the store thread
//! after the row's commit, in the order the requests arrived.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chinwag_proto::accounts::{self as wire, code, Frame, HistoryEntry};
use crossbeam_channel::{bounded, Sender};
use parking_lot::{Condvar, Mutex, RwLock};

use super::limits::{Attempt, Counters, LoginLimits, Outcome, Verdict, LOGIN_RULES};
use super::password;
use crate::hub::{self, names, Dialect, Event, Hub, LoginError, Media, Peer, Session};
use crate::metrics::{DropReason, LoginOutcome};
use crate::net::Outbound;
use crate::store::{After, CreateError, Store};

/// Password hashes computed at once; the rest queue, so a burst of logins
/// uses at most this much memory and CPU.
pub const HASHES_AT_ONCE: usize = 2;
/// Logins waiting for a hashing slot; beyond this they fail at once.
const HASH_QUEUE: usize = 256;
/// The registration window, and counters kept at most (expired windows are
/// dropped first, then the oldest).
const REGISTRATION_WINDOW: Duration = Duration::from_secs(60);
const MAX_TRACKED: usize = 100_000;
/// How long a login waits for attempts in flight from its address (or to
/// its account) to finish before it is answered "failed".
const LOGIN_TURN_WAIT: Duration = Duration::from_secs(10);
pub const MIN_PASSWORD: usize = 8;

type HashJob = Box<dyn FnOnce() + Send>;

/// The only threads that run Argon2id. Each keeps one 19 MiB working memory
/// (see `password`) while it has work queued, so hashing costs at most
/// `HASHES_AT_ONCE` × 19 MiB whatever the load and nothing when idle, and a
/// burst queues (bounded) instead of using more memory or CPU.
struct Hashers {
    tx: Option<Sender<HashJob>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Hashers {
    /// Close the queue and wait for the threads: an accounts service that
    /// goes away leaves no thread behind.
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Hashers {
    fn new() -> Hashers {
        password::keep_big_blocks_out_of_the_heap();
        let (tx, rx) = bounded::<HashJob>(HASH_QUEUE);
        let mut threads = Vec::new();
        for i in 0..HASHES_AT_ONCE {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("cw-hash-{i}"))
                .spawn(move || {
                    for job in rx.iter() {
                        job();
                        if rx.is_empty() {
                            password::release_memory();
                        }
                    }
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => log::error!("cannot start a hashing thread: {e}"),
            }
        }
        Hashers {
            tx: Some(tx),
            threads,
        }
    }

    /// Run `f` on a hashing thread and wait for it; None when the queue is
    /// full (the caller answers "busy") or the hashers are gone.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = bounded(1);
        self.tx
            .as_ref()?
            .try_send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .ok()?;
        rx.recv().ok()
    }
}

/// One logged-in account.
pub struct Member {
    pub id: u64,
    pub pseudo: String,
    pub ip: IpAddr,
    pub out: Arc<Outbound>,
    pub session: Arc<Session>,
    /// Set by the store thread once offline items were flushed to it; until
    /// then new items are stored as undelivered and the flush carries them.
    flushed: AtomicBool,
    /// Feature bits granted at HELLO (`wire::feature`): with STAMPS, 151
    /// and 161 carry stored times.
    features: u32,
    /// Store jobs of this member not yet answered (bounded by
    /// `JOBS_PER_MEMBER`), and a signal each time one is.
    pending: Mutex<usize>,
    answered: Condvar,
}

/// One member's store jobs not yet answered at most: past that its own
/// connection stops reading until one is, so one user can neither fill the
/// store's queue nor delay everyone else's commits by much.
const JOBS_PER_MEMBER: usize = 32;
/// Longest a member's connection waits for its own earlier jobs.
const MEMBER_WAIT: Duration = Duration::from_secs(10);

/// Counts one store job against its member until dropped (after the job's
/// answer is queued, or when a panic unwinds it).
struct Pending(Arc<Member>);

impl Drop for Pending {
    fn drop(&mut self) {
        let mut n = self.0.pending.lock();
        *n = n.saturating_sub(1);
        drop(n);
        self.0.answered.notify_all();
    }
}

impl Member {
    /// Wait (at most `MEMBER_WAIT`) until fewer than `limit` of this
    /// member's jobs are unanswered.
    fn wait_below(&self, limit: usize) {
        let deadline = Instant::now() + MEMBER_WAIT;
        let mut n = self.pending.lock();
        while *n >= limit.max(1) {
            if self.answered.wait_until(&mut n, deadline).timed_out() {
                log::warn!("accounts: {}'s store jobs are slow to finish", self.pseudo);
                return;
            }
        }
    }

    fn track(self: &Arc<Self>) -> Pending {
        *self.pending.lock() += 1;
        Pending(self.clone())
    }
}

impl Member {
    pub fn send(&self, f: &Frame) {
        self.out.enqueue(|b| f.encode(b));
    }

    /// The feature bits granted to this member's connection.
    pub fn features(&self) -> u32 {
        self.features
    }

    fn stamps(&self) -> bool {
        self.features & wire::feature::STAMPS != 0
    }

    /// 151 as this connection asked for it: with the stored time or without.
    fn message(&self, pseudo: String, text: String, stamp: u64) -> Frame {
        message_frame(self.features, pseudo, text, stamp)
    }
}

/// Undelivered guest texts kept per account (docs/bridging.md); past this
/// a guest's text to an offline account is dropped and counted.
pub const GUEST_MAIL_PER_ACCOUNT: usize = 100;

/// What the hub tells an accounts session: guests' private texts (151) and
/// the calls of the hub's call model (143, 141, 142, 147). Texts between
/// accounts do not come this way: the service sends them after their commit.
struct AccountsPeer {
    out: Arc<Outbound>,
    /// With STAMPS, 151 carries the time (here: of delivery).
    features: u32,
}

impl Peer for AccountsPeer {
    fn deliver(&self, event: &Event<'_>) -> bool {
        let frame = match *event {
            Event::PrivateMessage { from, text, .. } => message_frame(
                self.features,
                from.into(),
                text.into(),
                crate::store::now_secs().max(0) as u64,
            ),
            Event::CallOffer { from, host, port } => Frame::IncomingCall {
                pseudo: from.into(),
                addr: host.into(),
                port,
            },
            Event::CallAnswered { by, host, port } => Frame::CallAccepted {
                pseudo: by.into(),
                addr: host.into(),
                port,
            },
            Event::CallRefused { by } => Frame::CallFailed { pseudo: by.into() },
            Event::CallEnded { by } => Frame::HungUp { pseudo: by.into() },
            // No public room, presence, rooms or chatos connections here.
            _ => return true,
        };
        self.out.enqueue(|b| frame.encode(b))
    }

    fn disconnect(&self) {
        self.out.disconnect();
    }
}

/// 151 as a connection with `features` asked for it: with the stored time
/// or without.
fn message_frame(features: u32, pseudo: String, text: String, stamp: u64) -> Frame {
    if features & wire::feature::STAMPS != 0 {
        Frame::StampedMessage {
            pseudo,
            text,
            stamp,
        }
    } else {
        Frame::Message { pseudo, text }
    }
}

#[derive(Default)]
struct Members {
    by_id: HashMap<u64, Arc<Member>>,
    by_name: HashMap<String, Arc<Member>>,
}

/// What waited in the store for a member, taken (marked delivered) by the
/// job that read it: sent once that job has committed.
struct Waiting {
    requests: Vec<String>,
    notices: Vec<crate::store::Notice>,
    messages: Vec<crate::store::Undelivered>,
    guests: Vec<crate::store::Undelivered>,
}

impl Waiting {
    /// Take what waits for `m` (store thread). From here on, new items for
    /// it are delivered live.
    fn take(db: &crate::store::Db, m: &Member) -> Waiting {
        let w = Waiting {
            requests: db.take_unnotified_requests(m.id),
            notices: db.take_notices(m.id),
            messages: db.take_undelivered(m.id),
            guests: db.take_guest_mail(m.id),
        };
        m.flushed.store(true, Ordering::Release);
        w
    }

    fn send(self, m: &Member) {
        for p in self.requests {
            m.send(&Frame::FriendRequested { pseudo: p });
        }
        for n in self.notices {
            let f = if n.code == code::FRIEND_ACCEPTED {
                Frame::FriendAccepted { pseudo: n.pseudo }
            } else {
                Frame::FriendRefused { pseudo: n.pseudo }
            };
            m.send(&f);
        }
        for u in self.messages.into_iter().chain(self.guests) {
            m.send(&m.message(u.from, u.text, u.sent));
        }
    }
}

pub struct Accounts {
    hub: Arc<Hub>,
    store: Store,
    /// Registered pseudos by skeleton (`hub::names::skeletons`): a name that
    /// looks like a registered one is reserved as that one is. A
    /// registration claims its skeleton on the store thread before its
    /// insert, so two look-alikes racing cannot both be registered.
    registered: Arc<RwLock<HashMap<String, String>>>,
    members: RwLock<Members>,
    hashers: Hashers,
    /// Registrations per address.
    registrations: Mutex<Counters>,
    /// Password logins in flight and failed, per address and per account.
    logins: Mutex<LoginLimits>,
    /// Signalled each time a login attempt finishes.
    login_turn: Condvar,
    /// Verified against when the email is unknown, so both failures cost the same.
    dummy_hash: String,
    /// Registrations one IP address may make per window.
    registrations_per_minute: u32,
}

/// Loose but useful email check: one '@', something on each side, a dot in
/// the domain, no spaces or control characters.
pub fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && e.len() <= wire::MAX_EMAIL
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub fn valid_pseudo(p: &str) -> bool {
    hub::valid_name(p) && p.len() <= wire::MAX_PSEUDO
}

impl Accounts {
    pub fn new(hub: Arc<Hub>, store: Store, registrations_per_minute: u32) -> Arc<Self> {
        let pseudos = store.call(|db| db.all_pseudos()).unwrap_or_default();
        let registered = Arc::new(RwLock::new(
            pseudos
                .into_iter()
                .flat_map(|p| names::skeletons(&p).map(|k| (k, p.clone())))
                .collect::<HashMap<_, _>>(),
        ));
        let check = registered.clone();
        hub.set_reserved_names(Arc::new(move |name: &str| {
            let r = check.read();
            names::skeletons(name).iter().any(|k| r.contains_key(k))
        }));
        let hashers = Hashers::new();
        // One per process: it only has to cost what a real verification does.
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let dummy_hash = match DUMMY.get() {
            Some(h) => h.clone(),
            None => {
                let h = hashers
                    .run(|| password::hash("not a real password"))
                    .and_then(Result::ok)
                    .expect("hashing a constant on a fresh hashing thread");
                DUMMY.get_or_init(|| h).clone()
            }
        };
        let accounts = Arc::new(Accounts {
            hub,
            store,
            registered,
            members: RwLock::new(Members::default()),
            hashers,
            registrations: Mutex::new(Counters::new(REGISTRATION_WINDOW, MAX_TRACKED)),
            logins: Mutex::new(LoginLimits::new(LOGIN_RULES)),
            login_turn: Condvar::new(),
            dummy_hash,
            registrations_per_minute,
        });
        let weak = Arc::downgrade(&accounts);
        accounts
            .hub
            .set_mailbox(Arc::new(move |from: &str, to: &str, text: &str| {
                weak.upgrade().is_some_and(|a| a.guest_mail(from, to, text))
            }));
        accounts
    }

    /// A guest's private text for `to`, not online: kept for its next login
    /// when `to` is a registered account with room for it (docs/bridging.md).
    /// Returns whether it was taken (the store may still fail it).
    fn guest_mail(self: &Arc<Self>, from: &str, to: &str, text: &str) -> bool {
        let registered = {
            let r = self.registered.read();
            names::skeletons(to)
                .iter()
                .any(|k| r.get(k).is_some_and(|p| p == to))
        };
        if !registered {
            return false;
        }
        let this = self.clone();
        let (from, to, text) = (from.to_owned(), to.to_owned(), text.to_owned());
        let queued = self.store.submit(move |db| {
            let target = db.account_id(&to)?;
            // Logged in meanwhile: its offline items are already flushed.
            if let Some(m) = this.live(target) {
                return Some(Box::new(move |_| {
                    m.send(&m.message(from, text, crate::store::now_secs().max(0) as u64));
                }));
            }
            let sent = crate::store::now_secs();
            if !db.add_guest_mail(target, &from, &text, sent, GUEST_MAIL_PER_ACCOUNT) {
                let metrics = this.hub.metrics().clone();
                return Some(Box::new(move |_| {
                    metrics.dropped(DropReason::GuestMailFull);
                    log::debug!("accounts: a guest's text for {to} dropped (mailbox full)");
                }));
            }
            // Cluster mode: `to` may be online on another node this node
            // does not see yet (presence crosses the bus a moment after a
            // login): poke it, as for an accounts message.
            let hub = this.hub.clone();
            Some(Box::new(move |ok| {
                if ok {
                    hub.poke_remote(&to);
                }
            }))
        });
        queued.is_ok()
    }

    fn member(&self, id: u64) -> Option<Arc<Member>> {
        self.members.read().by_id.get(&id).cloned()
    }

    /// Queue a store job whose `after` replies on `out`. A full store queue
    /// is answered with `busy` at once; so is a job (or its reply part) that
    /// panics, which the store rolls back alone: the client always hears.
    fn job(
        &self,
        out: &Arc<Outbound>,
        busy: Frame,
        job: impl FnOnce(&crate::store::Db) -> Option<After> + Send + 'static,
    ) {
        let guard = ReplyOnDrop {
            out: out.clone(),
            frame: Some(busy.clone()),
        };
        let queued = self.store.submit(move |db| {
            let guard = guard;
            let after = job(db);
            Some(Box::new(move |ok| {
                if let Some(a) = after {
                    a(ok);
                }
                guard.disarm();
            }))
        });
        if queued.is_err() {
            self.hub.metrics().dropped(DropReason::StoreBusy);
            log::warn!("store queue full; answering {}", busy.redacted());
            out.enqueue(|b| busy.encode(b));
        }
    }

    /// A store job on behalf of a member: counted against its bound (the
    /// caller waits for room first), answered as `job` says.
    fn member_job(
        &self,
        me: &Arc<Member>,
        busy: Frame,
        job: impl FnOnce(&crate::store::Db) -> Option<After> + Send + 'static,
    ) {
        me.wait_below(JOBS_PER_MEMBER);
        let pending = me.track();
        self.job(&me.out, busy, move |db| {
            let pending = pending;
            let after = job(db);
            Some(Box::new(move |ok| {
                if let Some(a) = after {
                    a(ok);
                }
                drop(pending);
            }))
        });
    }

    /// 100: validate, hash, insert; 101/102/103/104 after commit.
    pub fn register(
        self: &Arc<Self>,
        now: Instant,
        ip: IpAddr,
        email: String,
        pseudo: String,
        password: String,
        out: &Arc<Outbound>,
    ) {
        let reply = |f: Frame| out.enqueue(|b| f.encode(b));
        if !valid_email(&email) {
            reply(Frame::EmailTaken);
            return;
        }
        if !valid_pseudo(&pseudo) {
            log::debug!("accounts {ip}: pseudo {pseudo:?} refused by the name policy");
            reply(Frame::PseudoTaken);
            return;
        }
        let skeletons = names::skeletons(&pseudo);
        if self.hub.name_in_use(&pseudo) || {
            let r = self.registered.read();
            skeletons.iter().any(|k| r.contains_key(k))
        } {
            reply(Frame::PseudoTaken);
            return;
        }
        // A banned name cannot be registered either (an early, separate gate).
        if self.hub.bans().name_banned(&pseudo) {
            reply(Frame::PseudoTaken);
            return;
        }
        if password.len() < MIN_PASSWORD {
            reply(Frame::RegisterRefused {
                reason: format!("password must be at least {MIN_PASSWORD} bytes"),
            });
            return;
        }
        let key = [format!("register:{ip}")];
        let allowed = {
            let mut counts = self.registrations.lock();
            let ok = !counts.limited(now, &key, self.registrations_per_minute);
            if ok {
                counts.record(now, &key);
            }
            ok
        };
        if !allowed {
            crate::logs::peer_log!(
                log::Level::Warn,
                ip,
                "registration limit",
                "accounts {ip}: registration refused: more than {} a minute from this address \
                 (registrations_per_minute)",
                self.registrations_per_minute
            );
            reply(Frame::RegisterRefused {
                reason: "too many registrations from this address; try again later".into(),
            });
            return;
        }
        let hashed = self.hashers.run(move || password::hash(&password));
        let hash = match hashed {
            Some(Ok(h)) => h,
            _ => {
                reply(Frame::RegisterRefused {
                    reason: "server busy, try again".into(),
                });
                return;
            }
        };
        let out2 = out.clone();
        let registered = self.registered.clone();
        let hub = self.hub.clone();
        self.job(
            out,
            Frame::RegisterRefused {
                reason: "server busy, try again".into(),
            },
            move |db| {
                // Jobs run one at a time on the store thread: claiming the
                // skeleton here settles a race between two look-alikes.
                let claimed = {
                    let mut r = registered.write();
                    let free = !skeletons.iter().any(|k| r.contains_key(k));
                    if free {
                        for k in &skeletons {
                            r.insert(k.clone(), pseudo.clone());
                        }
                    }
                    free
                };
                let res = if claimed {
                    db.create_account(&email, &pseudo, &hash)
                } else {
                    Err(CreateError::PseudoTaken)
                };
                // A look-alike registered through another node holds the
                // keys in the store; its announcement may have come while
                // this claim held them here, and found them taken.
                let holders = if claimed && res == Err(CreateError::PseudoTaken) {
                    db.look_alike_holders(&pseudo)
                } else {
                    Vec::new()
                };
                Some(Box::new(move |committed| {
                    let stored = res.is_ok() && committed;
                    if claimed && !stored {
                        let mut r = registered.write();
                        for k in &skeletons {
                            r.remove(k);
                        }
                        for (k, holder) in holders {
                            r.entry(k).or_insert(holder);
                        }
                    }
                    let f = match (res, committed) {
                        (Ok(_), true) => {
                            log::info!("accounts: registered {pseudo}");
                            hub.announce_account(&pseudo, true);
                            Frame::Registered
                        }
                        (Ok(_), false) => Frame::RegisterRefused {
                            reason: "storage failure".into(),
                        },
                        (Err(CreateError::EmailTaken), _) => Frame::EmailTaken,
                        (Err(CreateError::PseudoTaken), _) => Frame::PseudoTaken,
                    };
                    out2.enqueue(|b| f.encode(b));
                }))
            },
        );
    }

    /// 110: check the password (unknown emails cost the same), join the hub
    /// under the account's pseudo, then flush what waited while offline.
    /// `server_ip`: where the connection reached the server (the relay's
    /// address for this member's calls).
    #[allow(clippy::too_many_arguments)]
    pub fn login(
        self: &Arc<Self>,
        now: Instant,
        email: &str,
        password: &str,
        ip: IpAddr,
        out: &Arc<Outbound>,
        features: u32,
        server_ip: Option<IpAddr>,
    ) -> Option<Arc<Member>> {
        let fail = |why: &str| refuse_login(ip, out, why);
        let mut attempt = match self.begin_login(now, ip, email) {
            Ok(a) => a,
            Err(why) => return fail(why),
        };
        // From a read connection when there are some, off the store thread.
        let email2 = email.to_owned();
        let looked_up = match self.store.read(|db| db.account_by_email(email)) {
            Some(r) => r,
            None => self.store.call(move |db| db.account_by_email(&email2)),
        };
        let account = match looked_up {
            Ok(a) => a,
            Err(_) => return fail("store busy"),
        };
        let hash = account
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |a| a.hash.clone());
        let password = password.to_owned();
        let ok = self
            .hashers
            .run(move || password::verify(&hash, &password))
            .unwrap_or(false);
        let account = match account {
            Some(a) if ok => a,
            _ => {
                attempt.outcome = Outcome::Failure;
                drop(attempt);
                self.hub
                    .metrics()
                    .login(Dialect::Accounts, LoginOutcome::BadPassword);
                return fail("bad credentials");
            }
        };
        attempt.outcome = Outcome::Success;
        drop(attempt);
        self.admit(account, ip, out, features, server_ip)
    }

    /// Fuzzing only (and the fuzz targets' run as tests): log in to the
    /// account of `email` without a password (hashing would make each fuzz
    /// run take a tenth of a second).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn login_unchecked(
        self: &Arc<Self>,
        email: &str,
        ip: IpAddr,
        out: &Arc<Outbound>,
    ) -> Option<Arc<Member>> {
        let e = email.to_owned();
        let account = self.store.call(move |db| db.account_by_email(&e)).ok()??;
        self.admit(account, ip, out, 0, None)
    }

    /// The password was right: join the hub under the account's pseudo,
    /// answer, and flush what waited while the member was offline.
    fn admit(
        self: &Arc<Self>,
        account: crate::store::Account,
        ip: IpAddr,
        out: &Arc<Outbound>,
        features: u32,
        server_ip: Option<IpAddr>,
    ) -> Option<Arc<Member>> {
        let fail = |why: &str| refuse_login(ip, out, why);
        let peer = Arc::new(AccountsPeer {
            out: out.clone(),
            features,
        });
        let entry = hub::Entry {
            server_ip,
            ..hub::Entry::new(Dialect::Accounts, ip, peer)
        };
        let session = match self.hub.login_with(&account.pseudo, entry, |_| {}) {
            Ok(s) => s,
            Err(LoginError::Taken) => return fail("already online"),
            Err(e) => return fail(&format!("{e:?}")),
        };
        let member = Arc::new(Member {
            id: account.id,
            pseudo: account.pseudo.clone(),
            ip,
            out: out.clone(),
            session,
            flushed: AtomicBool::new(false),
            features,
            pending: Mutex::new(0),
            answered: Condvar::new(),
        });
        {
            let mut ms = self.members.write();
            ms.by_id.insert(member.id, member.clone());
            ms.by_name.insert(member.pseudo.clone(), member.clone());
        }
        out.reply(
            &Frame::LoginOk {
                pseudo: account.pseudo.clone(),
                id: account.id,
            }
            .to_bytes(),
        );
        crate::logs::peer_log!(
            log::Level::Info,
            ip,
            "login",
            "accounts {ip}: logged in as {}",
            account.pseudo
        );
        self.flush(member.clone());
        Some(member)
    }

    /// Cluster mode: another node registered (or deleted) `pseudo`; this
    /// node's registered-name checks follow.
    pub fn note_account(&self, pseudo: &str, registered: bool) {
        let mut r = self.registered.write();
        for k in names::skeletons(pseudo) {
            if registered {
                r.entry(k).or_insert_with(|| pseudo.to_owned());
            } else if r.get(&k).is_some_and(|p| p == pseudo) {
                r.remove(&k);
            }
        }
        drop(r);
        if !registered {
            // Deleted through another node: a session here ends too.
            self.hub.kick(pseudo);
        }
    }

    /// Cluster mode: another node stored items for `pseudo`, who is online
    /// here (docs/scaling.md, "Delivery"): deliver them now. Returns
    /// whether `pseudo` is a member here.
    pub fn flush_pending(&self, pseudo: &str) -> bool {
        let m = self.members.read().by_name.get(pseudo).cloned();
        match m {
            Some(m) => {
                self.flush(m);
                true
            }
            None => false,
        }
    }

    /// Cluster mode, the re-check of stored items (docs/scaling.md,
    /// "Delivery"): the ids of the members here whose login flush has run
    /// and whose connection is open, for [`Accounts::recheck`].
    pub fn recheck_candidates(&self) -> Vec<u64> {
        self.members
            .read()
            .by_id
            .values()
            .filter(|m| m.flushed.load(Ordering::Acquire) && !m.out.peer_closed())
            .map(|m| m.id)
            .collect()
    }

    /// Cluster mode: deliver what waits in the store for the members `ids`
    /// (a bounded batch), whose poke may have been lost on the bus. One
    /// store job: one indexed query names those with anything waiting, and
    /// only those are flushed, in the same job. Returns how many were
    /// asked about (0: none here any more), or None when the store's queue
    /// is full (the next pass asks again).
    pub fn recheck(&self, ids: &[u64]) -> Option<usize> {
        let members: Vec<Arc<Member>> = {
            let ms = self.members.read();
            ids.iter()
                .filter_map(|id| ms.by_id.get(id))
                .filter(|m| m.flushed.load(Ordering::Acquire) && !m.out.peer_closed())
                .cloned()
                .collect()
        };
        let asked = members.len();
        if asked == 0 {
            return Some(0);
        }
        let queued = self.store.submit(move |db| {
            let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
            let waiting = db.waiting_among(&ids);
            if waiting.is_empty() {
                return None;
            }
            let taken: Vec<(Arc<Member>, Waiting)> = members
                .into_iter()
                .filter(|m| waiting.contains(&m.id))
                .map(|m| {
                    let w = Waiting::take(db, &m);
                    (m, w)
                })
                .collect();
            log::debug!(
                "cluster: re-check found stored items for {} of {asked} users",
                taken.len()
            );
            Some(Box::new(move |committed| {
                if committed {
                    for (m, w) in taken {
                        w.send(&m);
                    }
                }
            }))
        });
        queued.ok().map(|()| asked)
    }

    /// Send `m` what waits for it in the store (requests, notices,
    /// messages, guest mail), marking each delivered in the same job.
    fn flush(&self, m: Arc<Member>) {
        let pseudo = m.pseudo.clone();
        let queued = self.store.submit(move |db| {
            let waiting = Waiting::take(db, &m);
            Some(Box::new(move |committed| {
                if committed {
                    waiting.send(&m);
                }
            }))
        });
        if queued.is_err() {
            log::warn!("store queue full; offline items for {pseudo} wait for the next login");
        }
    }

    /// Wait for this login's turn under the login limits: Err(why) when the
    /// address or the account is locked out, or the turn does not come.
    fn begin_login(
        &self,
        now: Instant,
        ip: IpAddr,
        email: &str,
    ) -> Result<InFlight<'_>, &'static str> {
        let deadline = now + LOGIN_TURN_WAIT;
        let mut limits = self.logins.lock();
        let mut now = now;
        loop {
            match limits.begin(now, ip, email) {
                Verdict::Go(a) => {
                    return Ok(InFlight {
                        accounts: self,
                        attempt: Some(a),
                        outcome: Outcome::Abandoned,
                    })
                }
                Verdict::Locked(_) => return Err("locked out for now"),
                Verdict::Wait => {
                    if self
                        .login_turn
                        .wait_until(&mut limits, deadline)
                        .timed_out()
                    {
                        return Err("too many attempts in flight");
                    }
                    now = Instant::now().max(now);
                }
            }
        }
    }

    /// The member's connection ended. The hub ends its calls: the other
    /// side hears 147 (a call in progress, or one it was offered by this
    /// member) or 142 (a call it was ringing this member with).
    pub fn logout(&self, m: &Member) {
        {
            let mut ms = self.members.write();
            ms.by_id.remove(&m.id);
            ms.by_name.remove(&m.pseudo);
        }
        self.hub.logout(&m.session);
    }

    /// Deliver now if `id` is online, flushed and its peer has not already
    /// closed the connection; else None, and the item is stored undelivered
    /// for the next login. Seed 000 has no acknowledgement from recipients:
    /// bytes queued to a socket its peer has shut (before its reader saw the
    /// end) would be marked delivered and never read. Store thread only.
    fn live(&self, id: u64) -> Option<Arc<Member>> {
        self.member(id)
            .filter(|m| m.flushed.load(Ordering::Acquire) && !m.out.peer_closed())
    }

    /// 120.
    pub fn friend_request(self: &Arc<Self>, me: &Arc<Member>, pseudo: String) {
        let me = me.clone();
        let this = self.clone();
        self.member_job(
            &me.clone(),
            Frame::NoSuchUser {
                pseudo: pseudo.clone(),
            },
            move |db| {
                let reply = |f: Frame| -> Option<After> {
                    let me = me.clone();
                    Some(Box::new(move |_| me.send(&f)))
                };
                let Some(target) = db.account_id(&pseudo).filter(|t| *t != me.id) else {
                    return reply(Frame::NoSuchUser { pseudo });
                };
                if db.are_friends(me.id, target) {
                    return reply(Frame::AlreadyFriends { pseudo });
                }
                let live = this.live(target);
                if db.has_request(target, me.id) {
                    // They already asked us: asking back is accepting.
                    db.take_request(target, me.id);
                    db.befriend(me.id, target);
                    if live.is_none() {
                        db.add_notice(target, code::FRIEND_ACCEPTED, &me.pseudo);
                    }
                    return Some(Box::new(move |ok| {
                        if !ok {
                            return me.send(&Frame::NoSuchUser { pseudo });
                        }
                        me.send(&Frame::FriendRequestSent {
                            pseudo: pseudo.clone(),
                        });
                        me.send(&Frame::FriendAccepted {
                            pseudo: pseudo.clone(),
                        });
                        match live {
                            Some(t) => t.send(&Frame::FriendAccepted {
                                pseudo: me.pseudo.clone(),
                            }),
                            None => {
                                this.hub.poke_remote(&pseudo);
                            }
                        }
                    }));
                }
                db.add_request(me.id, target, live.is_some());
                Some(Box::new(move |ok| {
                    if !ok {
                        return me.send(&Frame::NoSuchUser { pseudo });
                    }
                    me.send(&Frame::FriendRequestSent {
                        pseudo: pseudo.clone(),
                    });
                    match live {
                        Some(t) => t.send(&Frame::FriendRequested {
                            pseudo: me.pseudo.clone(),
                        }),
                        None => {
                            this.hub.poke_remote(&pseudo);
                        }
                    }
                }))
            },
        );
    }

    /// 131 / 132: only a request that is really pending counts.
    pub fn answer_friend(self: &Arc<Self>, me: &Arc<Member>, pseudo: String, accept: bool) {
        me.wait_below(JOBS_PER_MEMBER);
        let pending = me.track();
        let me = me.clone();
        let this = self.clone();
        // The seed gives the answerer no reply; a lost answer is logged.
        let queued = self.store.submit(move |db| {
            let _pending = pending;
            let requester = db.account_id(&pseudo)?;
            if !db.take_request(requester, me.id) {
                return None;
            }
            if accept {
                db.befriend(me.id, requester);
            }
            let answer = if accept {
                code::FRIEND_ACCEPTED
            } else {
                code::FRIEND_REFUSED
            };
            let live = this.live(requester);
            if live.is_none() {
                db.add_notice(requester, answer, &me.pseudo);
            }
            Some(Box::new(move |ok| {
                if !ok {
                    log::warn!("accounts: {}'s friend answer was not stored", me.pseudo);
                }
                match (ok, live) {
                    (true, Some(r)) => {
                        let p = me.pseudo.clone();
                        r.send(&if accept {
                            Frame::FriendAccepted { pseudo: p }
                        } else {
                            Frame::FriendRefused { pseudo: p }
                        });
                    }
                    (true, None) => {
                        this.hub.poke_remote(&pseudo);
                    }
                    _ => {}
                }
            }))
        });
        if queued.is_err() {
            self.hub.metrics().dropped(DropReason::StoreBusy);
            log::warn!("store queue full; a friend answer was dropped");
        }
    }

    /// 150: 152 once stored, 153 when the recipient is unknown or not a friend.
    pub fn send_message(self: &Arc<Self>, me: &Arc<Member>, pseudo: String, text: String) {
        let me = me.clone();
        let this = self.clone();
        self.member_job(&me.clone(), Frame::MessageFailed, move |db| {
            let Some(target) = db.account_id(&pseudo) else {
                // No account by that name: a guest online in another
                // dialect, or nobody (no offline delivery to a guest).
                let hub = this.hub.clone();
                return Some(Box::new(move |_| {
                    let sent = hub.private_message(&me.session, &me.pseudo, &pseudo, &text);
                    me.send(&match sent {
                        Ok(()) => Frame::MessageStored,
                        Err(_) => Frame::MessageFailed,
                    })
                }));
            };
            if !db.are_friends(me.id, target) {
                return Some(Box::new(move |_| me.send(&Frame::MessageFailed)));
            }
            let live = this.live(target);
            let sent = crate::store::now_secs();
            let stored = db.insert_message_at(me.id, target, &text, live.is_some(), sent);
            Some(Box::new(move |ok| {
                if !(ok && stored.is_some()) {
                    return me.send(&Frame::MessageFailed);
                }
                me.send(&Frame::MessageStored);
                this.hub.metrics().message(Dialect::Accounts);
                match live {
                    Some(t) => t.send(&t.message(me.pseudo.clone(), text, sent.max(0) as u64)),
                    // Online on another node: stored, now poked there.
                    None => {
                        this.hub.poke_remote(&pseudo);
                    }
                }
            }))
        });
    }

    /// 160: one page, oldest first, at most HISTORY_PAGE messages. With a
    /// database file, the page is read on the member's own thread from a
    /// read connection, never on the store thread, once the member's
    /// earlier jobs are answered (so answers keep the order of requests and
    /// the page includes what the member had stored). The member's reading
    /// waits meanwhile: one page at a time per user.
    pub fn history(self: &Arc<Self>, me: &Arc<Member>, pseudo: String, before: u64) {
        let stamps = me.stamps();
        let page = move |db: &crate::store::Db, me: u64, pseudo: &str| -> Vec<HistoryEntry> {
            db.account_id(pseudo)
                .map(|other| db.history(me, other, before, wire::HISTORY_PAGE))
                .unwrap_or_default()
                .into_iter()
                .map(|(id, sender_id, text, sent)| HistoryEntry {
                    id,
                    sender_id,
                    text,
                    stamp: stamps.then_some(sent),
                })
                .collect()
        };
        if self.store.has_read_pool() {
            me.wait_below(1);
            let entries = match self.store.read(|db| page(db, me.id, &pseudo)) {
                Some(Ok(entries)) => entries,
                _ => {
                    self.hub.metrics().dropped(DropReason::StoreBusy);
                    Vec::new()
                }
            };
            me.send(&Frame::HistoryPage { pseudo, entries });
            return;
        }
        let me2 = me.clone();
        self.member_job(
            me,
            Frame::HistoryPage {
                pseudo: pseudo.clone(),
                entries: vec![],
            },
            move |db| {
                let entries = page(db, me2.id, &pseudo);
                Some(Box::new(move |_| {
                    me2.send(&Frame::HistoryPage { pseudo, entries })
                }))
            },
        );
    }

    /// 170 / 180.
    pub fn list(self: &Arc<Self>, me: &Arc<Member>, friends: bool) {
        let me = me.clone();
        let empty = if friends {
            Frame::Friends { pseudos: vec![] }
        } else {
            Frame::Requests { pseudos: vec![] }
        };
        self.member_job(&me.clone(), empty, move |db| {
            let f = if friends {
                Frame::Friends {
                    pseudos: db.friends(me.id, wire::MAX_LIST),
                }
            } else {
                Frame::Requests {
                    pseudos: db.requests_to(me.id, wire::MAX_LIST),
                }
            };
            Some(Box::new(move |_| me.send(&f)))
        });
    }

    /// 140: ring a friend, or a user of another dialect who takes calls
    /// (docs/bridging.md), through the hub's call model; 142 otherwise.
    pub fn call(self: &Arc<Self>, me: &Arc<Member>, pseudo: String, addr: String, port: u16) {
        let me = me.clone();
        let hub = self.hub.clone();
        self.member_job(
            &me.clone(),
            Frame::CallFailed {
                pseudo: pseudo.clone(),
            },
            move |db| {
                // An account must be a friend; a name with no account may be
                // a guest the hub can ring (a babel user).
                let allowed = match db.account_id(&pseudo) {
                    Some(t) => t != me.id && db.are_friends(me.id, t),
                    None => true,
                };
                Some(Box::new(move |_| {
                    let media = Media::Udp { addr, port };
                    let rung = allowed
                        && hub
                            .offer_call(Instant::now(), &me.session, &pseudo, media)
                            .is_ok();
                    if !rung {
                        me.send(&Frame::CallFailed { pseudo });
                    }
                }))
            },
        );
    }

    /// 144 / 145: answer a call that is really ringing.
    pub fn answer_call(&self, me: &Arc<Member>, pseudo: &str, accept: Option<(String, u16)>) {
        let media = accept.map(|(addr, port)| Media::Udp { addr, port });
        if let Err(why) = self
            .hub
            .answer_call(Instant::now(), &me.session, pseudo, media)
        {
            log::debug!(
                "accounts: {}'s answer to {pseudo} ignored: {why:?}",
                me.pseudo
            );
        }
    }

    /// 146: end a call (or cancel a ringing one); the other side hears it.
    pub fn hangup(&self, me: &Arc<Member>, pseudo: &str) {
        self.hub.hang_up(&me.session, pseudo);
    }
}

/// Answer a login 112 and say why in the log (rate-limited per address).
fn refuse_login(ip: IpAddr, out: &Arc<Outbound>, why: &str) -> Option<Arc<Member>> {
    crate::logs::peer_log!(
        log::Level::Info,
        ip,
        "login refused",
        "accounts {ip}: login failed ({why})"
    );
    out.reply(&Frame::LoginFailed.to_bytes());
    None
}

/// Sends its frame when dropped unless it was cleared: carried through a
/// store job, it answers the client when the job or its reply part panics.
struct ReplyOnDrop {
    out: Arc<Outbound>,
    frame: Option<Frame>,
}

impl ReplyOnDrop {
    fn disarm(mut self) {
        self.frame = None;
    }
}

impl Drop for ReplyOnDrop {
    fn drop(&mut self) {
        if let Some(f) = self.frame.take() {
            log::warn!("store job failed; answering {}", f.redacted());
            self.out.enqueue(|b| f.encode(b));
        }
    }
}

/// A login attempt counted by the limits while it runs; dropping it
/// records `outcome` (Abandoned unless set) and wakes logins waiting for a turn.
struct InFlight<'a> {
    accounts: &'a Accounts,
    attempt: Option<Attempt>,
    outcome: Outcome,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.attempt.take() {
            self.accounts
                .logins
                .lock()
                .finish(Instant::now(), a, self.outcome);
            self.accounts.login_turn.notify_all();
        }
    }
}

/// What an operator can do to accounts (through the admin socket).
impl Accounts {
    /// Delete an account and everything stored about it (friendships,
    /// requests, notices, messages to and from it), then close its session
    /// if it is online. Returns false if there was no such account.
    pub fn delete_account(&self, pseudo: &str) -> Result<bool, String> {
        let p = pseudo.to_owned();
        let deleted = self
            .store
            .call_committed(move |db| db.delete_account(&p))
            .map_err(|_| "the store is busy or stopped".to_owned())?;
        match deleted {
            (_, false) => Err("the store could not commit the deletion".into()),
            (false, true) => Ok(false),
            (true, true) => {
                // Deleted first, so a kicked user cannot log straight back in.
                {
                    let mut r = self.registered.write();
                    for k in names::skeletons(pseudo) {
                        if r.get(&k).is_some_and(|p| p == pseudo) {
                            r.remove(&k);
                        }
                    }
                }
                self.hub.kick(pseudo);
                self.hub.announce_account(pseudo, false);
                log::info!("accounts: deleted {pseudo}");
                Ok(true)
            }
        }
    }

    /// Set a new password for `pseudo`. Its current session stays open.
    /// Returns false if there is no such account.
    pub fn reset_password(&self, pseudo: &str, new_password: String) -> Result<bool, String> {
        if new_password.len() < MIN_PASSWORD {
            return Err(format!("a password must be at least {MIN_PASSWORD} bytes"));
        }
        let hash = match self.hashers.run(move || password::hash(&new_password)) {
            Some(Ok(h)) => h,
            Some(Err(e)) => return Err(format!("hashing failed: {e}")),
            None => return Err("the hashing queue is full; try again".into()),
        };
        let p = pseudo.to_owned();
        match self
            .store
            .call_committed(move |db| db.set_password_hash(&p, &hash))
            .map_err(|_| "the store is busy or stopped".to_owned())?
        {
            (_, false) => Err("the store could not commit the new password".into()),
            (found, true) => {
                if found {
                    log::info!("accounts: password of {pseudo} reset by an operator");
                }
                Ok(found)
            }
        }
    }

    /// Password hashes waiting for a hashing thread.
    pub fn hash_queue(&self) -> usize {
        self.hashers.tx.as_ref().map_or(0, |t| t.len())
    }

    /// Calls answered and not yet hung up (every dialect's: the hub's).
    pub fn active_calls(&self) -> usize {
        self.hub.calls_answered()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::path::Path;
    use std::time::Duration;

    use chinwag_proto::accounts::Decoder;

    use super::*;
    use crate::hub::HubConfig;
    use crate::metrics::Metrics;
    use crate::net::FlushPool;

    /// An Outbound over a real loopback connection, and the client's end.
    fn pipe() -> (Arc<Outbound>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let pool = FlushPool::new(1).unwrap();
        let out = Outbound::new(
            Arc::new(server),
            &pool,
            1 << 20,
            Duration::from_secs(2),
            "test".into(),
            Arc::new(Metrics::new()),
        );
        (out, client)
    }

    /// The next frame, within a minute: what is checked is that it comes,
    /// not how fast (a store thread on a loaded machine took over 10 s).
    fn next_frame(c: &mut TcpStream, dec: &mut Decoder) -> Frame {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 4096];
        loop {
            if let Some(f) = dec.next_message().unwrap() {
                return f;
            }
            let n = chinwag_proto::eintr::retry_until(
                deadline,
                |left| c.set_read_timeout(Some(left)),
                || (&*c).read(&mut buf),
            )
            .expect("a frame within the wait");
            assert!(n > 0, "connection closed");
            dec.push(&buf[..n]);
        }
    }

    #[test]
    fn a_store_job_that_panics_is_answered_and_the_service_carries_on() {
        let hub = Arc::new(Hub::new(HubConfig::default()));
        let (store, thread) = Store::open(Path::new(":memory:")).unwrap();
        let accounts = Accounts::new(hub, store.clone(), 100);
        let (out, mut client) = pipe();
        let mut dec = Decoder::new();
        accounts.job(&out, Frame::MessageFailed, |db| {
            db.create_account("x@x.org", "x", "h").unwrap();
            panic!("injected failure in a store job");
        });
        assert_eq!(next_frame(&mut client, &mut dec), Frame::MessageFailed);
        accounts.job(&out, Frame::MessageFailed, |_| {
            Some(Box::new(|_| panic!("injected failure in a reply")))
        });
        assert_eq!(next_frame(&mut client, &mut dec), Frame::MessageFailed);
        // The panicking job's write was rolled back; later jobs run as usual.
        let o = out.clone();
        accounts.job(&out, Frame::MessageFailed, move |db| {
            let n = db.all_pseudos().len();
            Some(Box::new(move |ok| {
                assert!(ok);
                o.enqueue(|b| {
                    Frame::RegisterRefused {
                        reason: format!("{n}"),
                    }
                    .encode(b)
                });
            }))
        });
        assert_eq!(
            next_frame(&mut client, &mut dec),
            Frame::RegisterRefused { reason: "0".into() }
        );
        store.stop();
        thread.join();
    }

    #[test]
    fn one_member_has_a_bounded_number_of_store_jobs_outstanding() {
        use std::sync::atomic::AtomicUsize;
        let hub = Arc::new(Hub::new(HubConfig::default()));
        let (store, thread) = Store::open(Path::new(":memory:")).unwrap();
        let accounts = Accounts::new(hub.clone(), store.clone(), 100);
        let (out, _client) = pipe();
        let session = hub
            .login(
                "member",
                Dialect::Accounts,
                "127.0.0.1".parse().unwrap(),
                Arc::new(AccountsPeer {
                    out: out.clone(),
                    features: 0,
                }),
                false,
                true,
            )
            .unwrap();
        let me = Arc::new(Member {
            id: 1,
            pseudo: "member".into(),
            ip: "127.0.0.1".parse().unwrap(),
            out,
            session,
            flushed: AtomicBool::new(true),
            features: 0,
            pending: Mutex::new(0),
            answered: Condvar::new(),
        });
        // Hold the store thread.
        let (go, wait) = bounded::<()>(0);
        store
            .submit(move |_| {
                let _ = wait.recv();
                None
            })
            .unwrap();
        let queued = Arc::new(AtomicUsize::new(0));
        let (a, m, q) = (accounts.clone(), me.clone(), queued.clone());
        let sender = std::thread::spawn(move || {
            for _ in 0..JOBS_PER_MEMBER + 8 {
                a.list(&m, true);
                q.fetch_add(1, Ordering::SeqCst);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while queued.load(Ordering::SeqCst) < JOBS_PER_MEMBER && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Give a 33rd job every chance to slip through: it must not.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(queued.load(Ordering::SeqCst), JOBS_PER_MEMBER);
        assert_eq!(*me.pending.lock(), JOBS_PER_MEMBER);
        // Once the store moves, the member's connection moves too.
        go.send(()).unwrap();
        sender.join().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while *me.pending.lock() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*me.pending.lock(), 0);
        store.stop();
        thread.join();
    }
}
