//! Banned names and addresses, as the hub checks them at every login and
//! the acceptors check them on every new connection. Only the policy lives
//! here: the store keeps the persisted copy, the admin socket changes both.
//! The lock is a leaf: nothing else is taken while it is held.

use std::collections::BTreeSet;
use std::net::IpAddr;

use parking_lot::RwLock;

/// Bans kept at most, names and addresses together: a ban list is typed by
/// an operator, so this only stops a runaway script.
pub const MAX_BANS: usize = 100_000;

/// What a ban is on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ban {
    Name(String),
    Ip(IpAddr),
}

impl Ban {
    /// The two columns a ban is stored as: kind ("name" or "ip") and value.
    pub fn columns(&self) -> (&'static str, String) {
        match self {
            Ban::Name(n) => ("name", n.clone()),
            Ban::Ip(ip) => ("ip", ip.to_string()),
        }
    }

    /// The inverse of [`Ban::columns`]; None for a row this version does not know.
    pub fn from_columns(kind: &str, value: &str) -> Option<Ban> {
        match kind {
            "name" => Some(Ban::Name(value.to_owned())),
            "ip" => value.parse().ok().map(|ip| Ban::Ip(canonical(ip))),
            _ => None,
        }
    }
}

/// An IPv4 client reaching an IPv6 listener appears as ::ffff:a.b.c.d; a
/// ban on a.b.c.d must still match it.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[derive(Default)]
pub struct Bans {
    set: RwLock<BTreeSet<Ban>>,
}

impl Bans {
    pub fn name_banned(&self, name: &str) -> bool {
        let set = self.set.read();
        !set.is_empty() && set.contains(&Ban::Name(name.to_owned()))
    }

    pub fn ip_banned(&self, ip: IpAddr) -> bool {
        let set = self.set.read();
        !set.is_empty() && set.contains(&Ban::Ip(canonical(ip)))
    }

    /// Add a ban; false if it was already there or the list is full.
    pub fn add(&self, ban: Ban) -> bool {
        let mut set = self.set.write();
        set.len() < MAX_BANS && set.insert(ban)
    }

    pub fn remove(&self, ban: &Ban) -> bool {
        self.set.write().remove(ban)
    }

    pub fn len(&self) -> usize {
        self.set.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every ban, names first, each kind sorted.
    pub fn list(&self) -> Vec<Ban> {
        self.set.read().iter().cloned().collect()
    }

    pub fn replace_all(&self, bans: impl IntoIterator<Item = Ban>) {
        let mut set: BTreeSet<Ban> = bans.into_iter().collect();
        while set.len() > MAX_BANS {
            set.pop_last();
        }
        *self.set.write() = set;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_matches_a_ban_on_ipv4() {
        let b = Bans::default();
        assert!(b.add(Ban::Ip("10.1.2.3".parse().unwrap())));
        assert!(b.ip_banned("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!b.ip_banned("10.1.2.4".parse().unwrap()));
        assert!(!b.add(Ban::Ip("10.1.2.3".parse().unwrap())));
        assert_eq!(
            Ban::from_columns("ip", "::ffff:10.1.2.3"),
            Some(Ban::Ip("10.1.2.3".parse().unwrap()))
        );
        assert_eq!(Ban::from_columns("other", "x"), None);
        assert!(b.add(Ban::Name("eve".into())));
        assert!(b.name_banned("eve") && !b.name_banned("Eve"));
        assert!(b.remove(&Ban::Name("eve".into())));
        assert!(!b.name_banned("eve"));
    }
}
