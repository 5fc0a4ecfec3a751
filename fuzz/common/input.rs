//! The fuzz input read as a stream of choices, shared by the stateful
//! targets (each includes this file as a module).
#![allow(dead_code)]

pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    /// The next byte, if any is left.
    pub fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    /// The next byte, 0 once the input is used up.
    pub fn or0(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }

    /// The next `n` bytes, or what is left.
    pub fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }

    pub fn done(&self) -> bool {
        self.0.is_empty()
    }
}
