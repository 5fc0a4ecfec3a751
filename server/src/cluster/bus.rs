//! The `cw-bus` thread: the only async code in chinwagd. One OS thread runs
//! a tokio current-thread runtime with the NATS client (async-nats). The
//! rest of the server reaches it through a bounded crossbeam channel of
//! [`BusCmd`] (plus a `Notify` to wake the runtime) and hears from it
//! through a bounded crossbeam channel of [`BusEvent`], read by the
//! `cw-bus-in` thread (cluster/mod.rs). Neither side ever blocks on the
//! other: both directions use `try_send`, and a full channel is a counted
//! drop. The runtime never calls the hub.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures_util::StreamExt;
use rustls::ClientConfig;
use tokio::sync::Notify;

use super::ClusterConfig;

/// Commands queued to the bus thread at most.
pub const CMD_QUEUE: usize = 8192;
/// Events queued from the bus thread at most.
pub const EVENT_QUEUE: usize = 8192;
/// Heartbeat period.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// The longest pause between two reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Name claims handled at once (each a task awaiting JetStream).
const CLAIMS_IN_FLIGHT: usize = 256;
/// Releases and re-assertions in flight at once; past this the bus thread
/// waits for one to finish before it starts another.
const RELEASES_IN_FLIGHT: usize = 1024;

pub enum BusCmd {
    /// Core NATS publish (at most once).
    Publish {
        subject: String,
        payload: Vec<u8>,
    },
    /// Create every key (sorted) with `value`; all or none. The reply is
    /// each key's revision, or None when one exists or the bus failed.
    Claim {
        keys: Vec<String>,
        value: Vec<u8>,
        reply: Sender<Option<Vec<(String, u64)>>>,
    },
    /// Delete each key if it still holds that revision.
    Release {
        keys: Vec<(String, u64)>,
    },
    /// After an outage: does `name` still hold its keys? A key that was
    /// freed meanwhile is created again with `value`. Answered with
    /// `BusEvent::Reasserted`.
    Reassert {
        name: String,
        keys: Vec<(String, u64)>,
        value: Vec<u8>,
    },
    Stop,
}

#[derive(Debug)]
pub enum BusEvent {
    /// Connected (again) to the bus.
    Up,
    /// Lost the bus; the client reconnects by itself.
    Down,
    /// A message on one of the node's subjects.
    Message { subject: String, payload: Vec<u8> },
    /// A key of the `names` bucket was written.
    Put {
        key: String,
        revision: u64,
        value: Vec<u8>,
    },
    /// A key of the `names` bucket was deleted or purged.
    Delete { key: String },
    /// The answer to `Reassert`: the keys and their revisions now, or
    /// None when another node holds the name.
    Reasserted {
        name: String,
        keys: Option<Vec<(String, u64)>>,
    },
}

/// How this node logs in to the bus and what its link's TLS is: read from
/// the operator's files at start ([`Access::load`]), never printed.
#[derive(Clone, Default)]
pub struct Access {
    pub auth: Auth,
    /// The rustls configuration for the link: the operator's CA (or the
    /// system's) and client certificate. Also used when a bus asks for TLS
    /// that the operator did not; None only if no CA can be had at all.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// TLS asked for (`bus_tls` or `tls://`): refuse a bus without it.
    pub tls_wanted: bool,
}

#[derive(Clone, Default, PartialEq)]
pub enum Auth {
    /// No credentials (a bus without authorization).
    #[default]
    Anonymous,
    /// `bus_token_file`.
    Token(String),
    /// `bus_user` and `bus_password_file`.
    User { user: String, password: String },
    /// `bus_nkey_seed_file`: the seed signs the bus's nonce; it never
    /// leaves the node.
    NKey(String),
}

impl PartialEq for Access {
    fn eq(&self, other: &Access) -> bool {
        let same_tls = match (&self.tls, &other.tls) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        self.auth == other.auth && self.tls_wanted == other.tls_wanted && same_tls
    }
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match &self.auth {
            Auth::Anonymous => "anonymous".to_owned(),
            Auth::Token(_) => "token".to_owned(),
            Auth::User { user, .. } => format!("user {user:?}"),
            Auth::NKey(_) => "nkey".to_owned(),
        };
        write!(
            f,
            "Access({auth}, tls {})",
            if self.tls_wanted {
                "required"
            } else {
                "if asked"
            }
        )
    }
}

impl Access {
    /// Read the credentials and TLS files the configuration names: every
    /// secret file must be readable by its owner only; a missing or bad
    /// file is an error naming it and the key.
    pub fn load(cfg: &crate::Config) -> Result<Access, String> {
        use crate::config::read_secret_file;
        use std::path::Path;
        let secret = |key: &str, path: &str| -> Result<String, String> {
            let bytes = read_secret_file(Path::new(path), "the bus's secret")
                .map_err(|e| format!("{key}: {e}"))?;
            String::from_utf8(bytes).map_err(|_| format!("{key}: {path} is not UTF-8 text"))
        };
        let auth = if !cfg.bus_token_file.is_empty() {
            Auth::Token(secret("bus_token_file", &cfg.bus_token_file)?)
        } else if !cfg.bus_user.is_empty() {
            Auth::User {
                user: cfg.bus_user.clone(),
                password: secret("bus_password_file", &cfg.bus_password_file)?,
            }
        } else if !cfg.bus_nkey_seed_file.is_empty() {
            let seed = secret("bus_nkey_seed_file", &cfg.bus_nkey_seed_file)?;
            let seed = seed.trim().to_owned();
            if nkeys::KeyPair::from_seed(&seed).is_err() {
                return Err(format!(
                    "bus_nkey_seed_file: {} holds no nkey seed (one line, SU...)",
                    cfg.bus_nkey_seed_file
                ));
            }
            Auth::NKey(seed)
        } else {
            Auth::Anonymous
        };
        let tls_wanted = cfg.bus_wants_tls();
        let roots = match cfg.bus_tls_ca_file.as_str() {
            "" => crate::tls::Roots::System,
            f => crate::tls::Roots::File(Path::new(f)),
        };
        let identity = (!cfg.bus_tls_cert_file.is_empty()).then(|| crate::tls::Identity {
            cert: Path::new(&cfg.bus_tls_cert_file),
            key: Path::new(&cfg.bus_tls_key_file),
        });
        let tls = match crate::tls::client_config(roots, crate::tls::Verify::Full, identity) {
            Ok(c) => Some(Arc::new(c)),
            // Set up for TLS: every failure stops the start.
            Err(e) if tls_wanted || roots != crate::tls::Roots::System || identity.is_some() => {
                return Err(format!("bus TLS: {e}"))
            }
            Err(e) => {
                log::debug!("bus: no TLS configuration for a bus that might ask: {e}");
                None
            }
        };
        Ok(Access {
            auth,
            tls,
            tls_wanted,
        })
    }
}

/// The one line an operator reads when the node cannot join the bus.
fn connect_failure(e: &async_nats::ConnectError, access: &Access) -> String {
    if e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation {
        let sent = match access.auth {
            Auth::Anonymous => {
                "no credentials (set bus_token_file, bus_user and bus_password_file, or \
                 bus_nkey_seed_file)"
            }
            Auth::Token(_) => "the token of bus_token_file",
            Auth::User { .. } => "bus_user and the password of bus_password_file",
            Auth::NKey(_) => "the nkey of bus_nkey_seed_file",
        };
        return format!("the bus refused this node's credentials: it sent {sent} ({e})");
    }
    let tls = tls_error(e);
    if access.tls_wanted && matches!(tls, Some(Some(rustls::Error::InvalidMessage(_)))) {
        return format!(
            "cannot reach the bus over TLS: it answered in plain text, so it has no TLS set up \
             (nats-server's tls {{ }} block); bus_tls = true and tls:// need it ({e})"
        );
    }
    match (tls.is_some(), access.tls_wanted) {
        (true, false) => format!(
            "the bus asks for TLS and chinwagd is not set up for it: set bus_tls = true and \
             bus_tls_ca_file to the bus's CA ({e})"
        ),
        (true, true) => format!(
            "TLS with the bus failed: check bus_tls_ca_file (the CA of the bus's \
             certificate), the host in bus_url, and bus_tls_cert_file/bus_tls_key_file if the \
             bus wants client certificates ({e})"
        ),
        (false, true) => format!(
            "cannot reach the bus over TLS ({e}); a bus without TLS set up (nats-server's \
             tls {{ }} block) cannot take bus_tls = true or tls:// URLs"
        ),
        (false, false) => format!("cannot reach the bus: {e}"),
    }
}

/// Whether the TLS handshake failed, and with which rustls error if one is
/// known (async-nats reports most as I/O errors: the rustls error is inside
/// the io::Error).
fn tls_error(e: &async_nats::ConnectError) -> Option<Option<&rustls::Error>> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<rustls::Error>() {
            return Some(Some(r));
        }
        if let Some(r) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(Some(r));
        }
        cause = c.source();
    }
    (e.kind() == async_nats::ConnectErrorKind::Tls).then_some(None)
}

/// The bus side of the two channels.
pub struct Link {
    pub cmds: Receiver<BusCmd>,
    pub wake: Arc<Notify>,
    pub events: Sender<BusEvent>,
    pub up: Arc<AtomicBool>,
    /// Counts an event dropped because `events` was full.
    pub dropped: Arc<dyn Fn() + Send + Sync>,
    /// Set (with a wake) to stop the thread, even if `cmds` is full.
    pub stop: Arc<AtomicBool>,
}

impl Link {
    fn emit(&self, ev: BusEvent) {
        if let Err(TrySendError::Full(_)) = self.events.try_send(ev) {
            (self.dropped)();
        }
    }
}

pub fn subject_node(cluster: &str, node: &str) -> String {
    format!("cw.{cluster}.node.{node}")
}

pub fn subject_global(cluster: &str) -> String {
    format!("cw.{cluster}.global")
}

pub fn subject_heartbeat(cluster: &str) -> String {
    format!("cw.{cluster}.hb")
}

pub fn bucket(cluster: &str) -> String {
    format!("cw_{cluster}_names")
}

/// Run the bus until `Stop`. `ready` hears once: Ok after connecting,
/// creating the bucket, subscribing and starting the watch; Err(why) if
/// that fails (then the thread ends).
pub fn run(cfg: ClusterConfig, heartbeat: Vec<u8>, link: Link, ready: Sender<Result<(), String>>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("bus runtime: {e}")));
            return;
        }
    };
    rt.block_on(async move {
        let started = match start(&cfg, &link).await {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        serve(&cfg, heartbeat, &link, started).await;
    });
}

struct Started {
    client: async_nats::Client,
    names: kv::Store,
    inbox: async_nats::Subscriber,
    global: async_nats::Subscriber,
    beats: async_nats::Subscriber,
    watch: kv::Watch,
}

async fn start(cfg: &ClusterConfig, link: &Link) -> Result<Started, String> {
    let up = link.up.clone();
    let events = link.events.clone();
    let opts = async_nats::ConnectOptions::new()
        .name(format!("chinwagd {}", cfg.node))
        .connection_timeout(cfg.bus_timeout)
        .request_timeout(Some(cfg.bus_timeout))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            let ms = 50u64.saturating_mul(1 << attempts.min(8));
            Duration::from_millis(ms).min(MAX_BACKOFF)
        })
        .require_tls(cfg.access.tls_wanted)
        .subscription_capacity(4096)
        .client_capacity(4096)
        .event_callback(move |ev| {
            let up = up.clone();
            let events = events.clone();
            async move {
                let ev = match ev {
                    async_nats::Event::Connected => {
                        up.store(true, Ordering::SeqCst);
                        BusEvent::Up
                    }
                    async_nats::Event::Disconnected => {
                        up.store(false, Ordering::SeqCst);
                        BusEvent::Down
                    }
                    other => {
                        log::warn!("bus: {other}");
                        return;
                    }
                };
                // Up and Down must not be lost: they are rare, so wait for room.
                let _ = events.send_timeout(ev, Duration::from_secs(1));
            }
        });
    let opts = match &cfg.access.auth {
        Auth::Anonymous => opts,
        Auth::Token(t) => opts.token(t.clone()),
        Auth::User { user, password } => opts.user_and_password(user.clone(), password.clone()),
        Auth::NKey(seed) => opts.nkey(seed.clone()),
    };
    let opts = match &cfg.access.tls {
        Some(tls) => opts.tls_client_config(ClientConfig::clone(tls)),
        None => opts,
    };
    let client = opts
        .connect(cfg.urls.as_slice())
        .await
        .map_err(|e| connect_failure(&e, &cfg.access))?;
    link.up.store(true, Ordering::SeqCst);
    let js = jetstream::new(client.clone());
    let names = match js.get_key_value(bucket(&cfg.cluster)).await {
        Ok(s) => s,
        Err(_) => {
            // The bucket's stream, made by hand with the KV conventions:
            // the client's create_key_value first asks for account details
            // in a shape nats-server 2.9 does not answer in.
            let name = bucket(&cfg.cluster);
            let made = js
                .get_or_create_stream(jetstream::stream::Config {
                    name: format!("KV_{name}"),
                    subjects: vec![format!("$KV.{name}.>")],
                    max_messages_per_subject: 1,
                    max_message_size: 1024,
                    discard: jetstream::stream::DiscardPolicy::New,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: 1,
                    ..Default::default()
                })
                .await;
            if let Err(e) = made {
                return Err(format!("cannot make the names bucket: {e}"));
            }
            js.get_key_value(name)
                .await
                .map_err(|e| format!("cannot open the names bucket: {e}"))?
        }
    };
    let sub = |s: String| {
        let client = client.clone();
        async move {
            client
                .subscribe(s)
                .await
                .map_err(|e| format!("cannot subscribe: {e}"))
        }
    };
    let inbox = sub(subject_node(&cfg.cluster, &cfg.node)).await?;
    let global = sub(subject_global(&cfg.cluster)).await?;
    let beats = sub(subject_heartbeat(&cfg.cluster)).await?;
    let watch = names
        .watch_with_history(">")
        .await
        .map_err(|e| format!("cannot watch the names bucket: {e}"))?;
    Ok(Started {
        client,
        names,
        inbox,
        global,
        beats,
        watch,
    })
}

async fn serve(cfg: &ClusterConfig, heartbeat: Vec<u8>, link: &Link, s: Started) {
    let Started {
        client,
        names,
        mut inbox,
        mut global,
        mut beats,
        mut watch,
    } = s;
    let hb_subject = subject_heartbeat(&cfg.cluster);
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let claims = Arc::new(tokio::sync::Semaphore::new(CLAIMS_IN_FLIGHT));
    let mut releases = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = link.wake.notified() => {}
            _ = tick.tick() => {
                if client.publish(hb_subject.clone(), heartbeat.clone().into()).await.is_err() {
                    log::debug!("bus: heartbeat not sent");
                }
            }
            Some(m) = inbox.next() => link.emit(message(m)),
            Some(m) = global.next() => link.emit(message(m)),
            Some(m) = beats.next() => link.emit(message(m)),
            e = watch.next() => match e {
                Some(Ok(e)) => {
                    let ev = match e.operation {
                        kv::Operation::Put => BusEvent::Put {
                            key: e.key,
                            revision: e.revision,
                            value: e.value.to_vec(),
                        },
                        kv::Operation::Delete | kv::Operation::Purge => {
                            BusEvent::Delete { key: e.key }
                        }
                    };
                    link.emit(ev);
                }
                Some(Err(err)) => log::warn!("bus: names watch: {err}"),
                None => {
                    log::warn!("bus: names watch ended; restarting it");
                    match names.watch_with_history(">").await {
                        Ok(w) => watch = w,
                        Err(err) => {
                            log::warn!("bus: cannot watch names: {err}");
                            tokio::time::sleep(MAX_BACKOFF).await;
                        }
                    }
                }
            },
        }
        // Every command waiting now (the Notify holds one permit, so a
        // command queued while we were busy is never left behind).
        while releases.try_join_next().is_some() {}
        let drained = link.cmds.len();
        for cmd in link.cmds.try_iter().take(drained) {
            match cmd {
                BusCmd::Stop => link.stop.store(true, Ordering::SeqCst),
                BusCmd::Publish { subject, payload } => {
                    if client.publish(subject, payload.into()).await.is_err() {
                        (link.dropped)();
                    }
                }
                BusCmd::Claim { keys, value, reply } => {
                    let Ok(permit) = claims.clone().try_acquire_owned() else {
                        let _ = reply.try_send(None);
                        continue;
                    };
                    let names = names.clone();
                    tokio::spawn(async move {
                        let got = claim(&names, &keys, value).await;
                        if let Some(got) = got {
                            // The login gave up waiting: give the name back.
                            if reply.try_send(Some(got.clone())).is_err() {
                                release(&names, &got).await;
                            }
                        } else {
                            let _ = reply.try_send(None);
                        }
                        drop(permit);
                    });
                }
                BusCmd::Reassert { name, keys, value } => {
                    if releases.len() >= RELEASES_IN_FLIGHT {
                        releases.join_next().await;
                    }
                    let names = names.clone();
                    let events = link.events.clone();
                    releases.spawn(async move {
                        let keys = reassert(&names, &keys, value).await;
                        let _ = events.try_send(BusEvent::Reasserted { name, keys });
                    });
                }
                BusCmd::Release { keys } => {
                    if releases.len() >= RELEASES_IN_FLIGHT {
                        releases.join_next().await;
                    }
                    let names = names.clone();
                    releases.spawn(async move { release(&names, &keys).await });
                }
            }
        }
        if link.stop.load(Ordering::SeqCst) {
            // Names of the sessions that ended at shutdown go back now, not
            // after node_timeout.
            let _ = tokio::time::timeout(cfg.bus_timeout, async {
                while releases.join_next().await.is_some() {}
            })
            .await;
            let _ = tokio::time::timeout(cfg.bus_timeout, client.flush()).await;
            return;
        }
    }
}

fn message(m: async_nats::Message) -> BusEvent {
    BusEvent::Message {
        subject: m.subject.to_string(),
        payload: m.payload.to_vec(),
    }
}

async fn claim(names: &kv::Store, keys: &[String], value: Vec<u8>) -> Option<Vec<(String, u64)>> {
    let mut got = Vec::with_capacity(keys.len());
    for k in keys {
        match names.create(k, value.clone().into()).await {
            Ok(rev) => got.push((k.clone(), rev)),
            Err(_) => {
                release(names, &got).await;
                return None;
            }
        }
    }
    Some(got)
}

async fn reassert(
    names: &kv::Store,
    keys: &[(String, u64)],
    value: Vec<u8>,
) -> Option<Vec<(String, u64)>> {
    let mut now = Vec::with_capacity(keys.len());
    let mut created = Vec::new();
    for (k, rev) in keys {
        let held = match names.entry(k.clone()).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put => Some(e),
            Ok(_) => None,
            // Cannot tell: keep the name rather than drop a user.
            Err(_) => return Some(keys.to_vec()),
        };
        match held {
            Some(e) if e.revision == *rev || e.value[..] == value[..] => {
                now.push((k.clone(), e.revision))
            }
            Some(_) => {
                release(names, &created).await;
                return None;
            }
            None => match names.create(k, value.clone().into()).await {
                Ok(r) => {
                    created.push((k.clone(), r));
                    now.push((k.clone(), r));
                }
                Err(_) => {
                    release(names, &created).await;
                    return None;
                }
            },
        }
    }
    Some(now)
}

async fn release(names: &kv::Store, keys: &[(String, u64)]) {
    for (k, rev) in keys {
        // With the claim's revision: a late release never removes a newer claim.
        if let Err(e) = names.delete_expect_revision(k, Some(*rev)).await {
            log::debug!("bus: release of a name key: {e}");
        }
    }
}
