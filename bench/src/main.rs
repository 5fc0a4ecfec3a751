//! chinwag-bench: drives a running chinwagd over the chatos dialect and
//! prints a table plus one JSON line per workload. See `--help`.

mod accounts;
mod audio;
mod babel;
mod cluster;
mod conn;
mod engine;
mod hist;
mod media;
mod refs;
mod relay;
mod report;
mod rooms;
mod runqueue;
mod server;
mod slow;
mod table;
mod wait;

// The cluster workload starts a real PostgreSQL and nats-server the way the
// server's cluster tests do, with the same helpers.
#[path = "../../server/tests/common/mod.rs"]
mod common;
#[path = "../../server/tests/common/nats.rs"]
mod testnats;
#[path = "../../server/tests/common/postgres.rs"]
mod testpg;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use engine::{Kind, Mode, Plan};
use report::{Goal, Meta, Report, Unit};
use server::{ProcStats, Spec, Target};

const HELP: &str = "\
chinwag-bench: load generator and benchmark for chinwagd, every dialect

USAGE: chinwag-bench [WORKLOAD] [OPTIONS]
       chinwag-bench table [FILE...]   the README's Markdown table from JSON lines
                                       (files, or standard input)

WORKLOAD (default: all)
  all       every workload below with its defaults (the issue's targets)
  fanout    C clients log in; S of them send MESSAGE; every client counts deliveries
  p2p       C clients in pairs exchange MESSAGE_PRIVATE at saturation
  p2p-paced C clients in pairs, each sending --rate (10) messages a second: the
            latency at light load beside a direct loopback one-way message
  relay     MB/s and ping-pong RTT through a private connection vs direct loopback TCP
  idle      C logged-in idle connections: login time (beside a bare one-thread
            server's), server memory per connection split into stacks, heap and
            kernel, how deep below its stack's top an idle connection thread
            waits; then the same logins with C threads pre-started
            (--spare-threads C)
  churn     connections that log in and close, 64 at a time: with the server's
            spare threads and with --spare-threads 0
  slow      50 receivers of 100 texts/s, without and with one slow consumer (small
            receive buffer, never reads): the fast ones' p99 both ways, and the cut
  accounts  password logins/s (Argon2id) and acknowledged messages/s through the
            store, against a chinwagd whose database is a real file; then
            accounts-history (alone: `accounts-history`): a history page's latency
            in a conversation of --messages (1,000,000) messages, beside a bare
            SQLite point query on the same file, and another pair's 152 latency
            without and with a user paging as fast as the server answers; then
            accounts-offline (alone: `accounts-offline`): 10,000 messages wait for
            a user, who logs in and receives them
  rooms     (UDP) texts/s to a public room of 250 clients, each acknowledging every
            text; the same with 1, 2, 4, 8 workers; a request's round trip at light
            load beside a direct UDP round trip
  babel     1,000 online, then 100 newcomers log in one by one: each one's contact
            list, and the time until everyone has its AddContact; call set-up
            (CallRequest to the callee, CallRefused back) beside a direct hop
            without and with a user paging as fast as the server answers
  audio     real calls between two libchinwag clients (babel over TCP, accounts
            over UDP) through the bench's own jittery/lossy paths: mouth-to-ear
            latency, PESQ under loss (with --pesq), jitter recovery, CPU, a long call
  cluster   (alone: `cluster`) chatos private messages, --pairs pairs (4) each
            keeping --window (16) in flight and echoing, for --seconds (5):
            direct loopback TCP, one plain chinwagd, two users on one node of
            a cluster, and each pair split across two nodes (a nats-server
            and a PostgreSQL started here): messages/s and round trip p50/p99
  media     N concurrent calls babel -> accounts through chinwagd's media relay,
            one packet per 20 ms each way: relayed packets/s, loss, one-way
            latency p50/p99 beside direct loopback UDP pairs in the same run

SERVER (default: start target-dir/release/chinwagd on a free port per workload)
  --server PATH        chinwagd binary to start
  --addr HOST:PORT     use a running server instead (loopback only; chatos and
                       accounts workloads)
  --pid PID            its pid, for RSS / threads / CPU readings
  --accounts-addr H:P  its accounts listener (for the accounts workload)

COMMON
  --quick              small smoke run; exit status says whether it works
  --threads N          load-generator worker threads (default 1)
  --login-window N     logins in flight at once (default 128, the server's backlog;
                       churn: 64)
  --clients C          clients (fanout 1000, p2p 1000, idle 10000, rooms 250, babel 1000)
  --seconds T          send phase length (default 5; relay: bulk time cap, 5)
  --drain T            seconds allowed after sending for the last deliveries (default 5)
  --messages M         stop each sender after M messages (default: time-bounded)
  --json               print only the JSON lines
  --out FILE           also append the JSON lines to FILE

FANOUT / P2P
  --senders S          fanout senders (default 10)
  --mode sat|paced     fanout mode (default sat; `all` runs both)
  --rate X             paced: total messages per second in (default 50; p2p-paced:
                       per client, default 10)
  --window K           saturation: messages a sender may have undelivered (default 8;
                       p2p: per direction of a pair; rooms: texts awaiting their
                       answer, 4). Throughput grows with K: see the report

AUDIO
  --seconds T          length of each latency and CPU call (default 20)
  --long-seconds T     length of the long call (default 600)
  --pesq PYTHON        a Python with the `pesq` package (bench/audio/pesq.sh makes one)
  --speech WAV         the test speech (default bench/audio/speech.wav)
  --parts LIST         only these parts: latency,pesq,jitter,cpu,long (default all)

MEDIA
  --calls LIST         concurrent calls, one run each (default 10,100,1000; quick 10)
  --seconds T          measured time per run (default 5; a 1 s warm-up comes first)
  --payload N          bytes of each Opus packet (default 80)

RELAY
  --bytes N            bulk bytes one way (default 4294967296; the run also stops at --seconds)
  --write-size N       bulk write size (default 65536)
  --pings N            ping-pong round trips (default 5000)

Targets are printed beside the figures of the runs they were set for.";

struct Args {
    workload: String,
    opts: HashMap<String, String>,
    flags: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1).peekable();
    let mut workload = None;
    let mut opts = HashMap::new();
    let mut flags = Vec::new();
    const FLAGS: [&str; 3] = ["--quick", "--json", "--help"];
    while let Some(a) = it.next() {
        if a == "-h" || a == "--help" {
            flags.push("--help".into());
        } else if let Some(key) = a.strip_prefix("--") {
            if FLAGS.contains(&a.as_str()) {
                flags.push(a.clone());
            } else if let Some((k, v)) = key.split_once('=') {
                opts.insert(k.to_string(), v.to_string());
            } else {
                let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
                opts.insert(key.to_string(), v);
            }
        } else if workload.is_none() {
            workload = Some(a);
        } else {
            return Err(format!("unexpected argument {a:?}"));
        }
    }
    Ok(Args {
        workload: workload.unwrap_or_else(|| "all".into()),
        opts,
        flags,
    })
}

impl Args {
    fn flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
    fn get<T: std::str::FromStr>(&self, k: &str) -> Result<Option<T>, String> {
        match self.opts.get(k) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("--{k}: cannot parse {v:?}")),
        }
    }
    fn or<T: std::str::FromStr>(&self, k: &str, d: T) -> Result<T, String> {
        Ok(self.get(k)?.unwrap_or(d))
    }
}

/// Everything a workload needs besides its own parameters.
struct Ctx {
    spec: Spec,
    quick: bool,
    threads: usize,
    login_window: usize,
    run_id: String,
    fd_limit: u64,
    drain: Duration,
}

impl Ctx {
    fn names(&self, prefix: &str, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("{prefix}{}-{i}", self.run_id))
            .collect()
    }
    fn check_fds(&self, conns: usize) -> Result<(), String> {
        // The bench needs one descriptor per connection (and a spawned server as many).
        let need = conns as u64 + 64;
        if self.fd_limit < need {
            return Err(format!(
                "{conns} connections need {need} descriptors, the limit is {}",
                self.fd_limit
            ));
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let mut raw = std::env::args().skip(1);
    let first = raw.next();
    // The bench's own reference servers, each in a process of its own.
    type Serve = fn() -> std::io::Result<()>;
    let bare: Option<(&str, Serve)> = match first.as_deref() {
        Some(m @ "__bare-login") => Some((m, refs::bare_login_main)),
        Some(m @ "__bare-forward") => Some((m, refs::bare_forward_main)),
        _ => None,
    };
    if let Some((mode, serve)) = bare {
        return match serve() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chinwag-bench {mode}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if first.as_deref() == Some("table") {
        let files: Vec<String> = raw.collect();
        return match table::run(&files) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chinwag-bench table: {e}");
                ExitCode::from(2)
            }
        };
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chinwag-bench: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    if args.flag("--help") {
        println!("{HELP}");
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(reports) => {
            let broken = reports.iter().any(|r| !r.problems.is_empty());
            if broken {
                eprintln!(
                    "chinwag-bench: some workloads did not run correctly (see PROBLEM lines)"
                );
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("chinwag-bench: {e}");
            ExitCode::from(2)
        }
    }
}

type Job = (&'static str, Box<dyn Fn(&Ctx) -> Result<Report, String>>);

fn run(args: &Args) -> Result<Vec<Report>, String> {
    let addr: Option<SocketAddr> = args.get("addr")?;
    let spec = Spec::from_args(
        addr,
        args.get("accounts-addr")?,
        args.get("pid")?,
        args.get::<PathBuf>("server")?,
    )?;
    let quick = args.flag("--quick");
    let json_only = args.flag("--json");
    let fd_limit = server::raise_fd_limit();
    let ctx = Ctx {
        spec,
        quick,
        threads: args.or("threads", 1)?,
        login_window: args.or("login-window", 128)?,
        run_id: format!("{:04x}", rand::random::<u16>()),
        fd_limit,
        drain: Duration::from_secs_f64(args.or("drain", if quick { 2.0 } else { 5.0 })?),
    };
    let w = args.workload.as_str();
    let mut todo: Vec<Job> = Vec::new();
    match w {
        "all" => {
            let k: u32 = args.or("window", 8)?;
            let (c1, c5, ci) = if quick {
                (50, 100, 200)
            } else {
                (1000, 5000, 10_000)
            };
            let secs = if quick { 0.4 } else { 5.0 };
            let rate = if quick { 200.0 } else { 50.0 };
            let s = if quick { 5 } else { 10 };
            todo.push((
                "fanout-saturation",
                Box::new(move |c| {
                    fanout(
                        c,
                        FanoutParams {
                            clients: c1,
                            senders: s,
                            mode: Mode::Saturation { window: k },
                            seconds: secs,
                            messages: None,
                        },
                    )
                }),
            ));
            todo.push((
                "fanout-paced",
                Box::new(move |c| {
                    fanout(
                        c,
                        FanoutParams {
                            clients: c1,
                            senders: s,
                            mode: Mode::Paced { rate },
                            seconds: secs,
                            messages: None,
                        },
                    )
                }),
            ));
            todo.push((
                "fanout-paced",
                Box::new(move |c| {
                    fanout(
                        c,
                        FanoutParams {
                            clients: c5,
                            senders: s,
                            mode: Mode::Paced { rate },
                            seconds: secs,
                            messages: None,
                        },
                    )
                }),
            ));
            todo.push((
                "p2p-saturation",
                Box::new(move |c| {
                    p2p(
                        c,
                        P2pParams {
                            clients: c1,
                            window: k,
                            seconds: secs,
                            messages: None,
                        },
                    )
                }),
            ));
            todo.push((
                "p2p-paced",
                Box::new(move |c| p2p_paced(c, c1, 10.0, if quick { 0.5 } else { 5.0 })),
            ));
            let ro = relay_opts(args, quick)?;
            todo.push(("relay", Box::new(move |c| relay_wl(c, &ro))));
            todo.push(("idle", Box::new(move |c| idle(c, ci))));
            let churn_secs = if quick { 0.3 } else { 3.0 };
            todo.push(("churn", Box::new(move |c| churn_wl(c, 64, churn_secs))));
            todo.push((
                "slow",
                Box::new(move |c| slow_wl(c, 50, if quick { 6.0 } else { 10.0 })),
            ));
            todo.push(("accounts", Box::new(accounts_wl)));
            let n = if quick { 20_000 } else { 1_000_000 };
            todo.push(("accounts-history", Box::new(move |c| history_wl(c, n))));
            let off = if quick { 500 } else { 10_000 };
            todo.push(("accounts-offline", Box::new(move |c| offline_wl(c, off))));
            let (room, rsecs) = if quick { (20, 0.3) } else { (250, 5.0) };
            rooms_jobs(&mut todo, room, 4, rsecs);
            let (online, newcomers, calls) = if quick {
                (50, 5, 100)
            } else {
                (1000, 100, 2000)
            };
            babel_jobs(&mut todo, online, newcomers, calls);
            let ao = audio_opts(args, quick, &ctx.run_id)?;
            todo.push(("audio", Box::new(move |c| audio_wl(c, &ao))));
            media_jobs(args, quick, &mut todo)?;
        }
        "p2p-paced" => {
            let clients = args.or("clients", if quick { 50 } else { 1000 })?;
            let rate = args.or("rate", 10.0)?;
            let seconds = args.or("seconds", if quick { 0.5 } else { 5.0 })?;
            todo.push((
                "p2p-paced",
                Box::new(move |c| p2p_paced(c, clients, rate, seconds)),
            ));
        }
        "churn" => {
            let window = args.or("login-window", 64)?;
            let seconds = args.or("seconds", if quick { 0.3 } else { 3.0 })?;
            todo.push(("churn", Box::new(move |c| churn_wl(c, window, seconds))));
        }
        "accounts-offline" => {
            let n = args.or("messages", if quick { 500 } else { 10_000 })?;
            todo.push(("accounts-offline", Box::new(move |c| offline_wl(c, n))));
        }
        "rooms" => {
            let clients = args.or("clients", if quick { 20 } else { 250 })?;
            let window = args.or("window", 4)?;
            let seconds = args.or("seconds", if quick { 0.3 } else { 5.0 })?;
            rooms_jobs(&mut todo, clients, window, seconds);
        }
        "babel" => {
            let online = args.or("clients", if quick { 50 } else { 1000 })?;
            let newcomers = args.or("newcomers", if quick { 5 } else { 100 })?;
            let calls = args.or("calls", if quick { 100 } else { 2000 })?;
            babel_jobs(&mut todo, online, newcomers, calls);
        }
        "fanout" => {
            let mode = match (
                args.opts.get("mode").map(String::as_str),
                args.get::<f64>("rate")?,
            ) {
                (Some("paced"), r) | (None, r @ Some(_)) => Mode::Paced {
                    rate: r.unwrap_or(if quick { 200.0 } else { 50.0 }),
                },
                (Some("sat") | Some("saturation") | None, None) => Mode::Saturation {
                    window: args.or("window", 8)?,
                },
                (Some(m), _) => return Err(format!("--mode {m}: expected sat or paced")),
            };
            let p = FanoutParams {
                clients: args.or("clients", if quick { 50 } else { 1000 })?,
                senders: args.or("senders", if quick { 5 } else { 10 })?,
                mode,
                seconds: args.or("seconds", if quick { 0.4 } else { 5.0 })?,
                messages: args.get("messages")?,
            };
            todo.push(("fanout", Box::new(move |c| fanout(c, FanoutParams { ..p }))));
        }
        "p2p" => {
            let p = P2pParams {
                clients: args.or("clients", if quick { 50 } else { 1000 })?,
                window: args.or("window", 8)?,
                seconds: args.or("seconds", if quick { 0.4 } else { 5.0 })?,
                messages: args.get("messages")?,
            };
            todo.push((
                "p2p-saturation",
                Box::new(move |c| p2p(c, P2pParams { ..p })),
            ));
        }
        "relay" => {
            let ro = relay_opts(args, quick)?;
            todo.push(("relay", Box::new(move |c| relay_wl(c, &ro))));
        }
        "idle" => {
            let n = args.or("clients", if quick { 200 } else { 10_000 })?;
            todo.push(("idle", Box::new(move |c| idle(c, n))));
        }
        "accounts" => {
            todo.push(("accounts", Box::new(accounts_wl)));
            let n = args.or("messages", if quick { 20_000 } else { 1_000_000 })?;
            todo.push(("accounts-history", Box::new(move |c| history_wl(c, n))));
        }
        "accounts-history" => {
            let n = args.or("messages", if quick { 20_000 } else { 1_000_000 })?;
            todo.push(("accounts-history", Box::new(move |c| history_wl(c, n))));
        }
        "slow" => {
            let clients = args.or("clients", 50)?;
            let seconds = args.or("seconds", if quick { 6.0 } else { 10.0 })?;
            todo.push(("slow", Box::new(move |c| slow_wl(c, clients, seconds))));
        }
        "audio" => {
            let ao = audio_opts(args, quick, &ctx.run_id)?;
            todo.push(("audio", Box::new(move |c| audio_wl(c, &ao))));
        }
        "media" => media_jobs(args, quick, &mut todo)?,
        "cluster" => {
            let co = cluster::ClusterOpts {
                pairs: args.or("pairs", if quick { 2 } else { 4 })?,
                window: args.or("window", 16)?,
                seconds: args.or("seconds", if quick { 1.0 } else { 5.0 })?,
            };
            todo.push(("cluster", Box::new(move |c| cluster_wl(c, &co))));
        }
        other => {
            return Err(format!(
            "unknown workload {other:?} (all, fanout, p2p, p2p-paced, relay, idle, churn, slow, \
                 accounts, accounts-history, accounts-offline, rooms, babel, audio, media, cluster, table)"
        ))
        }
    }

    if !json_only {
        let how = match &ctx.spec {
            Spec::Spawn { binary, .. } => format!("starting {} per workload", binary.display()),
            Spec::External { addr, pid, .. } => format!(
                "server at {addr} (pid {})",
                pid.map_or("unknown".into(), |p| p.to_string())
            ),
        };
        println!(
            "chinwag-bench: {how}; {} worker thread(s); {} cores{}",
            ctx.threads,
            cores(),
            if quick {
                "; QUICK smoke run, no targets"
            } else {
                ""
            }
        );
    }
    let meta = Meta::here();
    let mut out = match args.get::<PathBuf>("out")? {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(|e| format!("--out {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let mut reports = Vec::new();
    for (name, job) in todo {
        let r = match job(&ctx) {
            Ok(r) => r,
            Err(e) => Report::failed(name, e),
        };
        let line = r.json(&meta);
        if json_only {
            println!("{line}");
        } else {
            print!("{}", r.table());
        }
        if let Some(f) = out.as_mut() {
            use std::io::Write as _;
            writeln!(f, "{line}").map_err(|e| format!("--out: {e}"))?;
        }
        reports.push(r);
    }
    if !json_only {
        println!();
        for r in &reports {
            println!("{}", r.json(&meta));
        }
    }
    Ok(reports)
}

/// The rooms workloads: texts to a room, worker scaling, light-load RTT.
fn rooms_jobs(todo: &mut Vec<Job>, clients: usize, window: usize, seconds: f64) {
    todo.push((
        "rooms",
        Box::new(move |c| rooms::texts_wl(c, clients, window, seconds)),
    ));
    todo.push((
        "rooms-workers",
        Box::new(move |c| rooms::workers_wl(c, clients, window, seconds.min(3.0))),
    ));
    todo.push(("rooms-rtt", Box::new(move |c| rooms::rtt_wl(c, clients))));
}

/// The babel workloads: logins with contact-list fan-out, call set-up.
fn babel_jobs(todo: &mut Vec<Job>, online: usize, newcomers: usize, calls: usize) {
    todo.push((
        "babel-login",
        Box::new(move |c| babel::login_wl(c, online, newcomers)),
    ));
    todo.push((
        "babel-call",
        Box::new(move |c| babel::call_wl(c, online, calls)),
    ));
}

fn audio_opts(args: &Args, quick: bool, run_id: &str) -> Result<audio::AudioOpts, String> {
    Ok(audio::AudioOpts {
        quick,
        seconds: args.or("seconds", if quick { 3.0 } else { 20.0 })?,
        long_seconds: args.or("long-seconds", if quick { 4.0 } else { 600.0 })?,
        pesq: args.get("pesq")?,
        speech: args.or("speech", audio::default_speech())?,
        run_id: run_id.to_string(),
        parts: args
            .get::<String>("parts")?
            .map(|l| l.split(',').map(str::to_string).collect()),
    })
}

/// The media relay workload at each number of calls (`--calls`, default
/// 10,100,1000; quick: 10).
fn media_jobs(args: &Args, quick: bool, todo: &mut Vec<Job>) -> Result<(), String> {
    let list: String = args.or(
        "calls",
        if quick {
            "10".into()
        } else {
            "10,100,1000".into()
        },
    )?;
    let seconds: f64 = args.or("seconds", if quick { 1.0 } else { 5.0 })?;
    let payload: usize = args.or("payload", 80)?;
    for c in list.split(',') {
        let calls: usize = c
            .trim()
            .parse()
            .map_err(|_| format!("--calls: {c:?} is not a number"))?;
        let o = media::MediaOpts { seconds, payload };
        todo.push((
            "media",
            Box::new(move |ctx: &Ctx| media::run(&ctx.spec, calls, &o, &ctx.run_id)),
        ));
    }
    Ok(())
}

fn audio_wl(c: &Ctx, o: &audio::AudioOpts) -> Result<Report, String> {
    let t = c.spec.start()?;
    audio::audio(&t, o)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cluster_wl(ctx: &Ctx, o: &cluster::ClusterOpts) -> Result<Report, String> {
    let Spec::Spawn { binary, .. } = &ctx.spec else {
        return Err("cluster starts its own nodes: run it without --addr".into());
    };
    let mut r = Report::new("cluster");
    r.param("pairs", o.pairs);
    r.param("window", o.window);
    r.param("seconds", o.seconds);
    let pg = testpg::server().ok_or("PostgreSQL is missing (scripts/install-deps.sh)")?;
    let nats = testnats::Nats::start().ok_or("nats-server is missing (scripts/install-deps.sh)")?;
    let (store, _) = pg.fresh_url();
    let direct = cluster::exchange(cluster::direct_pairs(o.pairs)?, o)?;
    let single = {
        let t = ctx.spec.start()?;
        cluster::exchange(cluster::chatos_pairs(t.addr, t.addr, o.pairs, "p")?, o)?
    };
    let a = cluster::node(binary, "a", &nats.url(), &store);
    let b = cluster::node(binary, "b", &nats.url(), &store);
    let same = cluster::exchange(cluster::chatos_pairs(a.chatos, a.chatos, o.pairs, "s")?, o)?;
    let cross = cluster::exchange(cluster::chatos_pairs(a.chatos, b.chatos, o.pairs, "c")?, o)?;
    drop((a, b));
    let us = |ns: u64| ns as f64 / 1e3;
    for (label, x) in [
        ("direct", &direct),
        ("single", &single),
        ("same", &same),
        ("cross", &cross),
    ] {
        let (k_rate, l_rate, k50, l50, k99, l99, k_lost) = match label {
            "direct" => (
                "direct_msgs_per_sec",
                "direct loopback TCP: messages",
                "direct_rtt_p50_us",
                "direct loopback TCP: round trip p50",
                "direct_rtt_p99_us",
                "direct loopback TCP: round trip p99",
                "direct_lost",
            ),
            "single" => (
                "single_msgs_per_sec",
                "one plain node: messages",
                "single_rtt_p50_us",
                "one plain node: round trip p50",
                "single_rtt_p99_us",
                "one plain node: round trip p99",
                "single_lost",
            ),
            "same" => (
                "same_node_msgs_per_sec",
                "cluster, both users on node a: messages",
                "same_node_rtt_p50_us",
                "cluster, same node: round trip p50",
                "same_node_rtt_p99_us",
                "cluster, same node: round trip p99",
                "same_node_lost",
            ),
            _ => (
                "cross_node_msgs_per_sec",
                "cluster, users on nodes a and b: messages",
                "cross_node_rtt_p50_us",
                "cluster, across nodes: round trip p50",
                "cross_node_rtt_p99_us",
                "cluster, across nodes: round trip p99",
                "cross_node_lost",
            ),
        };
        r.fig(k_rate, l_rate, x.per_sec, Unit::PerSec, None);
        r.fig(k50, l50, us(x.rtt.quantile(0.50)), Unit::Us, None);
        r.fig(k99, l99, us(x.rtt.quantile(0.99)), Unit::Us, None);
        r.fig(k_lost, "  messages lost", x.lost as f64, Unit::Count, None);
        if x.rtt.count() == 0 {
            r.problems.push(format!("{label}: no round trip completed"));
        }
    }
    r.fig(
        "cross_vs_single_pct",
        "across nodes / one plain node (messages/s)",
        cross.per_sec / single.per_sec.max(1e-9) * 100.0,
        Unit::Pct,
        None,
    );
    r.notes.push(format!(
        "{} cores shared by the load generator, every node, nats-server and PostgreSQL: \
         overheads and correctness under load, not a cluster's capacity",
        cores()
    ));
    Ok(r)
}

fn relay_opts(args: &Args, quick: bool) -> Result<relay::RelayOpts, String> {
    Ok(relay::RelayOpts {
        bytes: args.or("bytes", if quick { 64 << 20 } else { 4u64 << 30 })?,
        seconds: args.or("seconds", if quick { 0.3 } else { 5.0 })?,
        write_size: args.or("write-size", 64 * 1024)?,
        pings: args.or("pings", if quick { 200 } else { 5000 })?,
        ping_size: 64,
    })
}

/// Server resource readings over an interval: CPU of the server, of the
/// bench and of everything else; and the server's peak RSS and threads
/// over the whole workload so far (logins included).
struct Meter {
    t0: Instant,
    server0: Option<ProcStats>,
    self0: Duration,
    machine0: Option<Duration>,
    /// Run-queue counters of the server's threads and of the bench's.
    server_rq0: Option<runqueue::RunQueue>,
    self_rq0: Option<runqueue::RunQueue>,
}

impl Meter {
    fn start(t: &Target) -> Meter {
        // Read first: with thousands of threads this takes a while, which
        // stays out of the CPU figures below.
        let server_rq0 = t.pid.and_then(runqueue::RunQueue::read);
        let self_rq0 = runqueue::RunQueue::read(std::process::id());
        Meter {
            server_rq0,
            self_rq0,
            t0: Instant::now(),
            server0: t.stats(),
            self0: server::self_cpu(),
            machine0: server::machine_busy(),
        }
    }
    fn finish(self, t: &Target, r: &mut Report) {
        let wall = self.t0.elapsed().as_secs_f64().max(1e-9);
        let now = t.stats();
        if let (Some(a), Some(b)) = (self.server0, now) {
            r.fig(
                "server_cpu_pct",
                "server CPU (% of one core)",
                (b.cpu.saturating_sub(a.cpu)).as_secs_f64() / wall * 100.0,
                Unit::Pct,
                None,
            );
        }
        let bench = server::self_cpu() - self.self0;
        r.fig(
            "bench_cpu_pct",
            "bench CPU (% of one core)",
            bench.as_secs_f64() / wall * 100.0,
            Unit::Pct,
            None,
        );
        // Everything else the machine did meanwhile (other builds, other tests):
        // a noisy neighbour shows up here and explains a weak run.
        if let (Some(m0), Some(m1), Some(a), Some(b)) =
            (self.machine0, server::machine_busy(), self.server0, now)
        {
            let server = b.cpu.saturating_sub(a.cpu);
            let other = m1
                .saturating_sub(m0)
                .saturating_sub(server)
                .saturating_sub(bench);
            r.fig(
                "other_cpu_pct",
                "other processes CPU (% of one core)",
                other.as_secs_f64() / wall * 100.0,
                Unit::Pct,
                None,
            );
        }
        peak_figures(t, r);
        // Where a latency goes that no thread's work explains: the mean
        // time a thread was runnable but waited for a CPU, per time slice
        // (each wake-up starts one), over the threads alive throughout.
        let waits = [
            (
                "server_rq_wait_us",
                "server threads: run-queue wait per time slice (mean)",
                self.server_rq0.as_ref(),
                t.pid.and_then(runqueue::RunQueue::read),
            ),
            (
                "bench_rq_wait_us",
                "bench threads: run-queue wait per time slice (mean)",
                self.self_rq0.as_ref(),
                runqueue::RunQueue::read(std::process::id()),
            ),
        ];
        for (key, label, before, after) in waits {
            if let Some((wait, _)) = before
                .zip(after.as_ref())
                .and_then(|(a, b)| a.wait_per_slice(b))
            {
                r.fig(key, label, wait.as_secs_f64() * 1e6, Unit::Us, None);
            }
        }
    }
}

/// The same load run through the bench's bare thread-per-connection
/// forwarder (see `refs::bare_forward_main`), in its own process.
fn forwarder_run(
    ctx: &Ctx,
    plan: &Plan,
    clients: usize,
    prefix: &str,
) -> Result<engine::Outcome, String> {
    let bare =
        refs::BareLoginServer::start_forwarder().map_err(|e| format!("bare forwarder: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(if ctx.quick { 10 } else { 60 });
    let login = conn::login_all(
        bare.addr(),
        ctx.names(prefix, clients),
        ctx.login_window,
        deadline,
    )
    .map_err(|e| format!("bare forwarder: {e}"))?;
    Ok(engine::run(plan, login.conns, || {}))
}

/// The one-way reference (`refs::OneWayProbe`) as figures: its p50 and
/// p99, `ref_one_way_p50_us` and `ref_one_way_p99_us`.
fn one_way_figures(r: &mut Report, reference: &hist::Hist) {
    let us = |ns: u64| ns as f64 / 1e3;
    for (key, label, q) in [
        (
            "ref_one_way_p50_us",
            "reference: direct loopback one-way p50",
            0.5,
        ),
        (
            "ref_one_way_p99_us",
            "reference: direct loopback one-way p99",
            0.99,
        ),
    ] {
        r.fig(key, label, us(reference.quantile(q)), Unit::Us, None);
    }
}

/// The server's peak RSS and threads over the workload so far.
fn peak_figures(t: &Target, r: &mut Report) {
    if let Some(p) = t.peak() {
        r.fig(
            "server_peak_rss_mib",
            "server peak RSS during the workload",
            p.rss_kib as f64 / 1024.0,
            Unit::MiB,
            None,
        );
        r.fig(
            "server_peak_threads",
            "server peak threads during the workload",
            p.threads as f64,
            Unit::Count,
            None,
        );
        r.row("server_peak_rss_mib", None);
    }
}

struct FanoutParams {
    clients: usize,
    senders: usize,
    mode: Mode,
    seconds: f64,
    messages: Option<u64>,
}

fn fanout(ctx: &Ctx, p: FanoutParams) -> Result<Report, String> {
    let paced = matches!(p.mode, Mode::Paced { .. });
    let mut r = Report::new(if paced {
        "fanout-paced"
    } else {
        "fanout-saturation"
    });
    if p.clients == 0 || p.senders == 0 || p.senders > p.clients {
        return Err("fanout needs 1 <= senders <= clients".into());
    }
    ctx.check_fds(p.clients)?;
    r.param("clients", p.clients);
    r.param("senders", p.senders);
    match p.mode {
        Mode::Saturation { window } => r.param("window", window),
        Mode::Paced { rate } => r.param("rate", rate),
    }
    r.param("seconds", p.seconds);
    r.param("threads", ctx.threads);
    let mut target = ctx.spec.start()?;
    let deadline = Instant::now() + Duration::from_secs(if ctx.quick { 10 } else { 60 });
    let login = conn::login_all(
        target.addr,
        ctx.names("f", p.clients),
        ctx.login_window,
        deadline,
    )?;
    let senders: Vec<usize> = (0..p.senders).map(|k| k * p.clients / p.senders).collect();
    let plan = Plan {
        kind: Kind::Fanout,
        mode: p.mode,
        senders,
        send_for: Duration::from_secs_f64(p.seconds),
        cap: p.messages,
        drain: ctx.drain,
        threads: ctx.threads,
    };
    let meter = Meter::start(&target);
    let out = engine::run(&plan, login.conns, || {});
    let default_targets = !ctx.quick && p.senders == 10;
    let (rate_goal, p99_goal, pct_goal) = match (p.mode, p.clients) {
        (Mode::Saturation { .. }, 1000) if default_targets => {
            (Some(Goal::AtLeast(2.0e6)), None, None)
        }
        (Mode::Paced { rate }, 1000) if default_targets && rate == 50.0 => {
            (None, Some(Goal::AtMost(5.0)), None)
        }
        (Mode::Paced { rate }, 5000) if default_targets && rate == 50.0 => {
            (None, Some(Goal::AtMost(50.0)), Some(Goal::AtLeast(100.0)))
        }
        _ => (None, None, None),
    };
    r.fig(
        "login_s",
        "time to log all clients in",
        login.elapsed.as_secs_f64(),
        Unit::Secs,
        None,
    );
    engine_figures(&mut r, &out, rate_goal, p99_goal, pct_goal);
    if paced {
        meter.finish(&target, &mut r);
        target.stop();
        // The same load through the bare forwarder: the model's floor.
        let bare_out = forwarder_run(ctx, &plan, p.clients, "g")?;
        let ms = |ns: u64| ns as f64 / 1e6;
        r.fig(
            "ref_forwarder_p50_ms",
            "reference: bare thread-per-connection forwarder p50",
            ms(bare_out.hist.quantile(0.5)),
            Unit::Ms,
            None,
        );
        r.fig(
            "ref_forwarder_p99_ms",
            "reference: bare thread-per-connection forwarder p99",
            ms(bare_out.hist.quantile(0.99)),
            Unit::Ms,
            None,
        );
        r.row("p50_ms", Some("ref_forwarder_p50_ms"));
        r.row("p99_ms", Some("ref_forwarder_p99_ms"));
        r.row("delivered_pct", None);
        check_engine(ctx, &mut r, &out);
        return Ok(r);
    } else {
        r.row("deliveries_per_s", None);
        r.row("p99_ms", None);
    }
    meter.finish(&target, &mut r);
    target.stop();
    check_engine(ctx, &mut r, &out);
    Ok(r)
}

/// For the workloads that write into the server's database while it is
/// stopped: a fresh database file in the temp directory holding the run's
/// four accounts (0 and 1 friends, 2 and 3 friends), made through the
/// protocol by a server then stopped; handed to `body`, removed after.
fn with_prepared_db(
    ctx: &Ctx,
    tag: &str,
    workload: &str,
    body: impl FnOnce(&std::path::Path) -> Result<(), String>,
) -> Result<(), String> {
    if matches!(ctx.spec, Spec::External { .. }) {
        return Err(format!(
            "{workload} writes into the server's database: it needs a spawned server"
        ));
    }
    let db = std::env::temp_dir().join(format!("chinwag-bench-{tag}-{}.db", ctx.run_id));
    let result = (|| {
        let mut target = ctx.spec.start_with_db(Some(&db))?;
        let addr = target.accounts.ok_or("no accounts listener")?;
        accounts::history_setup(addr, &ctx.run_id)?;
        target.stop();
        body(&db)
    })();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    result
}

/// `accounts-history`: see the help text.
fn history_wl(ctx: &Ctx, messages: usize) -> Result<Report, String> {
    let mut r = Report::new("accounts-history");
    let secs = if ctx.quick { 0.5 } else { 5.0 };
    let pages = if ctx.quick { 50 } else { 500 };
    r.param("messages", messages);
    r.param("pages", pages);
    r.param("seconds", secs);
    let run = ctx.run_id.clone();
    with_prepared_db(ctx, "hist", "accounts-history", |db| {
        let db = db.to_path_buf();
        let filled = accounts::history_fill(&db, &run, messages)?;
        r.fig(
            "fill_s",
            "time to write the messages (one transaction)",
            filled.as_secs_f64(),
            Unit::Secs,
            None,
        );
        let point = accounts::point_query_reference(&db, if ctx.quick { 1000 } else { 20_000 })?;
        let ms = |ns: u64| ns as f64 / 1e6;
        let us = |ns: u64| ns as f64 / 1e3;
        r.fig(
            "point_p50_us",
            "reference: bare SQLite point query p50",
            us(point.quantile(0.5)),
            Unit::Us,
            None,
        );
        r.fig(
            "point_p99_us",
            "reference: bare SQLite point query p99",
            us(point.quantile(0.99)),
            Unit::Us,
            None,
        );
        let direct = accounts::page_query_reference(&db, &run, if ctx.quick { 100 } else { 1000 })?;
        r.fig(
            "page_sql_p50_us",
            "reference: the page's SQL alone, p50",
            us(direct.quantile(0.5)),
            Unit::Us,
            None,
        );
        r.fig(
            "page_sql_p99_us",
            "reference: the page's SQL alone, p99",
            us(direct.quantile(0.99)),
            Unit::Us,
            None,
        );
        let mut target = ctx.spec.start_with_db(Some(&db))?;
        let addr = target.accounts.ok_or("no accounts listener")?;
        let goal = |g: f64| (!ctx.quick && messages >= 1_000_000).then_some(Goal::AtMost(g));
        let h = accounts::history_pages(addr, &run, pages)?;
        r.fig(
            "page_p50_ms",
            "history page p50 (request to answer)",
            ms(h.quantile(0.5)),
            Unit::Ms,
            None,
        );
        r.fig(
            "page_p99_ms",
            "history page p99 (request to answer)",
            ms(h.quantile(0.99)),
            Unit::Ms,
            goal(5.0),
        );
        let (quiet, _) = accounts::acks_while_paging(addr, &run, secs, false)?;
        let (busy, served) = accounts::acks_while_paging(addr, &run, secs, true)?;
        r.fig(
            "ack_p99_quiet_ms",
            "another pair's 152 p99, nobody paging",
            ms(quiet.quantile(0.99)),
            Unit::Ms,
            None,
        );
        r.fig(
            "ack_p99_paging_ms",
            "another pair's 152 p99, one user paging flat out",
            ms(busy.quantile(0.99)),
            Unit::Ms,
            None,
        );
        r.fig(
            "ack_p99_delay_ms",
            "delay paging adds to another pair's 152 (p99)",
            ms(busy.quantile(0.99)) - ms(quiet.quantile(0.99)),
            Unit::Ms,
            goal(10.0),
        );
        r.fig(
            "pages_per_s",
            "pages served to the pager",
            served as f64 / secs,
            Unit::PerSec,
            None,
        );
        r.row("page_p99_ms", Some("page_sql_p99_us"));
        r.row("ack_p99_delay_ms", None);
        peak_figures(&target, &mut r);
        target.stop();
        r.notes.push(format!(
            "one conversation of {messages} messages, 50 per page; WAL + synchronous=FULL on {}",
            db.display()
        ));
        if quiet.count() == 0 || busy.count() == 0 {
            r.problems.push("no acknowledged message".into());
        }
        Ok::<(), String>(())
    })?;
    Ok(r)
}

/// `accounts-offline`: `n` messages wait for a user (written into the
/// database while the server is stopped); it logs in and receives them.
fn offline_wl(ctx: &Ctx, n: usize) -> Result<Report, String> {
    let mut r = Report::new("accounts-offline");
    r.param("messages", n);
    let run = ctx.run_id.clone();
    with_prepared_db(ctx, "off", "accounts-offline", |db| {
        accounts::offline_fill(db, &run, n)?;
        let mut target = ctx.spec.start_with_db(Some(db))?;
        let addr = target.accounts.ok_or("no accounts listener")?;
        let meter = Meter::start(&target);
        let o = accounts::offline_login(addr, &run, n)?;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        r.fig("login_ms", "LOGIN to 111", ms(o.login), Unit::Ms, None);
        r.fig(
            "all_ms",
            "LOGIN to the last queued message",
            ms(o.all),
            Unit::Ms,
            None,
        );
        r.fig(
            "messages_per_s",
            "queued messages delivered per second",
            o.received as f64 / o.all.as_secs_f64().max(1e-9),
            Unit::PerSec,
            None,
        );
        r.fig(
            "received",
            "queued messages received",
            o.received as f64,
            Unit::Count,
            None,
        );
        r.row("all_ms", None);
        r.row("messages_per_s", None);
        meter.finish(&target, &mut r);
        if !o.in_order {
            r.problems
                .push("the queued messages came out of order".into());
        }
        r.notes.push(format!(
            "64-byte messages; the login includes Argon2id; WAL + synchronous=FULL on {}",
            db.display()
        ));
        target.stop();
        Ok::<(), String>(())
    })?;
    Ok(r)
}

/// `slow`: the fast receivers' latency at 100 texts/s without, then with,
/// a consumer that never reads (it must be cut, and must not slow them).
/// The texts must flow long enough for the cut to happen at all: the two
/// kernel buffers fill (about 3 s at 100 texts of 64 bytes a second), then
/// the write times out (2 s); hence 6 s even in a quick run.
fn slow_wl(ctx: &Ctx, clients: usize, seconds: f64) -> Result<Report, String> {
    let mut r = Report::new("slow");
    let rate = 100.0;
    r.param("clients", clients);
    r.param("rate", rate);
    r.param("seconds", seconds);
    ctx.check_fds(clients + 1)?;
    let mut p99 = [0.0; 2];
    for (run, with_slow) in [false, true].into_iter().enumerate() {
        let mut target = ctx.spec.start()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let login = conn::login_all(
            target.addr,
            ctx.names(if with_slow { "sw" } else { "so" }, clients),
            ctx.login_window,
            deadline,
        )?;
        let slow = if with_slow {
            Some(slow::SlowConsumer::login(
                target.addr,
                &format!("slow{}", ctx.run_id),
                4096,
            )?)
        } else {
            None
        };
        let plan = Plan {
            kind: Kind::Fanout,
            mode: Mode::Paced { rate },
            senders: vec![0],
            send_for: Duration::from_secs_f64(seconds),
            cap: None,
            drain: ctx.drain,
            threads: ctx.threads,
        };
        let out = engine::run(&plan, login.conns, || {});
        p99[run] = out.hist.quantile(0.99) as f64 / 1e6;
        check_engine(ctx, &mut r, &out);
        if let Some(s) = slow {
            match s.drain_to_end(Duration::from_secs(5)) {
                Ok(bytes) => r.fig(
                    "slow_read_kib",
                    "KiB the slow consumer got before its cut",
                    bytes as f64 / 1024.0,
                    Unit::Count,
                    None,
                ),
                Err(_) => r
                    .problems
                    .push("the slow consumer was still connected after the run".into()),
            }
            peak_figures(&target, &mut r);
        }
        target.stop();
    }
    r.fig(
        "p99_without_ms",
        "fast receivers' p99 without a slow consumer",
        p99[0],
        Unit::Ms,
        None,
    );
    r.fig(
        "p99_with_ms",
        "fast receivers' p99 with one slow consumer",
        p99[1],
        Unit::Ms,
        None,
    );
    r.fig(
        "p99_rise_ms",
        "p99 rise caused by the slow consumer",
        p99[1] - p99[0],
        Unit::Ms,
        (!ctx.quick).then_some(Goal::AtMost(20.0)),
    );
    r.row("p99_without_ms", None);
    r.row("p99_with_ms", None);
    r.notes.push(
        "one sender, 64-byte texts; the slow consumer asks for a 4 KiB receive buffer and never reads"
            .into(),
    );
    Ok(r)
}

struct P2pParams {
    clients: usize,
    window: u32,
    seconds: f64,
    messages: Option<u64>,
}

fn p2p(ctx: &Ctx, p: P2pParams) -> Result<Report, String> {
    let mut r = Report::new("p2p-saturation");
    if p.clients < 2 || p.clients & 1 != 0 {
        return Err("p2p needs an even number of clients, at least 2".into());
    }
    ctx.check_fds(p.clients)?;
    r.param("clients", p.clients);
    r.param("window", p.window);
    r.param("seconds", p.seconds);
    r.param("threads", ctx.threads);
    let mut target = ctx.spec.start()?;
    let deadline = Instant::now() + Duration::from_secs(if ctx.quick { 10 } else { 60 });
    let login = conn::login_all(
        target.addr,
        ctx.names("p", p.clients),
        ctx.login_window,
        deadline,
    )?;
    let plan = Plan {
        kind: Kind::P2p,
        mode: Mode::Saturation { window: p.window },
        senders: (0..p.clients).collect(),
        send_for: Duration::from_secs_f64(p.seconds),
        cap: p.messages,
        drain: ctx.drain,
        threads: ctx.threads,
    };
    let meter = Meter::start(&target);
    let out = engine::run(&plan, login.conns, || {});
    let goal = (!ctx.quick && p.clients == 1000).then_some(Goal::AtLeast(7.0e5));
    r.fig(
        "login_s",
        "time to log all clients in",
        login.elapsed.as_secs_f64(),
        Unit::Secs,
        None,
    );
    engine_figures(&mut r, &out, goal, None, None);
    meter.finish(&target, &mut r);
    target.stop();
    let bare = forwarder_run(ctx, &plan, p.clients, "h")?;
    r.fig(
        "ref_forwarder_per_s",
        "reference: bare thread-per-connection forwarder, deliveries per second",
        bare.per_s(),
        Unit::PerSec,
        None,
    );
    r.row("deliveries_per_s", Some("ref_forwarder_per_s"));
    r.row("p50_ms", None);
    check_engine(ctx, &mut r, &out);
    Ok(r)
}

fn engine_figures(
    r: &mut Report,
    out: &engine::Outcome,
    rate: Option<Goal>,
    p99: Option<Goal>,
    pct_goal: Option<Goal>,
) {
    let secs = out.active.as_secs_f64().max(1e-9);
    let ms = |ns: u64| ns as f64 / 1e6;
    r.fig(
        "deliveries_per_s",
        "deliveries per second",
        out.per_s(),
        Unit::PerSec,
        rate,
    );
    r.fig(
        "p50_ms",
        "latency p50",
        ms(out.hist.quantile(0.50)),
        Unit::Ms,
        None,
    );
    r.fig(
        "p99_ms",
        "latency p99",
        ms(out.hist.quantile(0.99)),
        Unit::Ms,
        p99,
    );
    r.fig("max_ms", "latency max", ms(out.hist.max()), Unit::Ms, None);
    r.fig("sent", "messages sent", out.sent as f64, Unit::Count, None);
    r.fig(
        "delivered",
        "deliveries",
        out.delivered as f64,
        Unit::Count,
        None,
    );
    r.fig(
        "delivered_pct",
        "delivered (% of owed)",
        out.delivered_pct(),
        Unit::Pct,
        pct_goal,
    );
    r.fig(
        "active_s",
        "first send to last delivery",
        secs,
        Unit::Secs,
        None,
    );
    if out.lag.count() > 0 {
        r.fig(
            "send_lag_p99_ms",
            "sender lag behind schedule p99",
            ms(out.lag.quantile(0.99)),
            Unit::Ms,
            None,
        );
        r.fig(
            "send_lag_max_ms",
            "sender lag behind schedule max",
            ms(out.lag.max()),
            Unit::Ms,
            None,
        );
    }
    if out.dead_conns > 0 {
        r.fig(
            "dropped_conns",
            "connections lost",
            out.dead_conns as f64,
            Unit::Count,
            None,
        );
    }
}

/// Broken runs (exit non-zero): nothing delivered, connections lost, errors;
/// in a quick run also any delivery missing.
fn check_engine(ctx: &Ctx, r: &mut Report, out: &engine::Outcome) {
    if out.delivered == 0 {
        r.problems.push("no deliveries at all".into());
    }
    if out.dead_conns > 0 {
        r.problems.push(format!(
            "{} connections closed by the server during the run",
            out.dead_conns
        ));
    }
    if out.unexpected > 0 {
        r.notes
            .push(format!("{} unexpected frames received", out.unexpected));
    }
    for e in out.errors.iter().take(5) {
        r.notes.push(e.clone());
    }
    if out.delivered < out.expected {
        let msg = format!(
            "{} of {} deliveries missing after the drain time",
            out.expected - out.delivered,
            out.expected
        );
        if ctx.quick {
            r.problems.push(msg);
        } else {
            r.notes.push(msg);
        }
    }
}

fn relay_wl(ctx: &Ctx, o: &relay::RelayOpts) -> Result<Report, String> {
    let mut r = Report::new("relay");
    r.param("write_size", o.write_size);
    r.param("bytes_cap", o.bytes);
    r.param("seconds_cap", o.seconds);
    r.param("ping_size", o.ping_size);
    let mut target = ctx.spec.start()?;
    let addr = target.addr;
    let run_id = ctx.run_id.clone();
    // The control connections stay open as long as their relay is used.
    let mut controls = Vec::new();
    let relay_pair = |k: usize| -> Result<(std::net::TcpStream, std::net::TcpStream), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let [pa, pb, ca, cb] = relay::establish(
            addr,
            &format!("ra{run_id}{k}"),
            &format!("rb{run_id}{k}"),
            deadline,
        )?;
        controls.push((ca, cb));
        Ok((pa, pb))
    };
    let rounds = if ctx.quick { 2 } else { 5 };
    r.param("rounds", rounds);
    let meter = Meter::start(&target);
    let (via, direct) = relay::measure_both(relay_pair, o, rounds)?;
    meter.finish(&target, &mut r);
    target.stop();
    let full = !ctx.quick && o.write_size == 65536;
    let us = |ns: u64| ns as f64 / 1e3;
    r.fig(
        "relay_gbps",
        "relay throughput",
        via.gbps(),
        Unit::GBps,
        None,
    );
    r.fig(
        "direct_gbps",
        "direct loopback throughput",
        direct.gbps(),
        Unit::GBps,
        None,
    );
    r.fig(
        "relay_vs_direct_pct",
        "relay throughput / direct",
        via.gbps() / direct.gbps().max(1e-12) * 100.0,
        Unit::Pct,
        full.then_some(Goal::AtLeast(90.0)),
    );
    r.fig(
        "relay_rtt_p50_us",
        "relay RTT p50 (echo thread)",
        us(via.rtt.quantile(0.5)),
        Unit::Us,
        None,
    );
    r.fig(
        "relay_rtt_vs_direct",
        "relay RTT p50 / direct RTT p50",
        via.rtt.quantile(0.5) as f64 / direct.rtt.quantile(0.5).max(1) as f64,
        Unit::Ratio,
        full.then_some(Goal::AtMost(1.2)),
    );
    r.row("relay_gbps", Some("direct_gbps"));
    r.row("relay_vs_direct_pct", None);
    r.row("relay_rtt_p50_us", Some("direct_rtt_p50_us"));
    r.row("relay_rtt_vs_direct", None);
    r.fig(
        "relay_rtt_p99_us",
        "relay RTT p99 (echo thread)",
        us(via.rtt.quantile(0.99)),
        Unit::Us,
        None,
    );
    r.fig(
        "direct_rtt_p50_us",
        "direct RTT p50 (echo thread)",
        us(direct.rtt.quantile(0.5)),
        Unit::Us,
        None,
    );
    r.fig(
        "direct_rtt_p99_us",
        "direct RTT p99 (echo thread)",
        us(direct.rtt.quantile(0.99)),
        Unit::Us,
        None,
    );
    r.fig(
        "relay_rtt_inline_p50_us",
        "relay RTT p50 (one thread)",
        us(via.rtt_inline.quantile(0.5)),
        Unit::Us,
        None,
    );
    r.fig(
        "direct_rtt_inline_p50_us",
        "direct RTT p50 (one thread)",
        us(direct.rtt_inline.quantile(0.5)),
        Unit::Us,
        None,
    );
    r.fig(
        "relay_bytes",
        "relay bytes moved",
        via.bytes as f64,
        Unit::Count,
        None,
    );
    r.fig(
        "relay_s",
        "relay bulk time",
        via.elapsed.as_secs_f64(),
        Unit::Secs,
        None,
    );
    r.notes.push(
        "relay and direct measured in alternation (ping-pong rounds, then bulk rounds, each on fresh connections); \
         RTT: 64-byte ping-pong; 'echo thread': the far end echoes on its own thread (what two programs see); \
         'one thread': one thread plays both ends, timing only the path in between; server CPU covers both"
            .into(),
    );
    if via.bytes == 0 {
        r.problems.push("nothing went through the relay".into());
    }
    Ok(r)
}

/// The stack size of chinwagd's connection threads (`net::CONN_STACK`):
/// how their stacks are told apart in /proc/PID/smaps.
const CONN_STACK_KIB: u64 = 128;

/// Wait until the server's thread count stops moving (its spare connection
/// threads started), at most `limit`.
fn settle_threads(t: &Target, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut last = t.rss_threads().map_or(0, |s| s.threads);
    let mut stable_since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let now = t.rss_threads().map_or(0, |s| s.threads);
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= Duration::from_millis(200) {
            return;
        }
    }
}

/// The kernel's memory outside any RSS, in KiB: stacks, slab, TCP buffers.
fn kernel_memory() -> (Option<u64>, Option<u64>, Option<u64>) {
    (
        server::meminfo_kib("KernelStack"),
        server::meminfo_kib("Slab"),
        server::tcp_socket_kib(),
    )
}

fn idle(ctx: &Ctx, n: usize) -> Result<Report, String> {
    let mut r = Report::new("idle");
    ctx.check_fds(n)?;
    r.param("clients", n);
    r.param("login_window", ctx.login_window);
    let deadline = || Instant::now() + Duration::from_secs(if ctx.quick { 10 } else { 60 });
    // The reference, in this run: the same logins against a one-thread
    // server that only accepts, reads the LOGIN and answers.
    let bare = refs::BareLoginServer::start().map_err(|e| format!("bare server: {e}"))?;
    let reference = conn::login_all(bare.addr(), ctx.names("b", n), ctx.login_window, deadline())
        .map_err(|e| format!("the bare reference server: {e}"))?;
    drop(reference.conns);
    drop(bare);
    let mut target = ctx.spec.start()?;
    settle_threads(&target, Duration::from_secs(5));
    let before = target.stats();
    let split0 = target
        .pid
        .and_then(|p| server::mem_split(p, CONN_STACK_KIB));
    let kernel0 = kernel_memory();
    let meter = Meter::start(&target);
    let login = conn::login_all(target.addr, ctx.names("i", n), ctx.login_window, deadline())
        .map_err(|e| format!("chinwagd: {e}"))?;
    // Let the server settle (spare threads refilled, allocator quiet) before reading.
    settle_threads(&target, Duration::from_secs(if ctx.quick { 2 } else { 5 }));
    let after = target.stats();
    let split1 = target
        .pid
        .and_then(|p| server::mem_split(p, CONN_STACK_KIB));
    let kernel1 = kernel_memory();
    let full = !ctx.quick && n == 10_000;
    r.fig(
        "login_s",
        "time to log all clients in",
        login.elapsed.as_secs_f64(),
        Unit::Secs,
        full.then_some(Goal::AtMost(0.5)),
    );
    r.fig(
        "ref_login_s",
        "reference: the same logins, one-thread bare server",
        reference.elapsed.as_secs_f64(),
        Unit::Secs,
        None,
    );
    r.row("login_s", Some("ref_login_s"));
    r.fig(
        "logins_per_s",
        "logins per second",
        n as f64 / login.elapsed.as_secs_f64().max(1e-9),
        Unit::PerSec,
        None,
    );
    let per = |kib: u64| kib as f64 / n.max(1) as f64;
    if let (Some(a), Some(b)) = (after, before) {
        r.fig(
            "server_rss_mib",
            "server RSS with all logged in",
            a.rss_kib as f64 / 1024.0,
            Unit::MiB,
            None,
        );
        r.fig(
            "server_threads",
            "server threads",
            a.threads as f64,
            Unit::Count,
            None,
        );
        r.fig(
            "server_rss_start_mib",
            "server RSS before logins (spare threads started)",
            b.rss_kib as f64 / 1024.0,
            Unit::MiB,
            None,
        );
        r.fig(
            "rss_per_conn_kib",
            "server RSS per connection (KiB)",
            per(a.rss_kib.saturating_sub(b.rss_kib)),
            Unit::Count,
            full.then_some(Goal::AtMost(8.0)),
        );
        r.row("rss_per_conn_kib", None);
    } else {
        r.notes
            .push("no server pid: RSS and threads unknown (pass --pid)".into());
    }
    if let (Some(a), Some(b)) = (&split1, &split0) {
        r.fig(
            "stack_per_conn_kib",
            "of which thread stacks (resident KiB per connection)",
            per(a.stack_kib.saturating_sub(b.stack_kib)),
            Unit::Count,
            None,
        );
        r.fig(
            "stack_pages_per_thread",
            "resident stack pages per connection thread",
            a.stack_kib as f64 / 4.0 / a.stacks.max(1) as f64,
            Unit::Count,
            None,
        );
        r.fig(
            "heap_per_conn_kib",
            "of which heap and other anonymous memory (KiB per connection)",
            per(a.other_anon_kib.saturating_sub(b.other_anon_kib)),
            Unit::Count,
            None,
        );
        r.row("stack_per_conn_kib", None);
        r.row("heap_per_conn_kib", None);
        r.fig(
            "stack_map_kib",
            "one connection thread's stack mapping (KiB, guard excluded)",
            a.map_kib as f64,
            Unit::Count,
            None,
        );
        r.fig(
            "conn_stacks",
            "connection-thread stacks (connections and spares)",
            a.stacks as f64,
            Unit::Count,
            None,
        );
    }
    // The guard of the stack pages above: how far below its stack's top
    // an idle connection thread waits (the C library's thread block and
    // TLS included: 4,864 bytes of it with glibc, 1,920 with musl); past
    // 4,096 it touches a second page, past 8,192 a third.
    if let Some(d) = target
        .pid
        .and_then(|p| server::blocked_stack_depth(p, "cw-chatos", CONN_STACK_KIB))
    {
        r.fig(
            "idle_stack_depth_b",
            "deepest idle connection thread: bytes from its stack's top to the blocked recv",
            d.max_bytes as f64,
            Unit::Count,
            None,
        );
        r.row("idle_stack_depth_b", None);
    }
    let kernel = [
        (
            "kernel_stack_per_conn_kib",
            "outside RSS: kernel stacks (KiB per connection, system-wide delta)",
            kernel0.0,
            kernel1.0,
            true,
        ),
        (
            "slab_per_conn_kib",
            "outside RSS: kernel slab (KiB per connection, system-wide, both socket ends)",
            kernel0.1,
            kernel1.1,
            true,
        ),
        (
            "tcp_buffers_per_conn_kib",
            "outside RSS: TCP buffers in use (KiB per connection, system-wide)",
            kernel0.2,
            kernel1.2,
            false,
        ),
    ];
    for (key, label, before, after, row) in kernel {
        if let (Some(a), Some(b)) = (after, before) {
            r.fig(key, label, per(a.saturating_sub(b)), Unit::Count, None);
            if row {
                r.row(key, None);
            }
        }
    }
    meter.finish(&target, &mut r);
    r.notes.push(
        "RSS per connection = (RSS with all logged in - RSS before, spare threads already started) / clients; \
         kernel figures are system-wide deltas over the same interval (other processes move them too)"
            .into(),
    );
    let conns = login.conns;
    let t = Instant::now();
    drop(conns);
    r.notes.push(format!(
        "closing {n} connections took {:.3} s on the bench side",
        t.elapsed().as_secs_f64()
    ));
    target.stop();
    if matches!(ctx.spec, Spec::Spawn { .. }) {
        idle_prestarted(ctx, n, full, &mut r)?;
    }
    Ok(r)
}

/// The same burst against a chinwagd told to keep `n` spare threads
/// (`--spare-threads n`, an operator's setting for a known burst): all
/// started and parked before the first login, so no login waits for a
/// thread to be created. Reported as a row of its own beside the default.
fn idle_prestarted(ctx: &Ctx, n: usize, full: bool, r: &mut Report) -> Result<(), String> {
    let mut target = ctx.spec.start_with(server::Start {
        flags: vec!["--spare-threads".into(), n.to_string()],
        ..Default::default()
    })?;
    // cw-spawn starts them in the background: wait until all are there.
    let deadline = Instant::now() + Duration::from_secs(if ctx.quick { 10 } else { 60 });
    while target
        .rss_threads()
        .is_some_and(|s| (s.threads as usize) < n)
    {
        if Instant::now() > deadline {
            return Err(format!(
                "{n} spare threads did not start within the deadline"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    settle_threads(&target, Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(if ctx.quick { 10 } else { 60 });
    let login = conn::login_all(target.addr, ctx.names("p", n), ctx.login_window, deadline)
        .map_err(|e| format!("chinwagd with {n} spare threads: {e}"))?;
    r.fig(
        "prestarted_login_s",
        "time to log all clients in, a thread per client pre-started (--spare-threads = clients)",
        login.elapsed.as_secs_f64(),
        Unit::Secs,
        full.then_some(Goal::AtMost(0.5)),
    );
    r.row("prestarted_login_s", Some("ref_login_s"));
    drop(login.conns);
    target.stop();
    Ok(())
}

/// `p2p-paced`: every client sends to its partner at `per_client` messages
/// a second: the latency at light load, beside the one-way latency of a
/// direct loopback TCP message between two threads measured in this run.
fn p2p_paced(ctx: &Ctx, clients: usize, per_client: f64, seconds: f64) -> Result<Report, String> {
    let mut r = Report::new("p2p-paced");
    if clients < 2 || clients & 1 != 0 {
        return Err("p2p needs an even number of clients, at least 2".into());
    }
    ctx.check_fds(clients)?;
    r.param("clients", clients);
    r.param("rate_per_client", per_client);
    r.param("seconds", seconds);
    let mut target = ctx.spec.start()?;
    let deadline = Instant::now() + Duration::from_secs(if ctx.quick { 10 } else { 60 });
    let login = conn::login_all(
        target.addr,
        ctx.names("q", clients),
        ctx.login_window,
        deadline,
    )?;
    let plan = Plan {
        kind: Kind::P2p,
        mode: Mode::Paced {
            rate: per_client * clients as f64,
        },
        senders: (0..clients).collect(),
        send_for: Duration::from_secs_f64(seconds),
        cap: None,
        drain: ctx.drain,
        threads: ctx.threads,
    };
    let meter = Meter::start(&target);
    let probe = refs::OneWayProbe::start(Duration::from_millis(1))
        .map_err(|e| format!("reference: {e}"))?;
    let out = engine::run(&plan, login.conns, || {});
    let reference = probe.finish().map_err(|e| format!("reference: {e}"))?;
    meter.finish(&target, &mut r);
    target.stop();
    // The same load through the bare forwarder: the model's floor here.
    let bare_out = forwarder_run(ctx, &plan, clients, "f")?;
    let us = |ns: u64| ns as f64 / 1e3;
    let full = !ctx.quick;
    let p50 = us(out.hist.quantile(0.5));
    let ref50 = us(reference.quantile(0.5));
    r.fig("p50_us", "latency p50", p50, Unit::Us, None);
    r.fig(
        "p99_us",
        "latency p99",
        us(out.hist.quantile(0.99)),
        Unit::Us,
        full.then_some(Goal::AtMost(1000.0)),
    );
    r.fig("max_us", "latency max", us(out.hist.max()), Unit::Us, None);
    one_way_figures(&mut r, &reference);
    r.fig(
        "p50_vs_ref",
        "p50 / reference p50",
        p50 / ref50.max(1e-9),
        Unit::Ratio,
        full.then_some(Goal::AtMost(2.0)),
    );
    r.fig(
        "ref_forwarder_p50_us",
        "reference: bare thread-per-connection forwarder p50",
        us(bare_out.hist.quantile(0.5)),
        Unit::Us,
        None,
    );
    r.fig(
        "ref_forwarder_p99_us",
        "reference: bare thread-per-connection forwarder p99",
        us(bare_out.hist.quantile(0.99)),
        Unit::Us,
        None,
    );
    r.row("p50_us", Some("ref_one_way_p50_us"));
    r.row("p50_vs_ref", None);
    r.row("p99_us", Some("ref_one_way_p99_us"));
    r.row("p50_us", Some("ref_forwarder_p50_us"));
    r.row("p99_us", Some("ref_forwarder_p99_us"));
    r.fig(
        "delivered_pct",
        "delivered (% of owed)",
        out.delivered_pct(),
        Unit::Pct,
        None,
    );
    r.fig(
        "deliveries_per_s",
        "deliveries per second",
        out.per_s(),
        Unit::PerSec,
        None,
    );
    if out.lag.count() > 0 {
        r.fig(
            "send_lag_p99_us",
            "sender lag behind schedule p99",
            us(out.lag.quantile(0.99)),
            Unit::Us,
            None,
        );
    }
    r.notes.push(
        "reference: measured meanwhile, two threads of the bench, a 64-byte message every ms, \
         the receiver blocked in its read; chinwagd's path has two such hops \
         (bench -> server thread -> bench)"
            .into(),
    );
    check_engine(ctx, &mut r, &out);
    Ok(r)
}

/// `churn`: connections that log in and leave, `window` at a time, for
/// `seconds`; run with the server's spare threads and without (a thread
/// created per connection), in the same run.
fn churn_wl(ctx: &Ctx, window: usize, seconds: f64) -> Result<Report, String> {
    let mut r = Report::new("churn");
    r.param("window", window);
    r.param("seconds", seconds);
    let mut rates = [0.0f64; 2];
    for (i, spare) in [None, Some("0")].into_iter().enumerate() {
        let flags = spare.map_or(Vec::new(), |s| {
            vec!["--spare-threads".to_string(), s.into()]
        });
        let mut target = ctx.spec.start_with(server::Start {
            flags,
            ..Default::default()
        })?;
        settle_threads(&target, Duration::from_secs(5));
        let before = target.stats();
        let out = conn::churn(
            target.addr,
            &format!("c{}{i}", ctx.run_id),
            window,
            Duration::from_secs_f64(seconds),
        )?;
        let after = target.stats();
        let per_s = out.cycles as f64 / out.elapsed.as_secs_f64().max(1e-9);
        rates[i] = per_s;
        let us = |ns: u64| ns as f64 / 1e3;
        let cpu_us = match (before, after) {
            (Some(b), Some(a)) => {
                a.cpu.saturating_sub(b.cpu).as_secs_f64() * 1e6 / out.cycles.max(1) as f64
            }
            _ => 0.0,
        };
        if i == 0 {
            r.fig(
                "cycles_per_s",
                "connect-login-close cycles per second",
                per_s,
                Unit::PerSec,
                None,
            );
            r.fig(
                "login_p50_us",
                "connect to LOGIN_ACCEPTED p50",
                us(out.latency.quantile(0.5)),
                Unit::Us,
                None,
            );
            r.fig(
                "login_p99_us",
                "connect to LOGIN_ACCEPTED p99",
                us(out.latency.quantile(0.99)),
                Unit::Us,
                None,
            );
            r.fig(
                "server_cpu_us_per_cycle",
                "server CPU per cycle",
                cpu_us,
                Unit::Us,
                None,
            );
            peak_figures(&target, &mut r);
        } else {
            r.fig(
                "nopool_cycles_per_s",
                "same, no spare threads (--spare-threads 0)",
                per_s,
                Unit::PerSec,
                None,
            );
            r.fig(
                "nopool_login_p50_us",
                "same, no spare threads: p50",
                us(out.latency.quantile(0.5)),
                Unit::Us,
                None,
            );
            r.fig(
                "nopool_login_p99_us",
                "same, no spare threads: p99",
                us(out.latency.quantile(0.99)),
                Unit::Us,
                None,
            );
            r.fig(
                "nopool_server_cpu_us_per_cycle",
                "same, no spare threads: server CPU per cycle",
                cpu_us,
                Unit::Us,
                None,
            );
        }
        if out.cycles == 0 {
            r.problems.push("no connection completed a cycle".into());
        }
        target.stop();
    }
    r.row("cycles_per_s", Some("nopool_cycles_per_s"));
    r.row("login_p50_us", Some("nopool_login_p50_us"));
    r.row(
        "server_cpu_us_per_cycle",
        Some("nopool_server_cpu_us_per_cycle"),
    );
    r.notes.push(
        "each cycle: connect, LOGIN with a fresh name, LOGIN_ACCEPTED, close; the second run starts a thread per connection"
            .into(),
    );
    Ok(r)
}

/// Logins per second with real Argon2id, then acknowledged messages per
/// second through the store, on a database file in the temp directory.
fn accounts_wl(ctx: &Ctx) -> Result<Report, String> {
    let mut r = Report::new("accounts");
    let (login_threads, login_accounts, pairs, window) = (8, 32, 8, 16);
    let secs = if ctx.quick { 0.5 } else { 5.0 };
    r.param("login_threads", login_threads);
    r.param("pairs", pairs);
    r.param("window", window);
    r.param("seconds", secs);
    let db = std::env::temp_dir().join(format!("chinwag-bench-{}.db", ctx.run_id));
    let mut target = ctx.spec.start_with_db(Some(&db))?;
    let result = (|| {
        let addr = target
            .accounts
            .ok_or("the accounts listener is unknown: pass --accounts-addr")?;
        let run = &ctx.run_id;
        accounts::register_all(addr, run, login_accounts + 2 * pairs)?;
        let meter = Meter::start(&target);
        let l = accounts::logins(addr, run, login_accounts, login_threads, secs)?;
        let a = accounts::acked_messages(addr, run, login_accounts, pairs, window, secs)?;
        meter.finish(&target, &mut r);
        let ms = |ns: u64| ns as f64 / 1e6;
        r.fig(
            "logins_per_s",
            "password logins per second",
            l.logins as f64 / l.elapsed.as_secs_f64(),
            Unit::PerSec,
            None,
        );
        r.fig(
            "login_p50_ms",
            "login latency p50",
            ms(l.latency.quantile(0.5)),
            Unit::Ms,
            None,
        );
        r.fig(
            "login_p99_ms",
            "login latency p99",
            ms(l.latency.quantile(0.99)),
            Unit::Ms,
            None,
        );
        r.fig(
            "acked_per_s",
            "acknowledged messages per second",
            a.acked as f64 / a.elapsed.as_secs_f64(),
            Unit::PerSec,
            None,
        );
        r.fig(
            "ack_p50_ms",
            "152 latency p50",
            ms(a.latency.quantile(0.5)),
            Unit::Ms,
            None,
        );
        r.fig(
            "ack_p99_ms",
            "152 latency p99",
            ms(a.latency.quantile(0.99)),
            Unit::Ms,
            None,
        );
        r.row("logins_per_s", None);
        r.row("acked_per_s", None);
        r.row("ack_p99_ms", None);
        r.fig(
            "acked",
            "messages acknowledged (152)",
            a.acked as f64,
            Unit::Count,
            None,
        );
        r.fig(
            "failed",
            "messages refused (153)",
            a.failed as f64,
            Unit::Count,
            None,
        );
        r.fig(
            "delivered",
            "messages delivered live (151)",
            a.delivered as f64,
            Unit::Count,
            None,
        );
        r.notes.push(format!(
            "{login_threads} threads log in and out over {login_accounts} accounts; \
             {pairs} friend pairs send 64-byte messages with {window} awaiting 152 each; \
             WAL + synchronous=FULL on {}",
            db.display()
        ));
        if l.logins == 0 || a.acked == 0 {
            r.problems
                .push("no login or no acknowledged message".into());
        }
        if a.failed > 0 || a.delivered < a.acked {
            r.problems.push(format!(
                "{} refused, {} of {} delivered",
                a.failed, a.delivered, a.acked
            ));
        }
        Ok::<(), String>(())
    })();
    target.stop();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    result.map(|()| r)
}
