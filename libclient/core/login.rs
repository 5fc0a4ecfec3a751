//! The login state every dialect shares: the accepted name, one login in
//! flight and its answer, and the end of the connection, watched by one
//! condition variable. Holds no lock across I/O.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{Error, ErrorKind, Result};

#[derive(Default)]
struct State {
    /// The accepted login (accounts: the account's pseudo).
    name: Option<String>,
    /// A login sent and not yet answered.
    pending: Option<String>,
    /// The answer for the waiting `login` call.
    answer: Option<bool>,
    /// The connection is over.
    dead: bool,
}

#[derive(Default)]
pub(crate) struct Login {
    st: Mutex<State>,
    answered: Condvar,
}

impl Login {
    pub(crate) fn name(&self) -> Option<String> {
        self.st.lock().name.clone()
    }

    pub(crate) fn is_logged_in(&self) -> bool {
        self.st.lock().name.is_some()
    }

    /// Record an accepted login the dialect learned its own way.
    pub(crate) fn set(&self, name: &str) {
        self.st.lock().name = Some(name.to_owned());
    }

    /// The logged-in name, for calls that need a session.
    pub(crate) fn me(&self) -> Result<String> {
        let s = self.st.lock();
        if s.dead {
            return Err(Error::closed());
        }
        s.name.clone().ok_or_else(Error::not_logged_in)
    }

    /// Fails unless a login may start now.
    pub(crate) fn check_free(&self) -> Result<()> {
        let s = self.st.lock();
        if s.dead {
            return Err(Error::closed());
        }
        if s.name.is_some() {
            return Err(Error::new(ErrorKind::AlreadyLoggedIn, "already logged in"));
        }
        Ok(())
    }

    /// Log in as `name`: `send` writes the dialect's LOGIN, then wait for
    /// the answer at most `timeout`. `Ok(false)` is a refusal.
    pub(crate) fn request(
        &self,
        name: &str,
        timeout: Option<Duration>,
        send: impl FnOnce() -> Result<()>,
    ) -> Result<bool> {
        self.begin(name)?;
        if let Err(e) = send() {
            self.abort();
            return Err(e);
        }
        self.wait(timeout.map(|t| Instant::now() + t))
    }

    /// A LOGIN for `name` is about to be sent.
    fn begin(&self, name: &str) -> Result<()> {
        self.check_free()?;
        let mut s = self.st.lock();
        if s.pending.is_some() {
            return Err(Error::new(
                ErrorKind::Busy,
                "another login is waiting for its answer",
            ));
        }
        s.pending = Some(name.to_owned());
        s.answer = None;
        Ok(())
    }

    /// The LOGIN could not be sent.
    fn abort(&self) {
        self.st.lock().pending = None;
    }

    pub(crate) fn has_pending(&self) -> bool {
        self.st.lock().pending.is_some()
    }

    /// The server answered the pending login: take it (accepted: it is
    /// now the login). `None` when no login was pending.
    pub(crate) fn settle(&self, accepted: bool) -> Option<String> {
        let mut s = self.st.lock();
        let name = s.pending.take()?;
        if accepted {
            s.name = Some(name.clone());
        }
        Some(name)
    }

    /// Wake the waiting `login` call with its answer.
    pub(crate) fn answer(&self, ok: bool) {
        self.st.lock().answer = Some(ok);
        self.answered.notify_all();
    }

    /// Wait for the answer until `deadline` (`None`: without limit).
    fn wait(&self, deadline: Option<Instant>) -> Result<bool> {
        let mut s = self.st.lock();
        loop {
            if let Some(ok) = s.answer.take() {
                return Ok(ok);
            }
            if s.dead {
                return Err(Error::closed());
            }
            let expired = super::wait_until(&self.answered, &mut s, deadline);
            if expired && s.answer.is_none() && !s.dead {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    "no answer to the login before the time limit",
                ));
            }
        }
    }

    /// The connection is over: wake the waiter.
    pub(crate) fn end(&self) {
        let mut s = self.st.lock();
        s.dead = true;
        s.pending = None;
        drop(s);
        self.answered.notify_all();
    }
}
