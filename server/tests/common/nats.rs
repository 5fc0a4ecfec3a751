//! A throwaway NATS server for the cluster tests: Debian's `nats-server`
//! (installed by scripts/install-deps.sh), JetStream on, its store in a
//! temporary directory, listening on 127.0.0.1 on a port it picks itself
//! (`-p -1`; the port is read from its log, never guessed). Stopped (and
//! its directory removed) on drop, on panic too; should the test process
//! die outright, the server gets SIGTERM (parent-death signal).
//!
//! Included with `#[path]` beside `postgres.rs` as `testpg`, whose process
//! keeper it shares.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the server may take to start on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

pub struct Nats {
    pub port: u16,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

/// The `nats-server` program: `CHINWAG_NATS_SERVER`, else PATH, else
/// Debian's /usr/sbin. None (the caller skips) when it is missing and
/// `CHINWAG_SKIP_TOOLS` names "nats"; missing otherwise fails the test.
fn program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHINWAG_NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("nats-server"))
            .find(|p| p.exists())
    });
    if let Some(p) = on_path.or_else(|| {
        let p = PathBuf::from("/usr/sbin/nats-server");
        p.exists().then_some(p)
    }) {
        return Some(p);
    }
    let skip = std::env::var("CHINWAG_SKIP_TOOLS").unwrap_or_default();
    if skip.split(',').any(|t| t.trim() == "nats") {
        eprintln!("SKIPPED: nats-server not installed, and CHINWAG_SKIP_TOOLS says so");
        return None;
    }
    panic!(
        "nats-server is required: scripts/install-deps.sh installs Debian's nats-server; \
         to skip these tests set CHINWAG_SKIP_TOOLS=nats"
    );
}

impl Nats {
    /// A new server; None when it is missing and the tests are to skip.
    pub fn start() -> Option<Nats> {
        Nats::start_with(|_| String::new())
    }

    /// A new server that also reads the configuration file `conf` writes
    /// (given the server's directory, for files such as certificates):
    /// authorization, TLS. Listening address, port and JetStream stay the
    /// flags'.
    pub fn start_with(conf: impl FnOnce(&std::path::Path) -> String) -> Option<Nats> {
        let bin = program()?;
        let dir = std::env::temp_dir().join(format!(
            "cw-nats-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let text = conf(&dir);
        if !text.is_empty() {
            std::fs::write(dir.join("nats.conf"), text).unwrap();
        }
        let mut n = Nats {
            port: 0,
            dir,
            child: Mutex::new(None),
        };
        n.port = n.spawn(&bin, None);
        Some(n)
    }

    /// The server's directory (its configuration, its JetStream store).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Start the process (on `port`, or one it picks) and wait for its
    /// client port.
    fn spawn(&self, bin: &PathBuf, port: Option<u16>) -> u16 {
        let mut cmd = Command::new(bin);
        cmd.args(["-a", "127.0.0.1", "-p"])
            .arg(port.map_or("-1".to_owned(), |p| p.to_string()))
            .arg("-js")
            .arg("-sd")
            .arg(self.dir.join("js"))
            .args(
                Some(self.dir.join("nats.conf"))
                    .filter(|c| c.exists())
                    .map(|c| vec!["-c".into(), c])
                    .unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = crate::testpg::spawn_kept(cmd).expect("nats-server starts");
        let err = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut told = false;
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if !told {
                    if let Some((_, at)) = line.split_once("Listening for client connections on ") {
                        if let Some(p) = at.trim().rsplit(':').next().and_then(|p| p.parse().ok()) {
                            let _ = tx.send(p);
                            told = true;
                        }
                    }
                }
            }
        });
        let got: u16 = match rx.recv_timeout(PATIENCE) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nats-server did not say where it listens within {PATIENCE:?}");
            }
        };
        // The port is open once it says so; JetStream is ready with it.
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", got)).is_err() {
            assert!(Instant::now() < deadline, "nats-server not accepting");
            std::thread::sleep(Duration::from_millis(20));
        }
        *self.child.lock().unwrap() = Some(child);
        got
    }

    /// Kill the server (the bus becomes unreachable).
    pub fn kill(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port with the same JetStream store.
    pub fn restart(&self) {
        self.kill();
        let port = self.spawn(&program().expect("was there"), Some(self.port));
        assert_eq!(port, self.port);
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
