//! The one dispatch over the four dialects. `cw_client` holds a `Client`,
//! one of the four typed clients chosen at run time; every function that
//! does not apply to a client's dialect is refused here, and only here,
//! with `CW_UNSUPPORTED`. Rust code that knows its dialect at compile time
//! uses the typed clients directly (`ChatosClient`, ...).

use std::time::Duration;

use super::codes::{cw_dialect, cw_result};
use super::Failure;
use crate::accounts::AccountsClient;
use crate::babel::BabelClient;
use crate::chatos::ChatosClient;
use crate::core::{Event, VoicePorts};
use crate::rooms::{RoomEntry, RoomsClient};
use chinwag_proto::accounts::HistoryEntry;
use chinwag_proto::rooms::Mode;

type Result<T> = std::result::Result<T, Failure>;

/// A client of any dialect (the C API's `cw_client`).
pub enum Client {
    Chatos(ChatosClient),
    Babel(BabelClient),
    Accounts(AccountsClient),
    Rooms(RoomsClient),
}

/// `$body` with `$c` bound to the typed client, whatever the dialect.
macro_rules! each {
    ($client:expr, $c:ident => $body:expr) => {
        match $client {
            Client::Chatos($c) => $body,
            Client::Babel($c) => $body,
            Client::Accounts($c) => $body,
            Client::Rooms($c) => $body,
        }
    };
}

impl Client {
    /// Connect to `host`:`port` speaking `dialect`.
    pub fn connect(host: &str, port: u16, dialect: cw_dialect) -> Result<Client> {
        Client::connect_with(host, port, dialect, 0)
    }

    /// Connect asking for extensions: `features` are accounts feature bits
    /// (`chinwag::accounts::feature`); other dialects have none, so any
    /// bit for them is `CW_INVALID_ARGUMENT`.
    pub fn connect_with(
        host: &str,
        port: u16,
        dialect: cw_dialect,
        features: u32,
    ) -> Result<Client> {
        if features != 0 && dialect != cw_dialect::CW_DIALECT_ACCOUNTS {
            return Err(Failure::new(
                cw_result::CW_INVALID_ARGUMENT,
                "feature bits are for accounts clients only",
            ));
        }
        Ok(match dialect {
            cw_dialect::CW_DIALECT_CHATOS => Client::Chatos(ChatosClient::connect(host, port)?),
            cw_dialect::CW_DIALECT_BABEL => Client::Babel(BabelClient::connect(host, port)?),
            cw_dialect::CW_DIALECT_ACCOUNTS => {
                Client::Accounts(AccountsClient::connect_with_features(host, port, features)?)
            }
            cw_dialect::CW_DIALECT_ROOMS => Client::Rooms(RoomsClient::connect(host, port)?),
        })
    }

    pub fn dialect(&self) -> cw_dialect {
        match self {
            Client::Chatos(_) => cw_dialect::CW_DIALECT_CHATOS,
            Client::Babel(_) => cw_dialect::CW_DIALECT_BABEL,
            Client::Accounts(_) => cw_dialect::CW_DIALECT_ACCOUNTS,
            Client::Rooms(_) => cw_dialect::CW_DIALECT_ROOMS,
        }
    }

    /// The refusal of a function that `what` names, which this client's
    /// dialect does not have: the only place `CW_UNSUPPORTED` comes from.
    fn unsupported<T>(&self, what: &str) -> Result<T> {
        Err(Failure::new(
            cw_result::CW_UNSUPPORTED,
            format!(
                "{what} is not part of the {} dialect",
                self.dialect().name()
            ),
        ))
    }

    fn chatos(&self, what: &str) -> Result<&ChatosClient> {
        match self {
            Client::Chatos(c) => Ok(c),
            _ => self.unsupported(what),
        }
    }

    fn babel(&self, what: &str) -> Result<&BabelClient> {
        match self {
            Client::Babel(c) => Ok(c),
            _ => self.unsupported(what),
        }
    }

    fn accounts(&self, what: &str) -> Result<&AccountsClient> {
        match self {
            Client::Accounts(c) => Ok(c),
            _ => self.unsupported(what),
        }
    }

    fn rooms(&self, what: &str) -> Result<&RoomsClient> {
        match self {
            Client::Rooms(c) => Ok(c),
            _ => self.unsupported(what),
        }
    }

    // Every dialect.

    pub fn login_name(&self) -> Option<String> {
        each!(self, c => c.login_name())
    }

    pub fn next_event(&self, timeout: Option<Duration>) -> Result<Event> {
        Ok(each!(self, c => c.next_event(timeout))?)
    }

    pub fn close(&self) {
        each!(self, c => c.close())
    }

    pub fn is_closed(&self) -> bool {
        each!(self, c => c.is_closed())
    }

    pub fn event_fd(&self) -> Result<std::os::fd::RawFd> {
        Ok(each!(self, c => c.event_fd())?)
    }

    // Functions several dialects share.

    /// Chatos, babel and rooms: log in by name.
    pub fn login(&self, login: &str, timeout: Option<Duration>) -> Result<()> {
        Ok(match self {
            Client::Chatos(c) => c.login(login, timeout),
            Client::Babel(c) => c.login(login, timeout),
            Client::Rooms(c) => c.login(login, timeout),
            Client::Accounts(_) => {
                return self.unsupported("a password-less login (use login_password)")
            }
        }?)
    }

    /// Chatos: to everyone; rooms: to everyone in this client's room.
    pub fn send_message(&self, text: &str) -> Result<()> {
        Ok(match self {
            Client::Chatos(c) => c.send_message(text),
            Client::Rooms(c) => c.send_message(text),
            _ => return self.unsupported("a message to everyone"),
        }?)
    }

    /// Accounts: ring a friend (voice at `addr`:`port`); babel: ring a
    /// contact peer to peer, listening on `addr`:`port`.
    pub fn place_call(&self, peer: &str, addr: &str, port: u16) -> Result<()> {
        Ok(match self {
            Client::Accounts(c) => c.place_call(peer, addr, port),
            Client::Babel(c) => c.place_call(peer, addr, port).map(drop),
            _ => return self.unsupported("a call"),
        }?)
    }

    /// A call the library carries, in either dialect: accounts binds a UDP
    /// socket and names `addr` with it; babel listens on `addr` at the
    /// client's local voice port.
    pub fn place_voice_call(&self, peer: &str, addr: &str) -> Result<()> {
        Ok(match self {
            Client::Accounts(c) => c.place_voice_call(peer, addr),
            Client::Babel(c) => c.place_call(peer, addr, 0).map(drop),
            _ => return self.unsupported("a call"),
        }?)
    }

    /// Answer a ringing call the library carries: accounts starts its UDP
    /// media and answers with `addr`; babel dials the caller (`addr` is
    /// not used: the callee names no end point).
    pub fn answer_voice_call(&self, peer: &str, addr: &str) -> Result<()> {
        Ok(match self {
            Client::Accounts(c) => c.answer_voice_call(peer, addr),
            Client::Babel(c) => c.accept_call(peer),
            _ => return self.unsupported("a call"),
        }?)
    }

    pub fn set_voice_ports(&self, ports: VoicePorts) -> Result<()> {
        match self {
            Client::Accounts(c) => c.set_voice_ports(ports),
            Client::Babel(c) => c.set_voice_ports(ports),
            _ => return self.unsupported("a call"),
        }
        Ok(())
    }

    pub fn refuse_call(&self, peer: &str) -> Result<()> {
        Ok(match self {
            Client::Accounts(c) => c.refuse_call(peer),
            Client::Babel(c) => c.refuse_call(peer),
            _ => return self.unsupported("a call"),
        }?)
    }

    pub fn hangup_call(&self, peer: &str) -> Result<()> {
        Ok(match self {
            Client::Accounts(c) => c.hangup_call(peer),
            Client::Babel(c) => c.hangup_call(peer),
            _ => return self.unsupported("a call"),
        }?)
    }

    // Chatos.

    pub fn send_private(&self, to: &str, text: &str) -> Result<()> {
        let what = "an unacknowledged private message (use send_to_friend)";
        Ok(self.chatos(what)?.send_private(to, text)?)
    }

    pub fn request_private(&self, target: &str) -> Result<()> {
        Ok(self
            .chatos("a private connection")?
            .request_private(target)?)
    }

    pub fn accept_private(&self, requester: &str) -> Result<()> {
        Ok(self
            .chatos("a private connection")?
            .accept_private(requester)?)
    }

    pub fn refuse_private(&self, requester: &str) -> Result<()> {
        Ok(self
            .chatos("a private connection")?
            .refuse_private(requester)?)
    }

    // Babel.

    pub fn contacts(&self) -> Result<Vec<String>> {
        Ok(self.babel("a contact list")?.contacts()?)
    }

    pub fn accept_call(&self, caller: &str) -> Result<()> {
        let what = "accepting a peer-to-peer call (accounts: use answer_call)";
        Ok(self.babel(what)?.accept_call(caller)?)
    }

    // Accounts.

    pub fn register(
        &self,
        email: &str,
        pseudo: &str,
        password: &str,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let c = self.accounts("registration")?;
        Ok(c.register(email, pseudo, password, timeout)?)
    }

    pub fn login_password(
        &self,
        email: &str,
        password: &str,
        timeout: Option<Duration>,
    ) -> Result<(String, u64)> {
        let c = self.accounts("a password login")?;
        Ok(c.login_password(email, password, timeout)?)
    }

    pub fn account_id(&self) -> Result<u64> {
        Ok(self.accounts("an account id")?.account_id()?)
    }

    pub fn request_friend(&self, pseudo: &str, timeout: Option<Duration>) -> Result<()> {
        Ok(self
            .accounts("a friend request")?
            .request_friend(pseudo, timeout)?)
    }

    pub fn accept_friend(&self, pseudo: &str, timeout: Option<Duration>) -> Result<()> {
        Ok(self
            .accounts("a friend request")?
            .accept_friend(pseudo, timeout)?)
    }

    pub fn refuse_friend(&self, pseudo: &str, timeout: Option<Duration>) -> Result<()> {
        Ok(self
            .accounts("a friend request")?
            .refuse_friend(pseudo, timeout)?)
    }

    pub fn list_friends(&self, timeout: Option<Duration>) -> Result<Vec<String>> {
        Ok(self.accounts("a friend list")?.list_friends(timeout)?)
    }

    pub fn list_requests(&self, timeout: Option<Duration>) -> Result<Vec<String>> {
        Ok(self
            .accounts("a friend-request list")?
            .list_requests(timeout)?)
    }

    pub fn send_to_friend(
        &self,
        pseudo: &str,
        text: &str,
        timeout: Option<Duration>,
    ) -> Result<()> {
        Ok(self
            .accounts("a stored message")?
            .send_to_friend(pseudo, text, timeout)?)
    }

    pub fn history(
        &self,
        pseudo: &str,
        before: u64,
        timeout: Option<Duration>,
    ) -> Result<Vec<HistoryEntry>> {
        Ok(self.accounts("history")?.history(pseudo, before, timeout)?)
    }

    pub fn features(&self) -> Result<u32> {
        Ok(self.accounts("features")?.features())
    }

    pub fn answer_call(&self, pseudo: &str, addr: &str, port: u16) -> Result<()> {
        Ok(self.accounts("a call")?.answer_call(pseudo, addr, port)?)
    }

    // Rooms.

    pub fn room_user_id(&self) -> Result<u8> {
        Ok(self.rooms("a rooms user id")?.room_user_id()?)
    }

    pub fn room_create(&self, name: &str, mode: Mode, max: u8) -> Result<u8> {
        Ok(self.rooms("a room")?.room_create(name, mode, max)?)
    }

    pub fn room_list(&self) -> Result<Vec<RoomEntry>> {
        Ok(self.rooms("a room list")?.room_list()?)
    }

    pub fn room_join(&self, name: &str) -> Result<()> {
        Ok(self.rooms("a room")?.room_join(name)?)
    }

    pub fn room_change(&self, name: &str) -> Result<()> {
        Ok(self.rooms("a room")?.room_change(name)?)
    }

    pub fn room_leave(&self) -> Result<()> {
        Ok(self.rooms("a room")?.room_leave()?)
    }

    pub fn room_current(&self) -> Result<(String, Mode)> {
        Ok(self.rooms("a room")?.room_current()?)
    }

    pub fn room_peers(&self) -> Result<Vec<String>> {
        Ok(self.rooms("a room")?.room_peers()?)
    }

    pub fn room_members(&self, name: &str) -> Result<Vec<String>> {
        Ok(self.rooms("a member list")?.room_members(name)?)
    }

    pub fn room_users(&self) -> Result<Vec<String>> {
        Ok(self.rooms("a user list")?.room_users()?)
    }

    pub fn room_invite(&self, user: &str) -> Result<()> {
        Ok(self.rooms("an invitation")?.room_invite(user)?)
    }

    pub fn room_answer_invitation(&self, room: &str, accept: bool) -> Result<()> {
        Ok(self
            .rooms("an invitation")?
            .room_answer_invitation(room, accept)?)
    }

    /// Shorten or lengthen a rooms client's keep-alive interval; for tests.
    /// No effect on other dialects.
    #[doc(hidden)]
    pub fn set_rooms_keepalive(&self, every: Duration) {
        if let Client::Rooms(c) = self {
            c.set_keepalive(every);
        }
    }
}
