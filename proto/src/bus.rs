//! The envelope chinwagd nodes exchange over the cluster bus (NATS) and
//! store as the value of a name claim (docs/scaling.md, "The bus
//! envelope"). Never seen by a client. Layout: a version byte (1), a kind
//! byte, then the kind's fields; integers big-endian, strings with a u16
//! length prefix. A whole envelope is at most `MAX_ENVELOPE` bytes.

use crate::cursor::{Layout, Order, Prefix, Reader, Short, Writer};
use crate::{DecodeError, Redact};

pub const VERSION: u8 = 1;
/// Node names, user names.
pub const MAX_NAME: usize = 255;
/// Chat texts (above every dialect's own text limit).
pub const MAX_TEXT: usize = 60_000;
/// The largest envelope a node sends or accepts.
pub const MAX_ENVELOPE: usize = 64 * 1024;

const LAYOUT: Layout = Layout {
    order: Order::Big,
    prefix: Prefix::U16,
    short: Short::Truncated,
};

const HEARTBEAT: u8 = 1;
const CLAIM: u8 = 2;
const PRIVATE: u8 = 3;
const PUBLIC: u8 = 4;
const POKE: u8 = 5;
const ACCOUNT: u8 = 6;
const BAN: u8 = 7;
const KICK: u8 = 8;
const CALL: u8 = 9;
const PRIVATE_CONN: u8 = 10;
const ROOM: u8 = 11;

/// `Room` ops: rooms private rooms across nodes (docs/scaling.md, "Rooms
/// private rooms across nodes"). The room lives on its *home* node (where
/// it was created); members of other nodes are stand-ins there.
pub mod room {
    /// Home -> `cw.<cluster>.global`: room `room` of node `node` has
    /// `count` members (0: it closed), mode `mode`. Sent on each change and
    /// every second for every room.
    pub const LISTED: u8 = 0;
    /// Member's node -> home: `from` asks to enter `room` (DEMANDE_ACCES,
    /// CHANGER); `req` names the request, `host`/`port` where `from`'s
    /// datagrams come from (for a decentralised room).
    pub const JOIN: u8 = 1;
    /// Home -> member's node: `to` is in `room` now (`mode`); `req` echoes
    /// the join's (0 after an accepted invitation). For a decentralised
    /// room, `text` lists the other members: one line each,
    /// `name host port`.
    pub const JOINED: u8 = 2;
    /// Home -> member's node: `to` was not let in (`count`: 1 no such
    /// room, 2 full); `req` echoes the join's.
    pub const REFUSED: u8 = 3;
    /// Member's node -> home: `from` left `room`.
    pub const LEAVE: u8 = 4;
    /// Member's node -> home: `from`'s text `text` in `room`.
    pub const TEXT: u8 = 5;
    /// Home -> member's node: `from`'s text `text` in `room`, for `to`.
    pub const MESSAGE: u8 = 6;
    /// Home -> member's node: `room` closed with `to` its last member.
    pub const CLOSED: u8 = 7;
    /// Home -> invitee's node: `from` invites `to` into `room` (`mode`);
    /// `req` is the home's invitation token.
    pub const INVITE: u8 = 8;
    /// Invitee's node -> home: `from` answers invitation `req` (`count`:
    /// 1 accept, 0 refuse).
    pub const ANSWER: u8 = 9;
    /// The highest op.
    pub const LAST: u8 = ANSWER;
}

/// What a `Call` envelope says happened to a call (the hub's call events).
/// `PrivateConn` ops: a chatos private connection between users of two
/// nodes (docs/scaling.md, "chatos private connections across nodes").
pub mod private {
    /// REQUEST_PRIVATE from `requester` (of the sending node, connected
    /// from `ip`) to `target` (of the receiving node).
    pub const REQUEST: u8 = 0;
    /// KO_PRIVATE: `target` refused; for `requester`, of the receiving node.
    pub const REFUSED: u8 = 1;
    /// ID_PRIVATE: the connect id `connect_id` for `requester`.
    pub const ID: u8 = 2;
    /// ACCEPT_CLOSE_CONNECTION for `target` (of the receiving node):
    /// `requester`'s connection `connect_id` is closed.
    pub const CLOSED: u8 = 3;
    /// CLOSE_CONNECTION from `requester` (of the sending node) of its
    /// connection `connect_id` with `target`, whose node relays it.
    pub const CLOSE: u8 = 4;
    /// The highest op.
    pub const LAST: u8 = CLOSE;
}

pub mod call {
    pub const OFFER: u8 = 0;
    pub const ANSWERED: u8 = 1;
    pub const REFUSED: u8 = 2;
    pub const ENDED: u8 = 3;
    /// The callee's node to the caller's: `from`, a babel callee there,
    /// connects from `host` (an IP address); the caller's relay takes its
    /// voice connection from that address only.
    pub const AT: u8 = 4;
    /// The caller's node to the callee's: `to`, a babel callee there,
    /// answered `from`'s relayed call by connecting to the caller's relay
    /// (its own node never sees that answer otherwise). Sent again until
    /// acknowledged (bounded: docs/scaling.md, "The bus envelope").
    pub const TAKEN: u8 = 5;
    /// The callee's node to the caller's: `from`, a babel callee there,
    /// got the `taken` of `to`'s call (sent for every `taken` received,
    /// whether or not it still changed anything).
    pub const TAKEN_ACK: u8 = 6;
    /// The highest op.
    pub const LAST: u8 = TAKEN_ACK;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// Node `node` (started at `epoch`) is alive; on `cw.<cluster>.hb`.
    /// `index` and `addr`: the node's `node_index` and its node-to-node
    /// listener (`cluster_addr`, empty when it has none).
    Heartbeat {
        node: String,
        epoch: u64,
        index: u8,
        addr: String,
    },
    /// The value of a name claim in the `names` bucket: who holds the name.
    /// `dialect`: 0 chatos, 1 babel, 2 accounts, 3 rooms.
    Claim {
        node: String,
        epoch: u64,
        dialect: u8,
        name: String,
    },
    /// A private text for `to`, a user on the receiving node.
    Private {
        from: String,
        to: String,
        text: String,
    },
    /// A text in the public room (chatos global chat, rooms public room),
    /// sent by `node`; on `cw.<cluster>.global`.
    Public {
        node: String,
        from: String,
        text: String,
    },
    /// Accounts user `name` has stored items to deliver: its node runs its
    /// offline flush. On the user's node subject, or on
    /// `cw.<cluster>.global` when the sender does not know its node.
    Poke { name: String },
    /// Accounts pseudo `pseudo` was registered (true) or deleted (false)
    /// through node `node`; on `cw.<cluster>.global`, so every node's
    /// cache of registered names follows.
    Account {
        node: String,
        pseudo: String,
        registered: bool,
    },
    /// An operator banned (`added`) or unbanned something through node
    /// `node`: `kind` "name" or "ip" and its value, as the store's columns;
    /// on `cw.<cluster>.global`.
    Ban {
        node: String,
        kind: String,
        value: String,
        added: bool,
    },
    /// An operator kicked `name`, a user of the receiving node.
    Kick { name: String },
    /// Call signalling between `from` (a user of the sending node) and
    /// `to` (a user of the receiving node): `op` (see [`call`]) and, for an
    /// offer or an answer, where `from`'s voice goes (host, port; empty and
    /// 0 when its dialect gives none). A relayed call is relayed by the
    /// caller's node, which offers its relay's address.
    Call {
        op: u8,
        from: String,
        to: String,
        host: String,
        port: u16,
    },
    PrivateConn {
        op: u8,
        requester: String,
        target: String,
        connect_id: i64,
        /// The requester's address (REQUEST only; empty otherwise).
        ip: String,
    },
    /// A rooms private room across nodes: `op` (see [`room`]), the home
    /// node `node`, the room's name, the users `from` and `to` (empty
    /// where the op has none), `mode` (0 centralised, 1 decentralised),
    /// `count`, a request or invitation number `req`, `host`/`port` and
    /// `text`.
    Room {
        op: u8,
        node: String,
        room: String,
        from: String,
        to: String,
        mode: u8,
        count: u8,
        req: u64,
        host: String,
        port: u16,
        text: String,
    },
}

impl Envelope {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        let mut w = Writer::new(&mut out, LAYOUT);
        w.u8(VERSION);
        match self {
            Envelope::Heartbeat {
                node,
                epoch,
                index,
                addr,
            } => {
                w.u8(HEARTBEAT).str(node).u64(*epoch).u8(*index).str(addr);
            }
            Envelope::Claim {
                node,
                epoch,
                dialect,
                name,
            } => {
                w.u8(CLAIM).str(node).u64(*epoch).u8(*dialect).str(name);
            }
            Envelope::Private { from, to, text } => {
                w.u8(PRIVATE).str(from).str(to).str(text);
            }
            Envelope::Public { node, from, text } => {
                w.u8(PUBLIC).str(node).str(from).str(text);
            }
            Envelope::Poke { name } => {
                w.u8(POKE).str(name);
            }
            Envelope::Account {
                node,
                pseudo,
                registered,
            } => {
                w.u8(ACCOUNT)
                    .str(node)
                    .str(pseudo)
                    .u8(u8::from(*registered));
            }
            Envelope::Ban {
                node,
                kind,
                value,
                added,
            } => {
                w.u8(BAN)
                    .str(node)
                    .str(kind)
                    .str(value)
                    .u8(u8::from(*added));
            }
            Envelope::Kick { name } => {
                w.u8(KICK).str(name);
            }
            Envelope::Call {
                op,
                from,
                to,
                host,
                port,
            } => {
                w.u8(CALL).u8(*op).str(from).str(to).str(host).u16(*port);
            }
            Envelope::PrivateConn {
                op,
                requester,
                target,
                connect_id,
                ip,
            } => {
                w.u8(PRIVATE_CONN)
                    .u8(*op)
                    .str(requester)
                    .str(target)
                    .u64(*connect_id as u64)
                    .str(ip);
            }
            Envelope::Room {
                op,
                node,
                room,
                from,
                to,
                mode,
                count,
                req,
                host,
                port,
                text,
            } => {
                w.u8(ROOM)
                    .u8(*op)
                    .str(node)
                    .str(room)
                    .str(from)
                    .str(to)
                    .u8(*mode)
                    .u8(*count)
                    .u64(*req)
                    .str(host)
                    .u16(*port)
                    .str(text);
            }
        }
        out
    }

    /// One whole envelope (a bus message's payload).
    pub fn decode(buf: &[u8]) -> Result<Envelope, DecodeError> {
        if buf.len() > MAX_ENVELOPE {
            return Err(DecodeError::TooLong {
                field: "envelope",
                len: buf.len() as u64,
                max: MAX_ENVELOPE as u64,
            });
        }
        let mut r = Reader::new(buf, LAYOUT);
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::BadBits("envelope version"));
        }
        let env = match r.u8()? {
            HEARTBEAT => Envelope::Heartbeat {
                node: r.str("node", MAX_NAME)?,
                epoch: r.u64()?,
                index: r.u8()?,
                addr: r.str("addr", MAX_NAME)?,
            },
            CLAIM => Envelope::Claim {
                node: r.str("node", MAX_NAME)?,
                epoch: r.u64()?,
                dialect: match r.u8()? {
                    d @ 0..=3 => d,
                    _ => return Err(DecodeError::BadBits("dialect")),
                },
                name: r.str("name", MAX_NAME)?,
            },
            PRIVATE => Envelope::Private {
                from: r.str("from", MAX_NAME)?,
                to: r.str("to", MAX_NAME)?,
                text: r.str("text", MAX_TEXT)?,
            },
            PUBLIC => Envelope::Public {
                node: r.str("node", MAX_NAME)?,
                from: r.str("from", MAX_NAME)?,
                text: r.str("text", MAX_TEXT)?,
            },
            POKE => Envelope::Poke {
                name: r.str("name", MAX_NAME)?,
            },
            ACCOUNT => Envelope::Account {
                node: r.str("node", MAX_NAME)?,
                pseudo: r.str("pseudo", MAX_NAME)?,
                registered: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::BadBits("registered")),
                },
            },
            BAN => Envelope::Ban {
                node: r.str("node", MAX_NAME)?,
                kind: r.str("kind", MAX_NAME)?,
                value: r.str("value", MAX_NAME)?,
                added: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::BadBits("added")),
                },
            },
            KICK => Envelope::Kick {
                name: r.str("name", MAX_NAME)?,
            },
            CALL => Envelope::Call {
                op: match r.u8()? {
                    op @ 0..=call::LAST => op,
                    _ => return Err(DecodeError::BadBits("call op")),
                },
                from: r.str("from", MAX_NAME)?,
                to: r.str("to", MAX_NAME)?,
                host: r.str("host", MAX_NAME)?,
                port: r.u16()?,
            },
            PRIVATE_CONN => Envelope::PrivateConn {
                op: match r.u8()? {
                    op @ 0..=private::LAST => op,
                    _ => return Err(DecodeError::BadBits("private op")),
                },
                requester: r.str("requester", MAX_NAME)?,
                target: r.str("target", MAX_NAME)?,
                connect_id: r.u64()? as i64,
                ip: r.str("ip", MAX_NAME)?,
            },
            ROOM => Envelope::Room {
                op: match r.u8()? {
                    op @ 0..=room::LAST => op,
                    _ => return Err(DecodeError::BadBits("room op")),
                },
                node: r.str("node", MAX_NAME)?,
                room: r.str("room", MAX_NAME)?,
                from: r.str("from", MAX_NAME)?,
                to: r.str("to", MAX_NAME)?,
                mode: match r.u8()? {
                    m @ 0..=1 => m,
                    _ => return Err(DecodeError::BadBits("room mode")),
                },
                count: r.u8()?,
                req: r.u64()?,
                host: r.str("host", MAX_NAME)?,
                port: r.u16()?,
                text: r.str("text", MAX_TEXT)?,
            },
            k => return Err(DecodeError::UnknownOpcode(k.into())),
        };
        r.finish()?;
        Ok(env)
    }
}

impl Redact for Envelope {
    fn redacted(&self) -> String {
        match self {
            Envelope::Private { from, to, text } => {
                format!("Private {from} -> {to} {}", crate::redacted_len(text.len()))
            }
            Envelope::Public { node, from, text } => {
                format!("Public {from}@{node} {}", crate::redacted_len(text.len()))
            }
            Envelope::Room {
                op,
                node,
                room,
                from,
                to,
                text,
                ..
            } if *op == room::TEXT || *op == room::MESSAGE => format!(
                "Room {op} {room}@{node} {from} -> {to} {}",
                crate::redacted_len(text.len())
            ),
            other => format!("{other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Envelope> {
        vec![
            Envelope::Heartbeat {
                node: "a".into(),
                epoch: 7,
                index: 3,
                addr: "10.0.0.7:7000".into(),
            },
            Envelope::PrivateConn {
                op: private::ID,
                requester: "x".into(),
                target: "y".into(),
                connect_id: -2,
                ip: String::new(),
            },
            Envelope::Claim {
                node: "b".into(),
                epoch: u64::MAX,
                dialect: 3,
                name: "zoë".into(),
            },
            Envelope::Private {
                from: "x".into(),
                to: "y".into(),
                text: "hi\0there".into(),
            },
            Envelope::Public {
                node: "n".into(),
                from: "x".into(),
                text: String::new(),
            },
            Envelope::Poke { name: "p".into() },
            Envelope::Account {
                node: "a".into(),
                pseudo: "q".into(),
                registered: true,
            },
            Envelope::Ban {
                node: "a".into(),
                kind: "ip".into(),
                value: "10.0.0.7".into(),
                added: false,
            },
            Envelope::Kick { name: "k".into() },
            Envelope::Call {
                op: call::ANSWERED,
                from: "x".into(),
                to: "y".into(),
                host: "10.0.0.7".into(),
                port: 4000,
            },
            Envelope::Call {
                op: call::AT,
                from: "y".into(),
                to: "x".into(),
                host: "10.0.0.8".into(),
                port: 0,
            },
            Envelope::Call {
                op: call::TAKEN,
                from: "x".into(),
                to: "y".into(),
                host: String::new(),
                port: 0,
            },
            Envelope::Call {
                op: call::TAKEN_ACK,
                from: "y".into(),
                to: "x".into(),
                host: String::new(),
                port: 0,
            },
            Envelope::Room {
                op: room::TEXT,
                node: "a".into(),
                room: "the club".into(),
                from: "bob".into(),
                to: String::new(),
                mode: 1,
                count: 3,
                req: u64::MAX,
                host: "10.0.0.7".into(),
                port: 7004,
                text: "hi".into(),
            },
        ]
    }

    #[test]
    fn room_envelopes_have_the_documented_bytes_and_bad_ops_or_modes_are_refused() {
        let join = Envelope::Room {
            op: room::JOIN,
            node: "a".into(),
            room: "club".into(),
            from: "bob".into(),
            to: String::new(),
            mode: 0,
            count: 0,
            req: 7,
            host: "127.0.0.1".into(),
            port: 4000,
            text: String::new(),
        };
        let b = join.to_bytes();
        // docs/scaling.md, "The bus envelope".
        let mut want = vec![1, 11, 1, 0, 1, b'a', 0, 4];
        want.extend_from_slice(b"club");
        want.extend_from_slice(&[0, 3]);
        want.extend_from_slice(b"bob");
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 9]);
        want.extend_from_slice(b"127.0.0.1");
        want.extend_from_slice(&[0x0f, 0xa0, 0, 0]);
        assert_eq!(b, want);
        let mut bad = b.clone();
        bad[2] = room::LAST + 1;
        assert_eq!(Envelope::decode(&bad), Err(DecodeError::BadBits("room op")));
        let mut bad = b.clone();
        // The mode byte: after op, node (3), room (6), from (5), to (2).
        bad[3 + 3 + 6 + 5 + 2] = 2;
        assert_eq!(
            Envelope::decode(&bad),
            Err(DecodeError::BadBits("room mode"))
        );
        let Envelope::Room {
            node, room, from, ..
        } = join
        else {
            unreachable!()
        };
        let t = Envelope::Room {
            op: room::MESSAGE,
            node,
            room,
            from,
            to: "ann".into(),
            mode: 0,
            count: 0,
            req: 0,
            host: String::new(),
            port: 0,
            text: "secret".into(),
        };
        assert!(!t.redacted().contains("secret"));
    }

    #[test]
    fn call_ops_past_the_last_are_refused() {
        let mut b = Envelope::Call {
            op: call::AT,
            from: "y".into(),
            to: "x".into(),
            host: String::new(),
            port: 0,
        }
        .to_bytes();
        b[2] = call::LAST + 1;
        assert_eq!(Envelope::decode(&b), Err(DecodeError::BadBits("call op")));
    }

    #[test]
    fn taken_and_its_acknowledgement_have_the_documented_bytes() {
        let taken = Envelope::Call {
            op: call::TAKEN,
            from: "fern".into(),
            to: "yves".into(),
            host: String::new(),
            port: 0,
        };
        let ack = Envelope::Call {
            op: call::TAKEN_ACK,
            from: "yves".into(),
            to: "fern".into(),
            host: String::new(),
            port: 0,
        };
        // docs/scaling.md, "The bus envelope".
        let fern = [0, 4, b'f', b'e', b'r', b'n'];
        let yves = [0, 4, b'y', b'v', b'e', b's'];
        let want = |op: u8, a: &[u8], b: &[u8]| [&[1, 9, op][..], a, b, &[0, 0, 0, 0]].concat();
        assert_eq!(taken.to_bytes(), want(5, &fern, &yves));
        assert_eq!(ack.to_bytes(), want(6, &yves, &fern));
    }

    #[test]
    fn private_connection_ops_past_the_last_are_refused() {
        let mut b = Envelope::PrivateConn {
            op: private::CLOSE,
            requester: "r".into(),
            target: "t".into(),
            connect_id: 1,
            ip: String::new(),
        }
        .to_bytes();
        b[2] = private::LAST + 1;
        assert_eq!(
            Envelope::decode(&b),
            Err(DecodeError::BadBits("private op"))
        );
    }

    #[test]
    fn every_envelope_round_trips() {
        for e in all() {
            assert_eq!(Envelope::decode(&e.to_bytes()).unwrap(), e);
        }
    }

    #[test]
    fn exact_bytes_of_a_heartbeat() {
        let b = Envelope::Heartbeat {
            node: "ab".into(),
            epoch: 258,
            index: 5,
            addr: "h".into(),
        }
        .to_bytes();
        assert_eq!(
            b,
            [1, 1, 0, 2, b'a', b'b', 0, 0, 0, 0, 0, 0, 1, 2, 5, 0, 1, b'h']
        );
    }

    #[test]
    fn every_prefix_is_refused_and_nothing_panics() {
        for e in all() {
            let b = e.to_bytes();
            for n in 0..b.len() {
                assert!(Envelope::decode(&b[..n]).is_err(), "{e:?} cut at {n}");
            }
            let mut longer = b.clone();
            longer.push(0);
            assert_eq!(
                Envelope::decode(&longer),
                Err(DecodeError::TrailingBytes(1))
            );
        }
        assert!(Envelope::decode(&[2, 1]).is_err());
        assert!(Envelope::decode(&[1, 99]).is_err());
        assert!(Envelope::decode(&[1, CLAIM, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0]).is_err());
        assert!(Envelope::decode(&vec![1; MAX_ENVELOPE + 1]).is_err());
    }

    #[test]
    fn texts_are_redacted() {
        let e = Envelope::Private {
            from: "x".into(),
            to: "y".into(),
            text: "secret".into(),
        };
        assert!(!e.redacted().contains("secret"));
    }
}
