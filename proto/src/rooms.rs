//! The rooms dialect (seed 003): one UDP datagram per message.
//!
//! header = TYPE_MESSAGE (5 bits) | ID_USER (8 bits) | NUM_SEQ (16 bits)
//!
//! chinwag's byte layout (docs/protocols/rooms.md): the 5-bit type sits in
//! the high bits of byte 0 (low 3 bits zero), then ID_USER, then NUM_SEQ
//! big-endian: a 4-byte header. Sub-byte fields of a body (modes, statuses,
//! answers) share one byte, packed from the most significant bit, unused bits
//! zero. Names end with the '#' delimiter. Sans-IO, like every codec here.
//!
//! Types 23-27 are chinwag's, for what the seed asks and names no message
//! for (a closed room's notice, the list of every user, an error answer);
//! `reliable` is the seed's §3.2 reliability, one machine for both ends.

pub mod reliable;

use std::net::Ipv4Addr;

use crate::cursor::{Layout, Order, Prefix, Reader, Short, Writer};
use crate::DecodeError;

pub mod kind {
    pub const CONNEXION: u8 = 1;
    pub const REPONSE_CONNEXION: u8 = 2;
    pub const CREER_MESSAGERIE_PRIVEE: u8 = 3;
    pub const REPONSE_CREER_MESSAGERIE_PRIVEE: u8 = 4;
    pub const DEMANDER_LISTE_MESSAGERIE: u8 = 5;
    pub const REPONSE_DEMANDER_LISTE_MESSAGERIE: u8 = 6;
    pub const DEMANDE_ACCES_MESSAGERIE_PRIVEE: u8 = 7;
    pub const REPONSE_ACCES_MESSAGERIE_PRIVEE: u8 = 8;
    pub const DEMANDER_LISTE_CLIENT: u8 = 9;
    pub const REPONSE_DEMANDER_LISTE_CLIENT: u8 = 10;
    pub const INVITER_MESSAGERIE_PRIVEE: u8 = 11;
    pub const REPONSE_INVITER_MESSAGERIE_PRIVEE: u8 = 12;
    pub const DEMANDE_MESSAGERIE_PRIVEE: u8 = 13;
    pub const REPONSE_MESSAGERIE_PRIVEE: u8 = 14;
    pub const TEXTE: u8 = 15;
    pub const REPONSE_TEXTE: u8 = 16;
    pub const CHANGER_MESSAGERIE: u8 = 17;
    pub const REPONSE_CHANGER_MESSAGERIE: u8 = 18;
    pub const QUITTER_MESSAGERIE_PRIVEE: u8 = 19;
    pub const REPONSE_QUITTER_MESSAGERIE_PRIVEE: u8 = 20;
    pub const DECONNEXION: u8 = 21;
    pub const REPONSE_DECONNEXION: u8 = 22;
    /// chinwag: server to the last member of a private room it closed
    /// (§2.2 asks for the notice and names no message).
    pub const FERMETURE_MESSAGERIE: u8 = 23;
    pub const REPONSE_FERMETURE_MESSAGERIE: u8 = 24;
    /// chinwag: every registered user (§2.2: a client chooses whom to
    /// invite among the users connected to the server).
    pub const DEMANDER_LISTE_UTILISATEURS: u8 = 25;
    pub const REPONSE_DEMANDER_LISTE_UTILISATEURS: u8 = 26;
    /// chinwag: the answer to a request that is refused, and why (§3.1: an
    /// unknown type is answered with "a type proper to error messages").
    pub const ERREUR: u8 = 27;
}

/// Whether a message of type `k` answers another (and so is never answered
/// itself): the seed's even types, chinwag's 24 and 26, and ERREUR.
pub fn is_answer(k: u8) -> bool {
    (k & 1 == 0 && (2..=kind::REPONSE_DEMANDER_LISTE_UTILISATEURS).contains(&k))
        || k == kind::ERREUR
}

/// The type that answers a request of type `k` (besides ERREUR, which may
/// answer any request): always `k + 1`.
pub fn answer_kind(k: u8) -> Option<u8> {
    (k & 1 == 1 && k <= kind::DEMANDER_LISTE_UTILISATEURS).then_some(k + 1)
}

pub const HEADER_LEN: usize = 4;
/// ID_USER of a client that has no id yet.
pub const UNREGISTERED: u8 = 0;
/// ID_USER of the server (0b11111111).
pub const SERVER: u8 = 255;
pub const DELIMITER: u8 = b'#';
/// USER_NAME: at most ten bytes, never '#'.
pub const MAX_USER_NAME: usize = 10;
/// NOM_MESSAGERIE: at most fifty bytes.
pub const MAX_ROOM_NAME: usize = 50;
/// NUM_MAX bounds (seed 003 §4.3.3).
pub const MIN_ROOM_SIZE: u8 = 2;
pub const MAX_ROOM_SIZE: u8 = 254;
/// Longest CHAT accepted: keeps every datagram under a common 1280-byte MTU.
pub const MAX_CHAT: usize = 1200;
/// Largest datagram either side sends (a full REPONSE_ACCES with 254 members).
pub const MAX_DATAGRAM: usize = HEADER_LEN + 2 + 254 * (6 + MAX_USER_NAME + 1);

/// Centralised rooms carry texts through the server; decentralised ones
/// peer to peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Centralised,
    Decentralised,
}

impl Mode {
    fn bit(self) -> u8 {
        match self {
            Mode::Centralised => 0,
            Mode::Decentralised => 1,
        }
    }
    fn from_bit(b: u8) -> Mode {
        if b == 0 {
            Mode::Centralised
        } else {
            Mode::Decentralised
        }
    }
}

/// STATUT_INSCRIPTION (2 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Accepted = 0,
    InvalidName = 1,
    NameTaken = 2,
}

/// STATUT_CREATION (2 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    Created = 0,
    BadName = 1,
    NameExists = 2,
    MaxTooSmall = 3,
}

/// STATUT_ACCES (2 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Granted = 0,
    NoSuchRoom = 1,
    Full = 2,
}

/// RAISON of an ERREUR (chinwag's type 27): why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The type is none the receiver knows.
    UnknownType = 1,
    /// The data does not follow the type's layout.
    Malformed = 2,
    /// A field is longer than its limit (a CHAT over 1,200 bytes, a name
    /// over its limit where the type's answer has no code for it).
    TooLong = 3,
    /// A type the receiver never accepts from this sender (one only the
    /// server sends).
    NotAccepted = 4,
    /// A text nobody would receive: alone in the room, or a decentralised
    /// room, whose texts go to the peers rather than the server.
    NoRecipient = 5,
    /// A limit was reached (registrations from one address, requests per
    /// second, a recipient too far behind): try again later.
    Limit = 6,
}

impl Reason {
    /// The reason to give for a request whose body did not decode.
    pub fn for_error(e: &DecodeError) -> Reason {
        match e {
            DecodeError::UnknownOpcode(_) => Reason::UnknownType,
            DecodeError::TooLong { .. } => Reason::TooLong,
            _ => Reason::Malformed,
        }
    }

    fn from_byte(b: u8) -> Option<Reason> {
        Some(match b {
            1 => Reason::UnknownType,
            2 => Reason::Malformed,
            3 => Reason::TooLong,
            4 => Reason::NotAccepted,
            5 => Reason::NoRecipient,
            6 => Reason::Limit,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    pub mode: Mode,
    pub name: String,
    pub clients: u8,
}

/// A member of a decentralised room: where to send it texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// First connection: the name; keep-alive (ID_USER set): none.
    Connexion {
        name: Option<String>,
    },
    /// Answer to a first connection: status and the new ID_USER.
    Registered {
        status: Registration,
        user: u8,
    },
    /// Answer to a keep-alive CONNEXION: STATUT_CONNEXION, 0 = success.
    KeptAlive {
        ok: bool,
    },
    CreateRoom {
        mode: Mode,
        name: String,
        max: u8,
    },
    CreateAnswer {
        status: Creation,
        room: u8,
    },
    ListRooms,
    RoomList {
        rooms: Vec<RoomInfo>,
    },
    AccessRoom {
        name: String,
    },
    /// Answer to DEMANDE_ACCES; `peers` is sent only for a decentralised room.
    AccessAnswer {
        mode: Mode,
        status: Access,
        peers: Vec<Peer>,
    },
    /// Empty name: the public room.
    ListClients {
        room: String,
    },
    ClientList {
        names: Vec<String>,
    },
    Invite {
        user: String,
    },
    InviteAck,
    /// Server to invitee.
    Invitation {
        from: String,
        mode: Mode,
        room: String,
    },
    /// Invitee's answer (0 accept, 1 refuse on the wire).
    InvitationAnswer {
        accept: bool,
    },
    Text {
        chat: String,
    },
    TextAck,
    ChangeRoom {
        name: String,
    },
    ChangeAnswer {
        mode: Mode,
        status: Access,
        peers: Vec<Peer>,
    },
    Leave,
    LeaveAnswer {
        ok: bool,
    },
    Disconnect,
    DisconnectAnswer {
        ok: bool,
    },
    /// chinwag (23), server to client: the private room `room` closed with
    /// this client its last member, who is back in the public room.
    RoomClosed {
        room: String,
    },
    /// chinwag (24): acknowledgement of a RoomClosed.
    RoomClosedAck,
    /// chinwag (25): every registered user.
    ListUsers,
    /// chinwag (26): the answer to ListUsers.
    UserList {
        names: Vec<String>,
    },
    /// chinwag (27): the request of type `refused` (same NUM_SEQ) was refused.
    Error {
        refused: u8,
        reason: Reason,
    },
}

/// One datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Sender's ID_USER (0 before registration, 255 for the server; on a
    /// TEXTE the server forwards, the original author's id).
    pub user: u8,
    pub seq: u16,
    pub body: Body,
}

impl Body {
    /// The answer to DEMANDE_ACCES (`change` false) or to CHANGER (true):
    /// two types with one layout.
    pub fn access_answer(change: bool, mode: Mode, status: Access, peers: Vec<Peer>) -> Body {
        if change {
            Body::ChangeAnswer {
                mode,
                status,
                peers,
            }
        } else {
            Body::AccessAnswer {
                mode,
                status,
                peers,
            }
        }
    }

    /// The fields of either answer to a room access; any other body back.
    pub fn into_access(self) -> Result<(Mode, Access, Vec<Peer>), Body> {
        match self {
            Body::AccessAnswer {
                mode,
                status,
                peers,
            }
            | Body::ChangeAnswer {
                mode,
                status,
                peers,
            } => Ok((mode, status, peers)),
            other => Err(other),
        }
    }

    pub fn kind(&self) -> u8 {
        use kind::*;
        match self {
            Body::Connexion { .. } => CONNEXION,
            Body::Registered { .. } | Body::KeptAlive { .. } => REPONSE_CONNEXION,
            Body::CreateRoom { .. } => CREER_MESSAGERIE_PRIVEE,
            Body::CreateAnswer { .. } => REPONSE_CREER_MESSAGERIE_PRIVEE,
            Body::ListRooms => DEMANDER_LISTE_MESSAGERIE,
            Body::RoomList { .. } => REPONSE_DEMANDER_LISTE_MESSAGERIE,
            Body::AccessRoom { .. } => DEMANDE_ACCES_MESSAGERIE_PRIVEE,
            Body::AccessAnswer { .. } => REPONSE_ACCES_MESSAGERIE_PRIVEE,
            Body::ListClients { .. } => DEMANDER_LISTE_CLIENT,
            Body::ClientList { .. } => REPONSE_DEMANDER_LISTE_CLIENT,
            Body::Invite { .. } => INVITER_MESSAGERIE_PRIVEE,
            Body::InviteAck => REPONSE_INVITER_MESSAGERIE_PRIVEE,
            Body::Invitation { .. } => DEMANDE_MESSAGERIE_PRIVEE,
            Body::InvitationAnswer { .. } => REPONSE_MESSAGERIE_PRIVEE,
            Body::Text { .. } => TEXTE,
            Body::TextAck => REPONSE_TEXTE,
            Body::ChangeRoom { .. } => CHANGER_MESSAGERIE,
            Body::ChangeAnswer { .. } => REPONSE_CHANGER_MESSAGERIE,
            Body::Leave => QUITTER_MESSAGERIE_PRIVEE,
            Body::LeaveAnswer { .. } => REPONSE_QUITTER_MESSAGERIE_PRIVEE,
            Body::Disconnect => DECONNEXION,
            Body::DisconnectAnswer { .. } => REPONSE_DECONNEXION,
            Body::RoomClosed { .. } => FERMETURE_MESSAGERIE,
            Body::RoomClosedAck => REPONSE_FERMETURE_MESSAGERIE,
            Body::ListUsers => DEMANDER_LISTE_UTILISATEURS,
            Body::UserList { .. } => REPONSE_DEMANDER_LISTE_UTILISATEURS,
            Body::Error { .. } => ERREUR,
        }
    }
}

/// The 4-byte header alone, readable even when the body is not (so that
/// a request with a bad body can still be answered, with its NUM_SEQ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// TYPE_MESSAGE, 0-31, defined or not.
    pub kind: u8,
    pub user: u8,
    pub seq: u16,
}

impl Header {
    /// The header of a datagram: at least 4 bytes, padding bits zero. The
    /// datagram's length is not checked here.
    pub fn peek(d: &[u8]) -> Result<Header, DecodeError> {
        let mut r = Reader::new(d, LAYOUT);
        let first = r.u8()?;
        zero_below(first, 3, "header padding")?;
        Ok(Header {
            kind: first >> 3,
            user: r.u8()?,
            seq: r.u16()?,
        })
    }
}

/// Seed 003 on the cursor: big-endian NUM_SEQ and LONGUEUR, one-byte
/// counts (NUM_CLIENT, NUM_MESSAGERIE, NOMBRE_CLIENTS), strings ended by
/// '#' (`until`), and a datagram whose size is known (running out is
/// `Truncated`).
const LAYOUT: Layout = Layout {
    order: Order::Big,
    prefix: Prefix::U8,
    short: Short::Truncated,
};

/// Bits below `keep` (counting from bit 0) must be zero.
fn zero_below(b: u8, keep: u32, field: &'static str) -> Result<(), DecodeError> {
    if b & ((1u8 << keep) - 1) != 0 {
        return Err(DecodeError::BadBits(field));
    }
    Ok(())
}

fn read_mode(r: &mut Reader<'_>) -> Result<Mode, DecodeError> {
    let b = r.u8()?;
    zero_below(b, 7, "padding")?;
    Ok(Mode::from_bit(b >> 7))
}

/// A one-bit field whose 0 means "yes" (success, accept).
fn read_flag(r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    let b = r.u8()?;
    zero_below(b, 7, "padding")?;
    Ok(b >> 7 == 0)
}

fn read_name(r: &mut Reader<'_>, field: &'static str, max: usize) -> Result<String, DecodeError> {
    r.until(DELIMITER, field, max)
}

/// NUM_CLIENT, then that many `USER_NAME '#'` (each at least its '#').
fn read_names(r: &mut Reader<'_>) -> Result<Vec<String>, DecodeError> {
    r.list("NUM_CLIENT", u8::MAX.into(), 1, |r| {
        read_name(r, "USER_NAME", MAX_USER_NAME)
    })
}

/// NOMBRE_CLIENTS, then per member `IP (4) PORT (2) USER_NAME '#'`.
fn read_peers(r: &mut Reader<'_>) -> Result<Vec<Peer>, DecodeError> {
    r.list("NOMBRE_CLIENTS", u8::MAX.into(), 7, |r| {
        let ip = r.take(4)?;
        let ip = Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]);
        let port = r.u16()?;
        Ok(Peer {
            ip,
            port,
            name: read_name(r, "USER_NAME", MAX_USER_NAME)?,
        })
    })
}

fn put_name(w: &mut Writer<'_>, s: &str) {
    w.raw(s.as_bytes()).u8(DELIMITER);
}

fn put_names(w: &mut Writer<'_>, names: &[String]) {
    w.list(names, |w, n| put_name(w, n));
}

fn put_peers(w: &mut Writer<'_>, peers: &[Peer]) {
    w.list(peers, |w, p| {
        w.raw(&p.ip.octets()).u16(p.port);
        put_name(w, &p.name);
    });
}

fn flag(b: bool) -> u8 {
    (b as u8) << 7
}

impl Message {
    /// Append the datagram's bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out, LAYOUT);
        w.u8(self.body.kind() << 3).u8(self.user).u16(self.seq);
        match &self.body {
            Body::Connexion { name } => {
                if let Some(n) = name {
                    put_name(&mut w, n);
                }
            }
            Body::Registered { status, user } => {
                w.u8((*status as u8) << 6).u8(*user);
            }
            // 0 = success on the wire.
            Body::KeptAlive { ok } => {
                w.u8(flag(!ok));
            }
            Body::CreateRoom { mode, name, max } => {
                w.u8(mode.bit() << 7);
                put_name(&mut w, name);
                w.u8(*max);
            }
            Body::CreateAnswer { status, room } => {
                w.u8((*status as u8) << 6).u8(*room);
            }
            Body::ListRooms
            | Body::InviteAck
            | Body::TextAck
            | Body::Leave
            | Body::Disconnect
            | Body::RoomClosedAck
            | Body::ListUsers => {}
            Body::RoomList { rooms } => {
                w.list(rooms, |w, r| {
                    w.u8(r.mode.bit() << 7);
                    put_name(w, &r.name);
                    w.u8(r.clients);
                });
            }
            Body::AccessRoom { name } | Body::ChangeRoom { name } => put_name(&mut w, name),
            Body::AccessAnswer {
                mode,
                status,
                peers,
            }
            | Body::ChangeAnswer {
                mode,
                status,
                peers,
            } => {
                w.u8(mode.bit() << 7 | (*status as u8) << 5);
                if *mode == Mode::Decentralised {
                    put_peers(&mut w, peers);
                }
            }
            Body::ListClients { room } => put_name(&mut w, room),
            Body::ClientList { names } | Body::UserList { names } => put_names(&mut w, names),
            Body::RoomClosed { room } => put_name(&mut w, room),
            Body::Error { refused, reason } => {
                w.u8((refused & 0b1_1111) << 3).u8(*reason as u8);
            }
            // Seed 003 draws INVITER's USER_NAME alone, without '#'
            // (NOTES.md): the rest of the datagram is the name.
            Body::Invite { user } => {
                w.raw(user.as_bytes());
            }
            Body::Invitation { from, mode, room } => {
                put_name(&mut w, from);
                w.u8(mode.bit() << 7);
                put_name(&mut w, room);
            }
            Body::InvitationAnswer { accept } => {
                w.u8(flag(!accept));
            }
            Body::Text { chat } => {
                let n = chat.len().min(u16::MAX as usize);
                w.u16(n as u16).raw(&chat.as_bytes()[..n]);
            }
            Body::LeaveAnswer { ok } | Body::DisconnectAnswer { ok } => {
                w.u8(flag(!ok));
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        self.encode(&mut v);
        v
    }

    /// Decode one whole datagram. Every byte must be used; padding bits
    /// must be zero.
    pub fn decode(d: &[u8]) -> Result<Message, DecodeError> {
        if d.len() > MAX_DATAGRAM {
            return Err(DecodeError::TooLong {
                field: "datagram",
                len: d.len() as u64,
                max: MAX_DATAGRAM as u64,
            });
        }
        let Header { kind: k, user, seq } = Header::peek(d)?;
        let mut r = Reader::new(&d[HEADER_LEN..], LAYOUT);
        use kind::*;
        let body = match k {
            CONNEXION => {
                if r.at_end() {
                    Body::Connexion { name: None }
                } else {
                    // Read leniently (up to 50 bytes), so a server can answer
                    // "invalid name" (STATUT_INSCRIPTION 01) instead of
                    // dropping the datagram.
                    Body::Connexion {
                        name: Some(read_name(&mut r, "USER_NAME", MAX_ROOM_NAME)?),
                    }
                }
            }
            REPONSE_CONNEXION => {
                let b = r.u8()?;
                if r.at_end() {
                    zero_below(b, 7, "padding")?;
                    Body::KeptAlive { ok: b >> 7 == 0 }
                } else {
                    zero_below(b, 6, "padding")?;
                    let status = match b >> 6 {
                        0 => Registration::Accepted,
                        1 => Registration::InvalidName,
                        2 => Registration::NameTaken,
                        _ => return Err(DecodeError::BadBits("STATUT_INSCRIPTION")),
                    };
                    Body::Registered {
                        status,
                        user: r.u8()?,
                    }
                }
            }
            CREER_MESSAGERIE_PRIVEE => {
                let mode = read_mode(&mut r)?;
                let name = read_name(&mut r, "NOM_MESSAGERIE", MAX_ROOM_NAME)?;
                Body::CreateRoom {
                    mode,
                    name,
                    max: r.u8()?,
                }
            }
            REPONSE_CREER_MESSAGERIE_PRIVEE => {
                let b = r.u8()?;
                zero_below(b, 6, "padding")?;
                let status = match b >> 6 {
                    0 => Creation::Created,
                    1 => Creation::BadName,
                    2 => Creation::NameExists,
                    _ => Creation::MaxTooSmall,
                };
                Body::CreateAnswer {
                    status,
                    room: r.u8()?,
                }
            }
            DEMANDER_LISTE_MESSAGERIE => Body::ListRooms,
            REPONSE_DEMANDER_LISTE_MESSAGERIE => {
                // Each room: MODE, at least its '#', NUM_CLIENT.
                let rooms = r.list("NUM_MESSAGERIE", u8::MAX.into(), 3, |r| {
                    let mode = read_mode(r)?;
                    let name = read_name(r, "NOM_MESSAGERIE", MAX_ROOM_NAME)?;
                    Ok(RoomInfo {
                        mode,
                        name,
                        clients: r.u8()?,
                    })
                })?;
                Body::RoomList { rooms }
            }
            DEMANDE_ACCES_MESSAGERIE_PRIVEE => Body::AccessRoom {
                name: read_name(&mut r, "NOM_MESSAGERIE", MAX_ROOM_NAME)?,
            },
            CHANGER_MESSAGERIE => Body::ChangeRoom {
                name: read_name(&mut r, "NOM_MESSAGERIE", MAX_ROOM_NAME)?,
            },
            REPONSE_ACCES_MESSAGERIE_PRIVEE | REPONSE_CHANGER_MESSAGERIE => {
                let b = r.u8()?;
                zero_below(b, 5, "padding")?;
                let mode = Mode::from_bit(b >> 7);
                let status = match (b >> 5) & 0b11 {
                    0 => Access::Granted,
                    1 => Access::NoSuchRoom,
                    2 => Access::Full,
                    _ => return Err(DecodeError::BadBits("STATUT_ACCES")),
                };
                let peers = if mode == Mode::Decentralised {
                    read_peers(&mut r)?
                } else {
                    Vec::new()
                };
                if k == REPONSE_ACCES_MESSAGERIE_PRIVEE {
                    Body::AccessAnswer {
                        mode,
                        status,
                        peers,
                    }
                } else {
                    Body::ChangeAnswer {
                        mode,
                        status,
                        peers,
                    }
                }
            }
            DEMANDER_LISTE_CLIENT => Body::ListClients {
                room: read_name(&mut r, "NOM_MESSAGERIE", MAX_ROOM_NAME)?,
            },
            REPONSE_DEMANDER_LISTE_CLIENT => Body::ClientList {
                names: read_names(&mut r)?,
            },
            INVITER_MESSAGERIE_PRIVEE => {
                let rest = r.take(r.left())?;
                Body::Invite {
                    user: bare_user_name(rest)?,
                }
            }
            REPONSE_INVITER_MESSAGERIE_PRIVEE => Body::InviteAck,
            DEMANDE_MESSAGERIE_PRIVEE => {
                let from = read_name(&mut r, "USER_NAME", MAX_USER_NAME)?;
                let mode = read_mode(&mut r)?;
                Body::Invitation {
                    from,
                    mode,
                    room: read_name(&mut r, "NOM_MESSAGERIE", MAX_ROOM_NAME)?,
                }
            }
            REPONSE_MESSAGERIE_PRIVEE => Body::InvitationAnswer {
                accept: read_flag(&mut r)?,
            },
            TEXTE => {
                // LONGUEUR is 16 bits where every other count is 8.
                let n = r.u16()? as usize;
                if n > MAX_CHAT {
                    return Err(DecodeError::TooLong {
                        field: "CHAT",
                        len: n as u64,
                        max: MAX_CHAT as u64,
                    });
                }
                let b = r.take(n)?;
                Body::Text {
                    chat: std::str::from_utf8(b)
                        .map_err(|_| DecodeError::InvalidUtf8("CHAT"))?
                        .to_owned(),
                }
            }
            REPONSE_TEXTE => Body::TextAck,
            QUITTER_MESSAGERIE_PRIVEE => Body::Leave,
            REPONSE_QUITTER_MESSAGERIE_PRIVEE => Body::LeaveAnswer {
                ok: read_flag(&mut r)?,
            },
            DECONNEXION => Body::Disconnect,
            REPONSE_DECONNEXION => Body::DisconnectAnswer {
                ok: read_flag(&mut r)?,
            },
            FERMETURE_MESSAGERIE => Body::RoomClosed {
                room: read_name(&mut r, "NOM_MESSAGERIE", MAX_ROOM_NAME)?,
            },
            REPONSE_FERMETURE_MESSAGERIE => Body::RoomClosedAck,
            DEMANDER_LISTE_UTILISATEURS => Body::ListUsers,
            REPONSE_DEMANDER_LISTE_UTILISATEURS => Body::UserList {
                names: read_names(&mut r)?,
            },
            ERREUR => {
                let b = r.u8()?;
                zero_below(b, 3, "padding")?;
                let reason = Reason::from_byte(r.u8()?).ok_or(DecodeError::BadBits("RAISON"))?;
                Body::Error {
                    refused: b >> 3,
                    reason,
                }
            }
            other => return Err(DecodeError::UnknownOpcode(other as u16)),
        };
        r.finish()?;
        Ok(Message { user, seq, body })
    }

    /// [`Message::decode`], also accepting the other form clients send for
    /// the same message: INVITER_MESSAGERIE_PRIVEE whose USER_NAME ends
    /// with '#' like every other USER_NAME (what chinwag itself sent before
    /// it followed the seed's diagram, which draws no '#'). Re-encoding
    /// gives the canonical, bare form.
    pub fn decode_lenient(d: &[u8]) -> Result<Message, DecodeError> {
        let strict = Message::decode(d);
        match (&strict, Header::peek(d)) {
            (Err(_), Ok(h)) if h.kind == kind::INVITER_MESSAGERIE_PRIVEE => {
                match d[HEADER_LEN..].split_last() {
                    Some((&DELIMITER, name)) if d.len() <= MAX_DATAGRAM => Ok(Message {
                        user: h.user,
                        seq: h.seq,
                        body: Body::Invite {
                            user: bare_user_name(name)?,
                        },
                    }),
                    _ => strict,
                }
            }
            _ => strict,
        }
    }
}

/// INVITER's USER_NAME as the seed draws it: the whole rest of the
/// datagram, 1 to 10 bytes of UTF-8 without '#'.
fn bare_user_name(rest: &[u8]) -> Result<String, DecodeError> {
    if rest.is_empty() {
        return Err(DecodeError::Truncated);
    }
    // What follows a '#' (the '#' included) is left over.
    if let Some(at) = rest.iter().position(|b| *b == DELIMITER) {
        return Err(DecodeError::TrailingBytes(rest.len() - at));
    }
    if rest.len() > MAX_USER_NAME {
        return Err(DecodeError::TooLong {
            field: "USER_NAME",
            len: rest.len() as u64,
            max: MAX_USER_NAME as u64,
        });
    }
    std::str::from_utf8(rest)
        .map(str::to_owned)
        .map_err(|_| DecodeError::InvalidUtf8("USER_NAME"))
}

/// Whether `name` may be a USER_NAME: 1 to 10 bytes, no '#'.
/// The CHAT of a text from a user of another dialect (docs/bridging.md):
/// the author's name, a colon, a space, the text. It is sent as a TEXTE
/// from the server (ID_USER 255), since such an author has no ID_USER.
pub fn bridged_chat(author: &str, text: &str) -> String {
    format!("{author}: {text}")
}

/// The author and the text of a bridged CHAT (see [`bridged_chat`]): names
/// have no spaces, so the first space ends the name, which must be
/// non-empty and followed by ':' then that space.
pub fn split_bridged(chat: &str) -> Option<(&str, &str)> {
    let space = chat.find(' ')?;
    let author = chat[..space].strip_suffix(':')?;
    (!author.is_empty()).then(|| (author, &chat[space + 1..]))
}

pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_USER_NAME && !name.contains('#')
}

/// Whether `name` may be a NOM_MESSAGERIE: 1 to 50 bytes, no '#'.
pub fn valid_room_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_ROOM_NAME && !name.contains('#')
}

#[cfg(test)]
mod tests {
    #[test]
    fn bridged_chats_carry_the_author_before_the_first_space() {
        let c = super::bridged_chat("alice", "hi all");
        assert_eq!(c.as_bytes(), b"alice: hi all");
        assert_eq!(super::split_bridged(&c), Some(("alice", "hi all")));
        // A name may end with ':' itself; the first space still ends it.
        assert_eq!(super::split_bridged("a:: b c"), Some(("a:", "b c")));
        assert_eq!(super::split_bridged("x: "), Some(("x", "")));
        for not in ["hello there", ": hi", "nocolon", "a :b"] {
            assert_eq!(super::split_bridged(not), None, "{not}");
        }
    }

    use super::*;
    use rand::{Rng, SeedableRng};

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn m(user: u8, seq: u16, body: Body) -> Message {
        Message { user, seq, body }
    }

    fn s(x: &str) -> String {
        x.to_string()
    }

    fn samples() -> Vec<Message> {
        let peer = |n: &str, p| Peer {
            ip: Ipv4Addr::new(127, 0, 0, 1),
            port: p,
            name: s(n),
        };
        vec![
            m(
                0,
                1,
                Body::Connexion {
                    name: Some(s("alice")),
                },
            ),
            m(7, 2, Body::Connexion { name: None }),
            m(
                SERVER,
                1,
                Body::Registered {
                    status: Registration::Accepted,
                    user: 7,
                },
            ),
            m(
                SERVER,
                1,
                Body::Registered {
                    status: Registration::NameTaken,
                    user: 0,
                },
            ),
            m(SERVER, 2, Body::KeptAlive { ok: true }),
            m(SERVER, 2, Body::KeptAlive { ok: false }),
            m(
                7,
                3,
                Body::CreateRoom {
                    mode: Mode::Decentralised,
                    name: s("salon"),
                    max: 4,
                },
            ),
            m(
                SERVER,
                3,
                Body::CreateAnswer {
                    status: Creation::MaxTooSmall,
                    room: 0,
                },
            ),
            m(7, 4, Body::ListRooms),
            m(
                SERVER,
                4,
                Body::RoomList {
                    rooms: vec![
                        RoomInfo {
                            mode: Mode::Centralised,
                            name: s("a"),
                            clients: 1,
                        },
                        RoomInfo {
                            mode: Mode::Decentralised,
                            name: s("b"),
                            clients: 2,
                        },
                    ],
                },
            ),
            m(7, 5, Body::AccessRoom { name: s("salon") }),
            m(
                SERVER,
                5,
                Body::AccessAnswer {
                    mode: Mode::Centralised,
                    status: Access::Full,
                    peers: vec![],
                },
            ),
            m(
                SERVER,
                5,
                Body::AccessAnswer {
                    mode: Mode::Decentralised,
                    status: Access::Granted,
                    peers: vec![peer("bob", 4000), peer("carol", 4001)],
                },
            ),
            m(7, 6, Body::ListClients { room: s("") }),
            m(
                SERVER,
                6,
                Body::ClientList {
                    names: vec![s("alice"), s("bob")],
                },
            ),
            m(7, 7, Body::Invite { user: s("bob") }),
            m(SERVER, 7, Body::InviteAck),
            m(
                SERVER,
                1,
                Body::Invitation {
                    from: s("alice"),
                    mode: Mode::Centralised,
                    room: s("salon"),
                },
            ),
            m(8, 1, Body::InvitationAnswer { accept: true }),
            m(8, 1, Body::InvitationAnswer { accept: false }),
            m(
                7,
                8,
                Body::Text {
                    chat: s("bonjour à tous"),
                },
            ),
            m(SERVER, 8, Body::TextAck),
            m(7, 9, Body::ChangeRoom { name: s("b") }),
            m(
                SERVER,
                9,
                Body::ChangeAnswer {
                    mode: Mode::Decentralised,
                    status: Access::NoSuchRoom,
                    peers: vec![],
                },
            ),
            m(7, 10, Body::Leave),
            m(SERVER, 10, Body::LeaveAnswer { ok: false }),
            m(7, 11, Body::Disconnect),
            m(SERVER, 11, Body::DisconnectAnswer { ok: true }),
        ]
    }

    #[test]
    fn golden_bytes() {
        // CONNEXION (00001) from an unregistered client, seq 1, "bob#".
        assert_eq!(
            m(
                0,
                1,
                Body::Connexion {
                    name: Some(s("bob"))
                }
            )
            .to_bytes(),
            hex("08 00 0001 626f62 23")
        );
        // REPONSE_CONNEXION (00010): accepted (00), id 5.
        assert_eq!(
            m(
                SERVER,
                1,
                Body::Registered {
                    status: Registration::Accepted,
                    user: 5
                }
            )
            .to_bytes(),
            hex("10 ff 0001 00 05")
        );
        // ... name taken (10).
        assert_eq!(
            m(
                SERVER,
                1,
                Body::Registered {
                    status: Registration::NameTaken,
                    user: 0
                }
            )
            .to_bytes(),
            hex("10 ff 0001 80 00")
        );
        // CREER_MESSAGERIE_PRIVEE (00011): decentralised, "ab#", NUM_MAX 3.
        assert_eq!(
            m(
                5,
                2,
                Body::CreateRoom {
                    mode: Mode::Decentralised,
                    name: s("ab"),
                    max: 3
                }
            )
            .to_bytes(),
            hex("18 05 0002 80 6162 23 03")
        );
        // REPONSE_ACCES (01000), decentralised, granted, one peer 127.0.0.1:4000 "b#".
        assert_eq!(
            m(
                SERVER,
                3,
                Body::AccessAnswer {
                    mode: Mode::Decentralised,
                    status: Access::Granted,
                    peers: vec![Peer {
                        ip: Ipv4Addr::new(127, 0, 0, 1),
                        port: 4000,
                        name: s("b")
                    }],
                },
            )
            .to_bytes(),
            hex("40 ff 0003 80 01 7f000001 0fa0 62 23")
        );
        // REPONSE_ACCES centralised, full (10): one byte 0b0_10_00000.
        assert_eq!(
            m(
                SERVER,
                3,
                Body::AccessAnswer {
                    mode: Mode::Centralised,
                    status: Access::Full,
                    peers: vec![]
                }
            )
            .to_bytes(),
            hex("40 ff 0003 40")
        );
        // TEXTE (01111): length 2, "hi".
        assert_eq!(
            m(5, 9, Body::Text { chat: s("hi") }).to_bytes(),
            hex("78 05 0009 0002 6869")
        );
        // REPONSE_DECONNEXION (10110), success (0).
        assert_eq!(
            m(SERVER, 4, Body::DisconnectAnswer { ok: true }).to_bytes(),
            hex("b0 ff 0004 00")
        );
    }

    #[test]
    fn round_trips() {
        for msg in samples() {
            assert_eq!(Message::decode(&msg.to_bytes()).unwrap(), msg, "{msg:?}");
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for msg in samples() {
            let b = msg.to_bytes();
            for cut in 0..b.len() {
                let r = Message::decode(&b[..cut]);
                // A keep-alive CONNEXION and a name-less answer can be
                // prefixes of longer forms, and INVITER's bare USER_NAME
                // ends where the datagram does (a cut leaves a shorter
                // name); everything else must fail.
                if let Ok(other) = &r {
                    assert_ne!(*other, msg, "cut at {cut}");
                    let shorter_invite = match (&other.body, &msg.body) {
                        (Body::Invite { user: short }, Body::Invite { user }) => {
                            !short.is_empty() && user.starts_with(short.as_str())
                        }
                        _ => false,
                    };
                    assert!(
                        shorter_invite
                            || matches!(
                                other.body,
                                Body::Connexion { name: None } | Body::KeptAlive { .. }
                            ),
                        "{msg:?} cut at {cut} decoded as {other:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        for msg in samples() {
            let mut b = msg.to_bytes();
            b.push(0);
            let r = Message::decode(&b);
            if let Body::Invite { user } = &msg.body {
                // The rest of the datagram is the name: one more byte is
                // a longer name (the limit and '#' still apply).
                let longer = format!("{user}\0");
                let want = Body::Invite { user: longer };
                assert_eq!(r.map(|m| m.body), Ok(want));
            } else if matches!(msg.body, Body::KeptAlive { .. }) {
                // The seed tells the two REPONSE_CONNEXION forms apart by
                // length alone: one more byte is the other form.
                assert!(
                    matches!(
                        r,
                        Ok(Message {
                            body: Body::Registered { .. },
                            ..
                        })
                    ),
                    "{r:?}"
                );
            } else {
                assert!(r.is_err(), "{msg:?} accepted a trailing byte: {r:?}");
            }
        }
    }

    #[test]
    fn bad_input_is_named() {
        assert_eq!(
            Message::decode(&hex("08 00 00")),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            Message::decode(&hex("09 00 0001")),
            Err(DecodeError::BadBits("header padding"))
        );
        assert_eq!(
            Message::decode(&hex("f8 00 0001")),
            Err(DecodeError::UnknownOpcode(31))
        );
        // An 11-byte name still decodes, for the server to refuse it...
        assert!(Message::decode(&hex("08 00 0001 6161616161616161616161 23")).is_ok());
        // ... but not one past the lenient limit.
        let mut long = hex("08 00 0001");
        long.extend(std::iter::repeat_n(b'a', MAX_ROOM_NAME + 1));
        long.push(b'#');
        assert!(matches!(
            Message::decode(&long),
            Err(DecodeError::TooLong {
                field: "USER_NAME",
                ..
            })
        ));
        assert_eq!(
            Message::decode(&hex("08 00 0001 616161")),
            Err(DecodeError::Truncated)
        );
        assert!(matches!(
            Message::decode(&hex("78 05 0009 ffff")),
            Err(DecodeError::TooLong { .. })
        ));
        assert_eq!(
            Message::decode(&hex("78 05 0009 0005 6869")),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            Message::decode(&hex("08 00 0001 c328 23")),
            Err(DecodeError::InvalidUtf8("USER_NAME"))
        );
        assert_eq!(
            Message::decode(&hex("10 ff 0001 c0 05")),
            Err(DecodeError::BadBits("STATUT_INSCRIPTION"))
        );
        assert!(Message::decode(&vec![0x08; MAX_DATAGRAM + 1]).is_err());
        assert!(
            valid_user_name("alice") && !valid_user_name("a#b") && !valid_user_name("elevenchars")
        );
        assert!(!valid_room_name("") && valid_room_name("x"));
    }

    /// chinwag's types 23-27 (docs/protocols/rooms.md).
    fn chinwag_samples() -> Vec<Message> {
        vec![
            m(SERVER, 300, Body::RoomClosed { room: s("club") }),
            m(7, 300, Body::RoomClosedAck),
            m(7, 12, Body::ListUsers),
            m(
                SERVER,
                12,
                Body::UserList {
                    names: vec![s("al"), s("bo")],
                },
            ),
            m(SERVER, 12, Body::UserList { names: vec![] }),
            m(
                SERVER,
                13,
                Body::Error {
                    refused: 31,
                    reason: Reason::UnknownType,
                },
            ),
            m(
                SERVER,
                14,
                Body::Error {
                    refused: kind::TEXTE,
                    reason: Reason::TooLong,
                },
            ),
        ]
    }

    #[test]
    fn chinwag_types_golden_bytes_and_round_trips() {
        // FERMETURE_MESSAGERIE (10111), server, seq 300, "club#".
        assert_eq!(
            m(SERVER, 300, Body::RoomClosed { room: s("club") }).to_bytes(),
            hex("b8 ff 012c 636c7562 23")
        );
        assert_eq!(m(7, 300, Body::RoomClosedAck).to_bytes(), hex("c0 07 012c"));
        assert_eq!(m(7, 12, Body::ListUsers).to_bytes(), hex("c8 07 000c"));
        assert_eq!(
            m(
                SERVER,
                12,
                Body::UserList {
                    names: vec![s("al"), s("bo")]
                }
            )
            .to_bytes(),
            hex("d0 ff 000c 02 616c23 626f23")
        );
        // ERREUR (11011): refused type 15 (TEXTE) in the high 5 bits, reason 3.
        assert_eq!(
            m(
                SERVER,
                14,
                Body::Error {
                    refused: kind::TEXTE,
                    reason: Reason::TooLong
                }
            )
            .to_bytes(),
            hex("d8 ff 000e 78 03")
        );
        for msg in chinwag_samples() {
            let b = msg.to_bytes();
            assert_eq!(Message::decode(&b).unwrap(), msg, "{msg:?}");
            for cut in 0..b.len() {
                if let Ok(other) = Message::decode(&b[..cut]) {
                    panic!("{msg:?} cut at {cut} decoded as {other:?}");
                }
            }
            let mut long = b.clone();
            long.push(0);
            assert!(Message::decode(&long).is_err(), "{msg:?} + trailing byte");
        }
        // Reasons 0 and 7+ are undefined; the refused type's low bits are padding.
        assert_eq!(
            Message::decode(&hex("d8 ff 000e 78 07")),
            Err(DecodeError::BadBits("RAISON"))
        );
        assert!(Message::decode(&hex("d8 ff 000e 78 00")).is_err());
        assert!(Message::decode(&hex("d8 ff 000e 79 01")).is_err());
        // 28-31 and 0 stay undefined.
        for k in [0u8, 28, 29, 30, 31] {
            assert_eq!(
                Message::decode(&[k << 3, 1, 0, 1]),
                Err(DecodeError::UnknownOpcode(k as u16))
            );
        }
    }

    #[test]
    fn requests_and_their_answers() {
        for k in (1..=25u8).step_by(2) {
            assert!(!is_answer(k), "{k}");
            assert_eq!(answer_kind(k), Some(k + 1));
            assert!(is_answer(k + 1), "{}", k + 1);
        }
        assert!(is_answer(kind::ERREUR));
        for k in [0u8, 28, 29, 30, 31] {
            assert!(!is_answer(k) && answer_kind(k).is_none(), "{k}");
        }
        for msg in samples().into_iter().chain(chinwag_samples()) {
            let k = msg.body.kind();
            assert_eq!(is_answer(k), answer_kind(k).is_none(), "{msg:?}");
        }
    }

    #[test]
    fn header_reads_without_the_body() {
        assert_eq!(
            Header::peek(&hex("78 05 0009 ffff")),
            Ok(Header {
                kind: kind::TEXTE,
                user: 5,
                seq: 9
            })
        );
        assert_eq!(Header::peek(&hex("78 05 00")), Err(DecodeError::Truncated));
        assert_eq!(
            Header::peek(&hex("7c 05 0009")),
            Err(DecodeError::BadBits("header padding"))
        );
        // An oversize datagram still shows its header (to be answered).
        let mut big = hex("78 05 0009");
        big.resize(MAX_DATAGRAM + 1, b'x');
        assert_eq!(Header::peek(&big).unwrap().seq, 9);
        assert!(Message::decode(&big).is_err());
    }

    #[test]
    fn inviter_is_read_with_or_without_its_delimiter() {
        let with = hex("58 05 0007 626f62 23");
        let bare = hex("58 05 0007 626f62");
        let want = m(5, 7, Body::Invite { user: s("bob") });
        assert_eq!(Message::decode_lenient(&with), Ok(want.clone()));
        assert_eq!(Message::decode_lenient(&bare), Ok(want.clone()));
        // The canonical form, which is what we send, is the seed's diagram:
        // USER_NAME alone, the rest of the datagram (NOTES.md).
        assert_eq!(Message::decode(&bare), Ok(want.clone()));
        assert_eq!(Message::decode(&with), Err(DecodeError::TrailingBytes(1)));
        assert_eq!(want.to_bytes(), bare);
        // Names follow the same rules either way.
        for d in [
            "58 05 0007 6161616161616161616161",
            "58 05 0007 6161616161616161616161 23",
        ] {
            assert!(
                matches!(
                    Message::decode_lenient(&hex(d)),
                    Err(DecodeError::TooLong { .. })
                ),
                "{d}"
            );
        }
        assert!(Message::decode(&hex("58 05 0007 61616161616161616161")).is_ok());
        assert_eq!(
            Message::decode_lenient(&hex("58 05 0007 ff")),
            Err(DecodeError::InvalidUtf8("USER_NAME"))
        );
        assert!(Message::decode_lenient(&hex("58 05 0007")).is_err());
        assert!(Message::decode_lenient(&hex("58 05 0007 23")).is_err());
        assert!(Message::decode_lenient(&hex("58 05 0007 62 23 62")).is_err());
        assert!(Message::decode_lenient(&hex("58 05 0007 62 23 23")).is_err());
        // Other types are as strict as ever.
        assert_eq!(
            Message::decode_lenient(&hex("38 05 0007 626f62")),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x0703);
        for _ in 0..30_000 {
            let n = rng.gen_range(0..80);
            let mut d: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            if n > 0 {
                d[0] = (rng.gen_range(0..24u8)) << 3;
            }
            if let Ok(msg) = Message::decode(&d) {
                // Whatever decodes re-encodes to the same bytes.
                assert_eq!(msg.to_bytes(), d, "{msg:?}");
            }
        }
    }
}
