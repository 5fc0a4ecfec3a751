//! The event and log descriptors from C: examples/c/poll_chat.c runs one
//! poll(2) loop over stdin, its client's event descriptor and the log
//! descriptor against an in-process chinwagd, and must show messages, its
//! own log lines and the server going away without ever blocking elsewhere.
//! Also the descriptors and the log queue through the C functions.

mod common;

use std::ffi::{CStr, CString};
use std::io::Write;
use std::process::Command;
use std::ptr;
use std::time::{Duration, Instant};

use chinwag::ffi::*;
use chinwag::{Client, Code, Dialect, Event};
use common::{build_c_example, expect_line, require, start};

const STEP: Duration = Duration::from_secs(10);

fn readable(fd: i32, wait_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    unsafe { libc::poll(&mut p, 1, wait_ms) == 1 }
}

#[test]
fn c_poll_loop_sees_events_log_lines_and_the_end() {
    if !require("cc") {
        return;
    }
    let exe = build_c_example("poll_chat");
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let port = srv.chatos_addr().port();
    let mut polly = start(Command::new(&exe).args(["127.0.0.1", &port.to_string(), "polly"]));
    let lines = &polly.lines;
    expect_line(lines, "logged in as polly", STEP);
    // The library's own line about the connection, through the log fd.
    expect_line(lines, "[log INFO chinwag::chatos] connected to", STEP);

    let dave = Client::connect("127.0.0.1", port, Dialect::CW_DIALECT_CHATOS).unwrap();
    dave.login("dave", Some(STEP)).unwrap();
    dave.send_message("hello polly").unwrap();
    expect_line(lines, "<dave> hello polly", STEP);

    writeln!(polly.stdin, "hi from the loop").unwrap();
    let deadline = Instant::now() + STEP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match dave.next_event(Some(left)).expect("polly's message") {
            Event::Message { from, text } if from == "polly" => {
                assert_eq!(text, "hi from the loop");
                break;
            }
            _ => {}
        }
    }
    // The server goes: the event fd wakes the loop with the end, and the
    // library logs it.
    srv.shutdown();
    let mut rest = Vec::new();
    let deadline = Instant::now() + STEP;
    while !rest.iter().any(|l: &String| l == "-- bye") {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => rest.push(l),
            Err(_) => panic!("no \"-- bye\" within {STEP:?}; saw {rest:?}"),
        }
    }
    // In whichever order poll saw them.
    for want in [
        "-- disconnected",
        "[log INFO chinwag::core] connection ended",
    ] {
        assert!(rest.iter().any(|l| l.starts_with(want)), "{want}: {rest:?}");
    }
    polly.succeeds("poll_chat", STEP);
}

#[test]
fn the_event_descriptor_through_the_c_functions() {
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let port = srv.chatos_addr().port();
    let host = CString::new("127.0.0.1").unwrap();
    let mut c = ptr::null_mut();
    assert_eq!(
        unsafe {
            cw_client_connect(
                host.as_ptr(),
                port,
                Dialect::CW_DIALECT_CHATOS as i32,
                &mut c,
            )
        },
        Code::CW_OK
    );
    let mut fd = -1;
    assert_eq!(
        unsafe { cw_client_event_fd(ptr::null(), &mut fd) },
        Code::CW_NULL_ARGUMENT
    );
    assert_eq!(
        unsafe { cw_client_event_fd(c, ptr::null_mut()) },
        Code::CW_NULL_ARGUMENT
    );
    assert_eq!(unsafe { cw_client_event_fd(c, &mut fd) }, Code::CW_OK);
    let mut again = -1;
    assert_eq!(unsafe { cw_client_event_fd(c, &mut again) }, Code::CW_OK);
    assert_eq!(fd, again, "one descriptor per client");
    let name = CString::new("eve").unwrap();
    assert_eq!(
        unsafe { cw_client_login(c, name.as_ptr(), 10_000) },
        Code::CW_OK
    );
    assert!(!readable(fd, 0), "nothing waits yet");

    // The sender gets its own global message back: readable until taken.
    let text = CString::new("ping").unwrap();
    assert_eq!(
        unsafe { cw_client_send_message(c, text.as_ptr()) },
        Code::CW_OK
    );
    assert!(readable(fd, 10_000), "the echo wakes poll");
    assert!(readable(fd, 0), "level-triggered: still readable");
    let mut ev = ptr::null_mut();
    assert_eq!(unsafe { cw_client_next_event(c, 0, &mut ev) }, Code::CW_OK);
    let got = unsafe { CStr::from_ptr(cw_event_text(ev)) }
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(got, "ping");
    unsafe { cw_event_free(ev) };
    assert!(!readable(fd, 0), "drained");

    // Closing makes it readable for good: next_event answers CW_CLOSED.
    assert_eq!(unsafe { cw_client_close(c) }, Code::CW_OK);
    assert!(readable(fd, 0));
    let mut ev = ptr::null_mut();
    assert_eq!(
        unsafe { cw_client_next_event(c, 0, &mut ev) },
        Code::CW_CLOSED
    );
    unsafe { cw_client_free(c) };
    // Freed: the descriptor is closed (poll reports it invalid).
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    unsafe { libc::poll(&mut p, 1, 0) };
    assert!(p.revents & libc::POLLNVAL != 0 || fd_reused(fd));
}

/// After cw_client_free the number may already name a new descriptor of
/// another test thread; only then is POLLNVAL not expected.
fn fd_reused(fd: i32) -> bool {
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    flags != -1
}

#[test]
fn log_lines_through_the_c_functions() {
    assert_eq!(cw_log_set_level(9), Code::CW_INVALID_ARGUMENT);
    assert_eq!(
        cw_log_set_level(cw_log_level::CW_LOG_DEBUG as i32),
        Code::CW_OK
    );
    assert_eq!(cw_log_get_level(), cw_log_level::CW_LOG_DEBUG);
    let mut fd = -1;
    assert_eq!(unsafe { cw_log_fd(&mut fd) }, Code::CW_OK);
    let mut line = ptr::null_mut();
    assert_eq!(
        unsafe { cw_log_next(0, ptr::null_mut()) },
        Code::CW_NULL_ARGUMENT
    );
    // A client whose server does not exist logs nothing but fails; one
    // that connects logs "connected to" at INFO.
    let srv = chinwagd::Server::start(chinwagd::Config::ephemeral()).unwrap();
    let c = Client::connect(
        "127.0.0.1",
        srv.chatos_addr().port(),
        Dialect::CW_DIALECT_CHATOS,
    )
    .unwrap();
    assert!(readable(fd, 10_000));
    let deadline = Instant::now() + STEP;
    let mut seen = false;
    while Instant::now() < deadline && !seen {
        if unsafe { cw_log_next(100, &mut line) } != Code::CW_OK {
            continue;
        }
        let target = unsafe { CStr::from_ptr(cw_log_line_target(line)) }
            .to_str()
            .unwrap()
            .to_owned();
        let text = unsafe { CStr::from_ptr(cw_log_line_text(line)) }
            .to_str()
            .unwrap()
            .to_owned();
        let level = unsafe { cw_log_line_level(line) };
        unsafe { cw_log_line_free(line) };
        assert!(target.starts_with("chinwag"), "{target}");
        if text.starts_with("connected to") {
            assert_eq!(
                (level, target.as_str()),
                (cw_log_level::CW_LOG_INFO, "chinwag::chatos")
            );
            seen = true;
        }
    }
    assert!(seen, "the connection's log line arrived");
    drop(c);
    // NULL lines are harmless.
    unsafe { cw_log_line_free(ptr::null_mut()) };
    assert!(unsafe { cw_log_line_text(ptr::null()) }.is_null());
    assert_eq!(
        unsafe { cw_log_line_level(ptr::null()) },
        cw_log_level::CW_LOG_OFF
    );
    // Off: nothing more is queued; drained, the fd is quiet and next times out.
    assert_eq!(cw_log_set_level(0), Code::CW_OK);
    while unsafe { cw_log_next(0, &mut line) } == Code::CW_OK {
        unsafe { cw_log_line_free(line) };
    }
    let _c = Client::connect(
        "127.0.0.1",
        srv.chatos_addr().port(),
        Dialect::CW_DIALECT_CHATOS,
    )
    .unwrap();
    assert!(!readable(fd, 100));
    line = ptr::null_mut();
    assert_eq!(unsafe { cw_log_next(50, &mut line) }, Code::CW_TIMEOUT);
    assert!(line.is_null());
}
