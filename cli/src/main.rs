//! chinwag: a terminal chat client for the four chinwag dialects, on the
//! library's Rust API. The main thread edits lines (rustyline: history,
//! completion of commands and names); one thread takes the client's events
//! and prints them above the line being typed, never through it.

mod audio;
mod clock;
mod session;

use std::borrow::Cow;
use std::cell::Cell;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;

use chinwag::{Client, Dialect};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, ExternalPrinter, Helper};

use session::Session;

const USAGE: &str = "\
usage: chinwag [--host HOST] [--port PORT] [--downloads DIR] [--login NAME] DIALECT

DIALECT is chatos (port 7001), babel (7002), accounts (7003) or rooms (7004).
--login logs in at start (accounts: --login EMAIL, and the password is asked
for). Type /help once connected; a plain line is a message.";

/// Prints above the line being edited once the editor runs; plain stdout
/// before that (and when there is no terminal).
pub struct Printer(Mutex<Option<Box<dyn ExternalPrinter + Send>>>);

pub static PRINTER: Printer = Printer(Mutex::new(None));

impl Printer {
    pub fn say(&self, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        let text = lines
            .iter()
            .map(|l| visible(l))
            .collect::<Vec<_>>()
            .join("\n");
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let printed = match p.as_mut() {
            Some(p) => p.print(format!("{text}\n")).is_ok(),
            None => false,
        };
        if !printed {
            println!("{text}");
        }
    }
}

/// `line` as the terminal is to show it: every control character but tab
/// (C0, DEL, C1) written out (`^[` for ESC, `^J` for a line feed, `^?` for
/// DEL, `<U+009B>` for a C1 control), so that nothing another user or the
/// server sends can move the cursor, clear the screen, retitle the window,
/// or break a line to pose as a line of its own (`<bob> ...`).
pub fn visible(line: &str) -> Cow<'_, str> {
    let hidden = |c: char| c.is_control() && c != '\t';
    if !line.chars().any(hidden) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        match c {
            c if !hidden(c) => out.push(c),
            '\0'..='\x1f' => {
                out.push('^');
                out.push(char::from(c as u8 ^ 0x40));
            }
            '\x7f' => out.push_str("^?"),
            c => out.push_str(&format!("<U+{:04X}>", u32::from(c))),
        }
    }
    Cow::Owned(out)
}

/// Drop what was typed after a byte that is not UTF-8 and is still waiting
/// in the terminal's input queue (the rest of that line), so that it does
/// not go out as a line of its own. Nothing to do when standard input is
/// not a terminal: the line editor read that line whole.
fn discard_typed_input() {
    // SAFETY: isatty and tcflush take a descriptor and no pointer; on
    // standard input they touch nothing of this process's memory.
    unsafe {
        if libc::isatty(libc::STDIN_FILENO) == 1 {
            libc::tcflush(libc::STDIN_FILENO, libc::TCIFLUSH);
        }
    }
}

/// Completion of command words (first word, after '/') and of the names
/// the session has seen (any other word); and, while a password is typed,
/// a star in place of each character (and no completion).
struct Complete {
    session: Arc<Session>,
    masking: Cell<bool>,
}

impl Completer for Complete {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        if self.masking.get() {
            return Ok((pos, Vec::new()));
        }
        let start = line[..pos].rfind(' ').map_or(0, |i| i + 1);
        let word = &line[start..pos];
        let pairs = |it: &mut dyn Iterator<Item = String>| -> Vec<Pair> {
            it.filter(|c| c.starts_with(word))
                .map(|c| Pair {
                    display: c.clone(),
                    replacement: format!("{c} "),
                })
                .collect()
        };
        let found = if start == 0 && word.starts_with('/') {
            pairs(&mut session::command_words().into_iter().map(String::from))
        } else {
            pairs(&mut self.session.names.lock().clone().into_iter())
        };
        Ok((start, found))
    }
}

impl Hinter for Complete {
    type Hint = String;
}
impl Highlighter for Complete {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(&'s self, prompt: &'p str, _: bool) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
    /// A password shows as one star a character.
    fn highlight<'l>(&self, line: &'l str, _: usize) -> Cow<'l, str> {
        if self.masking.get() {
            Cow::Owned("*".repeat(line.chars().count()))
        } else {
            Cow::Borrowed(line)
        }
    }
    /// While masking, every key redraws the line through `highlight`
    /// (rustyline would otherwise echo a character typed at the end as is).
    fn highlight_char(&self, _: &str, _: usize, _: rustyline::highlight::CmdKind) -> bool {
        self.masking.get()
    }
}
impl Validator for Complete {}
impl Helper for Complete {}

type LineEditor = Editor<Complete, rustyline::history::DefaultHistory>;

/// Read a password at `prompt` on the line editor, shown as stars, kept
/// out of the history. `None`: the user gave up (Ctrl-C, Ctrl-D, an empty
/// line).
fn ask_password(editor: &mut LineEditor, prompt: &str) -> Option<String> {
    let mask = |editor: &LineEditor, on: bool| {
        if let Some(h) = editor.helper() {
            h.masking.set(on);
        }
    };
    mask(editor, true);
    let read = editor.readline(prompt);
    mask(editor, false);
    read.ok().filter(|p| !p.is_empty())
}

/// Run one line the user typed (or `--login` gave): a password it lacks is
/// asked for first; the history keeps the line without its password.
/// `None`: the user leaves.
fn run_line(session: &Arc<Session>, editor: &mut LineEditor, line: &str) -> Option<Vec<String>> {
    let _ = editor.add_history_entry(session.for_history(line).as_ref());
    match session.password_prompt(line) {
        None => session.line(line),
        Some(prompt) => Some(match ask_password(editor, prompt) {
            Some(password) => session.with_password(line, &password),
            None => vec!["! no password given: nothing sent".into()],
        }),
    }
}

struct Args {
    host: String,
    port: Option<u16>,
    dialect: Dialect,
    downloads: PathBuf,
    login: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut host = "127.0.0.1".to_string();
    let (mut port, mut dialect, mut login) = (None, None, None);
    let mut downloads = PathBuf::from(".");
    while let Some(a) = args.next() {
        let mut value = |what: &str| args.next().ok_or(format!("{what} needs a value"));
        match a.as_str() {
            "--host" => host = value("--host")?,
            "--port" => port = Some(value("--port")?.parse().map_err(|_| "--port is 1-65535")?),
            "--downloads" => downloads = PathBuf::from(value("--downloads")?),
            "--login" => login = Some(value("--login")?),
            "-h" | "--help" => return Err(String::new()),
            d => {
                dialect = Some(match d {
                    "chatos" => Dialect::CW_DIALECT_CHATOS,
                    "babel" => Dialect::CW_DIALECT_BABEL,
                    "accounts" => Dialect::CW_DIALECT_ACCOUNTS,
                    "rooms" => Dialect::CW_DIALECT_ROOMS,
                    other => return Err(format!("unknown dialect or option {other:?}")),
                })
            }
        }
    }
    let dialect = dialect.ok_or("which dialect?")?;
    Ok(Args {
        host,
        port,
        dialect,
        downloads,
        login,
    })
}

fn default_port(d: Dialect) -> u16 {
    match d {
        Dialect::CW_DIALECT_CHATOS => 7001,
        Dialect::CW_DIALECT_BABEL => 7002,
        Dialect::CW_DIALECT_ACCOUNTS => 7003,
        Dialect::CW_DIALECT_ROOMS => 7004,
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("chinwag: {why}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let port = args.port.unwrap_or_else(|| default_port(args.dialect));
    // Accounts: ask for stored times, so messages and history show when.
    let features = match args.dialect {
        Dialect::CW_DIALECT_ACCOUNTS => chinwag::accounts::feature::STAMPS,
        _ => 0,
    };
    let client = match Client::connect_with(&args.host, port, args.dialect, features) {
        Ok(c) => c,
        Err(e) => {
            // The library's message names the server already when the
            // connection itself failed; a failed handshake does not.
            let server = format!("{}:{port}", args.host);
            if e.message.contains(&server) {
                eprintln!("chinwag: {}", e.message);
            } else {
                eprintln!("chinwag: cannot connect to {server}: {}", e.message);
            }
            return ExitCode::FAILURE;
        }
    };
    let session = Session::new(client, args.downloads);
    println!(
        "connected to {}:{port} ({}); /help lists the commands",
        args.host,
        args.dialect.name()
    );
    let mut editor: LineEditor = match Editor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("chinwag: no line editor: {e}");
            return ExitCode::FAILURE;
        }
    };
    editor.set_helper(Some(Complete {
        session: session.clone(),
        masking: Cell::new(false),
    }));
    if let Ok(p) = editor.create_external_printer() {
        *PRINTER.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(p));
    }

    let events = {
        let s = session.clone();
        thread::Builder::new()
            .name("chinwag-events".into())
            .spawn(move || loop {
                match s.client.next_event(None) {
                    Ok(ev) => PRINTER.say(s.event(ev)),
                    Err(e) if e.code == chinwag::Code::CW_CLOSED => break,
                    Err(_) => break,
                }
            })
            .ok()
    };

    // Accounts: `--login EMAIL` asks for the password.
    if let Some(name) = &args.login {
        if let Some(lines) = run_line(&session, &mut editor, &format!("/login {name}")) {
            PRINTER.say(lines);
        }
    }

    loop {
        match editor.readline("> ") {
            Ok(line) => match run_line(&session, &mut editor, &line) {
                Some(out) => PRINTER.say(out),
                None => break,
            },
            Err(ReadlineError::Interrupted) => continue,
            // A byte that is not UTF-8 (a terminal in Latin-1, a stray
            // paste): that line is dropped, the client carries on.
            Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                discard_typed_input();
                PRINTER.say(vec![
                    "! that line was not UTF-8 text (is the terminal set to UTF-8?): not sent"
                        .into(),
                ]);
            }
            Err(_) => break,
        }
    }
    session.client.close();
    if let Some(t) = events {
        let _ = t.join();
    }
    *PRINTER.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    println!("bye");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::visible;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(visible("plain text, tab\tand é"), "plain text, tab\tand é");
        assert_eq!(
            visible("\x1b]0;owned\x07\x1b[2Jhi\nbob> x\r\x7f\u{9b}"),
            "^[]0;owned^G^[[2Jhi^Jbob> x^M^?<U+009B>"
        );
        assert_eq!(visible("\0"), "^@");
    }
}
