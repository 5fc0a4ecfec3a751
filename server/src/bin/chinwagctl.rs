//! chinwagctl: the operator's command line for a running chinwagd. It sends
//! one JSON-lines request over the server's admin socket and prints the
//! answer; it holds no state and decides nothing (docs/operations.md).

use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chinwagd::Config;
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

/// Administer a running chinwagd through its admin socket.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The admin socket. Default: the one `--config` names, else the
    /// server's default, ./chinwag.db.sock.
    #[arg(long, short)]
    socket: Option<PathBuf>,
    /// chinwagd's configuration file, to find the socket it uses.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print the server's JSON answer as it is.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List who is online, with dialect and address.
    Who,
    /// Close a user's connection.
    Kick { name: String },
    /// Ban a name (or, with --ip, an address) and close its connections.
    Ban {
        /// The name to ban (omit with --ip).
        #[arg(required_unless_present = "ip", conflicts_with = "ip")]
        name: Option<String>,
        #[arg(long)]
        ip: Option<String>,
        /// A note kept with the ban.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift a ban on a name (or, with --ip, an address).
    Unban {
        /// The name to unban (omit with --ip).
        #[arg(required_unless_present = "ip", conflicts_with = "ip")]
        name: Option<String>,
        #[arg(long)]
        ip: Option<String>,
    },
    /// List the bans in force.
    Bans,
    /// Delete an accounts-dialect account and everything stored about it.
    DeleteAccount { name: String },
    /// Set a new password for an account; it is read from standard input.
    ResetPassword { name: String },
    /// Copy the database, while the server runs, into a new file.
    Backup { dest: PathBuf },
    /// Whether the server and its store answer.
    Health,
}

/// How long to wait for an answer (a backup may take much longer).
const ANSWER_WAIT: Duration = Duration::from_secs(30);

fn socket_path(args: &Args) -> Result<PathBuf, String> {
    if let Some(s) = &args.socket {
        return Ok(s.clone());
    }
    let cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Config::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Config::default(),
    };
    cfg.admin_socket_path()
        .ok_or_else(|| "that configuration has no admin socket".into())
}

/// Read a password from standard input without echoing it on a terminal.
fn read_password(name: &str) -> Result<String, String> {
    let stdin = io::stdin();
    let tty = stdin.is_terminal();
    let mut saved: Option<libc::termios> = None;
    if tty {
        eprint!("new password for {name}: ");
        let _ = io::stderr().flush();
        // SAFETY: tcgetattr/tcsetattr on descriptor 0 with a termios we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) == 0 {
                saved = Some(t);
                t.c_lflag &= !libc::ECHO;
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        // SAFETY: as above, restoring the settings read before.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &t);
        }
        eprintln!();
    }
    read.map_err(|e| format!("cannot read the password: {e}"))?;
    let pw = line.trim_end_matches(['\r', '\n']).to_owned();
    if pw.is_empty() {
        return Err("no password given on standard input".into());
    }
    Ok(pw)
}

fn request(cmd: &Cmd) -> Result<Value, String> {
    Ok(match cmd {
        Cmd::Who => json!({ "cmd": "who" }),
        Cmd::Kick { name } => json!({ "cmd": "kick", "name": name }),
        Cmd::Ban { name, ip, reason } => {
            json!({ "cmd": "ban", "name": name, "ip": ip, "reason": reason })
        }
        Cmd::Unban { name, ip } => json!({ "cmd": "unban", "name": name, "ip": ip }),
        Cmd::Bans => json!({ "cmd": "bans" }),
        Cmd::DeleteAccount { name } => json!({ "cmd": "delete-account", "name": name }),
        Cmd::ResetPassword { name } => {
            json!({ "cmd": "reset-password", "name": name, "password": read_password(name)? })
        }
        Cmd::Backup { dest } => {
            // The server resolves nothing relative to our directory.
            let dest = std::path::absolute(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
            json!({ "cmd": "backup", "path": dest })
        }
        Cmd::Health => json!({ "cmd": "health" }),
    })
}

fn exchange(path: &PathBuf, req: &Value, wait: Option<Duration>) -> Result<Value, String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot reach chinwagd's admin socket {}: {e} (is chinwagd running, and are you its user?)",
            path.display()
        )
    })?;
    s.set_read_timeout(wait).map_err(|e| e.to_string())?;
    writeln!(s, "{req}").map_err(|e| format!("cannot send: {e}"))?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| format!("no answer: {e}"))?;
    serde_json::from_str(&line).map_err(|e| format!("unreadable answer {line:?}: {e}"))
}

/// The answer, as a person reads it.
fn show(cmd: &Cmd, v: &Value) {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    match cmd {
        Cmd::Who => {
            let users = v["users"].as_array().cloned().unwrap_or_default();
            println!("{:<24} {:<9} ADDRESS", "NAME", "DIALECT");
            for u in &users {
                println!(
                    "{:<24} {:<9} {}",
                    u["name"].as_str().unwrap_or(""),
                    u["dialect"].as_str().unwrap_or(""),
                    u["ip"].as_str().unwrap_or("")
                );
            }
            let mut per: Vec<(String, usize)> = Vec::new();
            for u in &users {
                let d = u["dialect"].as_str().unwrap_or("?").to_owned();
                match per.iter_mut().find(|(x, _)| *x == d) {
                    Some((_, n)) => *n += 1,
                    None => per.push((d, 1)),
                }
            }
            per.sort();
            let per: Vec<String> = per.iter().map(|(d, n)| format!("{d} {n}")).collect();
            if per.is_empty() {
                println!("0 online");
            } else {
                println!("{} online: {}", users.len(), per.join(", "));
            }
        }
        Cmd::Bans => {
            for b in v["bans"].as_array().cloned().unwrap_or_default() {
                let what = match (b["name"].as_str(), b["ip"].as_str()) {
                    (Some(n), _) => format!("name {n}"),
                    (_, Some(ip)) => format!("ip   {ip}"),
                    _ => continue,
                };
                match b["reason"].as_str().filter(|r| !r.is_empty()) {
                    Some(r) => println!("{what}  ({r})"),
                    None => println!("{what}"),
                }
            }
        }
        Cmd::Kick { name } => println!("{name} ({}) disconnected", s("dialect")),
        Cmd::Ban { .. } => {
            let kicked: Vec<String> = v["kicked"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let state = if v["new"].as_bool() == Some(false) {
                "already banned"
            } else {
                "banned"
            };
            if kicked.is_empty() {
                println!("{state}");
            } else {
                println!("{state}; disconnected: {}", kicked.join(", "));
            }
        }
        Cmd::Backup { .. } => println!("{} ({} bytes)", s("path"), v["bytes"]),
        Cmd::Health => println!(
            "store {}, {} connections, {} online, up {} s, chinwagd {}",
            s("store"),
            v["connections"],
            v["online"],
            v["uptime_s"],
            s("version")
        ),
        Cmd::Unban { .. } | Cmd::DeleteAccount { .. } | Cmd::ResetPassword { .. } => {
            println!("done")
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let run = || -> Result<Value, String> {
        let path = socket_path(&args)?;
        let req = request(&args.cmd)?;
        let wait = match args.cmd {
            Cmd::Backup { .. } => None,
            _ => Some(ANSWER_WAIT),
        };
        exchange(&path, &req, wait)
    };
    let answer = match run() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("chinwagctl: {e}");
            return ExitCode::from(2);
        }
    };
    let ok = answer["ok"].as_bool() == Some(true);
    if args.json {
        println!("{answer}");
    } else if ok {
        show(&args.cmd, &answer);
    } else {
        eprintln!(
            "chinwagctl: {}",
            answer["error"].as_str().unwrap_or("the server refused")
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
