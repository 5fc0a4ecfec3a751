//! One byte cursor for every codec: a `Reader` over received bytes and a
//! `Writer` appending to a buffer. What differs between dialects is a
//! parameter (`Layout`): the byte order, the width of length prefixes, and
//! what running out of bytes means. Each codec keeps its own field limits
//! and passes them per call. No I/O, no clock, no allocation before a
//! length has been checked against its limit.

use crate::DecodeError;

/// The byte order of multi-byte integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Big,
    Little,
}

/// The type of a length prefix (of a string, a blob or a list) on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    U8,
    U16,
    /// A signed 32-bit length (Java's `int`): negative values are refused.
    I32,
    U32,
    U64,
}

impl Prefix {
    fn width(self) -> usize {
        match self {
            Prefix::U8 => 1,
            Prefix::U16 => 2,
            Prefix::I32 | Prefix::U32 => 4,
            Prefix::U64 => 8,
        }
    }

    /// The largest length the prefix can carry.
    fn max(self) -> u64 {
        match self {
            Prefix::U8 => u8::MAX.into(),
            Prefix::U16 => u16::MAX.into(),
            Prefix::I32 => i32::MAX as u64,
            Prefix::U32 => u32::MAX.into(),
            Prefix::U64 => u64::MAX,
        }
    }
}

/// What running out of bytes means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Short {
    /// A stream parsed from the front: more bytes may come.
    Incomplete,
    /// Inside a frame whose size is known: the frame is cut short.
    Truncated,
}

impl Short {
    fn error(self) -> DecodeError {
        match self {
            Short::Incomplete => DecodeError::Incomplete,
            Short::Truncated => DecodeError::Truncated,
        }
    }
}

/// The wire conventions of one dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub order: Order,
    /// The prefix of strings, blobs and list counts.
    pub prefix: Prefix,
    pub short: Short,
}

/// Reads fields from the front of a buffer.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    layout: Layout,
}

macro_rules! read_int {
    ($name:ident, $t:ty) => {
        pub fn $name(&mut self) -> Result<$t, DecodeError> {
            let b = self.array()?;
            Ok(match self.layout.order {
                Order::Big => <$t>::from_be_bytes(b),
                Order::Little => <$t>::from_le_bytes(b),
            })
        }
    };
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], layout: Layout) -> Self {
        Reader {
            buf,
            pos: 0,
            layout,
        }
    }

    /// Bytes used so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn short(&self) -> DecodeError {
        self.layout.short.error()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.short())?;
        let s = self.buf.get(self.pos..end).ok_or_else(|| self.short())?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    read_int!(u16, u16);
    read_int!(u32, u32);
    read_int!(u64, u64);
    read_int!(i32, i32);
    read_int!(i64, i64);

    /// A length prefix, refused above `max` (and below zero) before
    /// anything it announces is awaited or allocated.
    pub fn len(&mut self, field: &'static str, max: usize) -> Result<usize, DecodeError> {
        let n: u64 = match self.layout.prefix {
            Prefix::U8 => self.u8()?.into(),
            Prefix::U16 => self.u16()?.into(),
            Prefix::I32 => {
                let n = self.i32()?;
                u64::try_from(n).map_err(|_| DecodeError::NegativeLength(n.into()))?
            }
            Prefix::U32 => self.u32()?.into(),
            Prefix::U64 => self.u64()?,
        };
        if n > max as u64 {
            return Err(DecodeError::TooLong {
                field,
                len: n,
                max: max as u64,
            });
        }
        Ok(n as usize)
    }

    /// A length-prefixed run of at most `max` bytes.
    pub fn blob(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let n = self.len(field, max)?;
        self.take(n)
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes, copied out.
    pub fn str(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        self.str_ref(field, max).map(str::to_owned)
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes, in place.
    pub fn str_ref(&mut self, field: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        let b = self.blob(field, max)?;
        utf8(b, field)
    }

    /// A string of at most `max` bytes ended by `delim` (which is used and
    /// not returned). Missing its end within `max + 1` bytes, it is too long
    /// if that many bytes are there, else short.
    pub fn until(
        &mut self,
        delim: u8,
        field: &'static str,
        max: usize,
    ) -> Result<String, DecodeError> {
        let rest = &self.buf[self.pos..];
        let Some(end) = rest
            .iter()
            .take(max.saturating_add(1))
            .position(|b| *b == delim)
        else {
            return Err(if rest.len() > max {
                DecodeError::TooLong {
                    field,
                    len: rest.len() as u64,
                    max: max as u64,
                }
            } else {
                self.short()
            });
        };
        let s = utf8(&rest[..end], field)?.to_owned();
        self.pos += end + 1;
        Ok(s)
    }

    /// A counted list of at most `max` items, each read by `item` and each
    /// at least `min_item` bytes long: a count that cannot fit in what is
    /// left is refused before anything is reserved.
    pub fn list<T>(
        &mut self,
        field: &'static str,
        max: usize,
        min_item: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let n = self.len(field, max)?;
        if n.saturating_mul(min_item) > self.left() {
            return Err(self.short());
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(item(self)?);
        }
        Ok(v)
    }

    /// The bytes used, after checking that none are left over.
    pub fn finish(&self) -> Result<usize, DecodeError> {
        match self.left() {
            0 => Ok(self.pos),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

fn utf8<'b>(b: &'b [u8], field: &'static str) -> Result<&'b str, DecodeError> {
    std::str::from_utf8(b).map_err(|_| DecodeError::InvalidUtf8(field))
}

/// A place in the output for a length written once what follows is known.
#[derive(Debug)]
#[must_use = "a length slot must be filled"]
pub struct Slot {
    at: usize,
    prefix: Prefix,
}

/// Appends fields to a buffer.
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
    layout: Layout,
}

macro_rules! write_int {
    ($name:ident, $t:ty) => {
        pub fn $name(&mut self, v: $t) -> &mut Self {
            match self.layout.order {
                Order::Big => self.out.extend_from_slice(&v.to_be_bytes()),
                Order::Little => self.out.extend_from_slice(&v.to_le_bytes()),
            }
            self
        }
    };
}

impl<'a> Writer<'a> {
    pub fn new(out: &'a mut Vec<u8>, layout: Layout) -> Self {
        Writer { out, layout }
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }

    write_int!(u16, u16);
    write_int!(u32, u32);
    write_int!(u64, u64);
    write_int!(i32, i32);
    write_int!(i64, i64);

    /// Bytes as they are, without a prefix.
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b);
        self
    }

    /// A length prefix of `n` in `prefix`'s type, clamped to what it can
    /// carry; returns the length written. Callers keep fields within their
    /// limits first, so clamping never happens in practice.
    fn prefix_of(&mut self, prefix: Prefix, n: usize) -> usize {
        let n = (n as u64).min(prefix.max());
        match prefix {
            Prefix::U8 => self.u8(n as u8),
            Prefix::U16 => self.u16(n as u16),
            Prefix::I32 => self.i32(n as i32),
            Prefix::U32 => self.u32(n as u32),
            Prefix::U64 => self.u64(n),
        };
        n as usize
    }

    /// A length prefix in the layout's type; see `prefix_of`.
    pub fn len(&mut self, n: usize) -> usize {
        self.prefix_of(self.layout.prefix, n)
    }

    /// A length-prefixed run of bytes.
    pub fn blob(&mut self, b: &[u8]) -> &mut Self {
        let n = self.len(b.len());
        self.raw(&b[..n])
    }

    /// A length-prefixed string.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.blob(s.as_bytes())
    }

    /// A counted list, each item written by `item`.
    pub fn list<T>(&mut self, items: &[T], mut item: impl FnMut(&mut Self, &T)) -> &mut Self {
        let n = self.len(items.len());
        for t in &items[..n] {
            item(self, t);
        }
        self
    }

    /// Reserve a length of type `prefix`, to be filled by `fill`.
    pub fn slot(&mut self, prefix: Prefix) -> Slot {
        let at = self.out.len();
        self.out.resize(at + prefix.width(), 0);
        Slot { at, prefix }
    }

    /// Write into `slot` how many bytes follow it.
    pub fn fill(&mut self, slot: Slot) {
        let after = self.out.len() - slot.at - slot.prefix.width();
        let mut len = Vec::with_capacity(8);
        Writer::new(&mut len, self.layout).prefix_of(slot.prefix, after);
        self.out[slot.at..slot.at + len.len()].copy_from_slice(&len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BE16: Layout = Layout {
        order: Order::Big,
        prefix: Prefix::U16,
        short: Short::Truncated,
    };
    const LE64: Layout = Layout {
        order: Order::Little,
        prefix: Prefix::U64,
        short: Short::Truncated,
    };
    const JAVA: Layout = Layout {
        order: Order::Big,
        prefix: Prefix::I32,
        short: Short::Incomplete,
    };

    #[test]
    fn integers_follow_the_byte_order() {
        let mut v = Vec::new();
        Writer::new(&mut v, BE16).u16(0x0102).u32(0x0304_0506);
        Writer::new(&mut v, LE64).u16(0x0102).u64(7);
        assert_eq!(v, [1, 2, 3, 4, 5, 6, 2, 1, 7, 0, 0, 0, 0, 0, 0, 0]);
        let mut r = Reader::new(&v, BE16);
        assert_eq!((r.u16(), r.u32()), (Ok(0x0102), Ok(0x0304_0506)));
        let mut r = Reader::new(&v[6..], LE64);
        assert_eq!((r.u16(), r.u64()), (Ok(0x0102), Ok(7)));
        assert_eq!(r.finish(), Ok(10));
    }

    #[test]
    fn strings_and_lists_round_trip_in_every_layout() {
        for layout in [BE16, LE64, JAVA] {
            let mut v = Vec::new();
            let names = ["al".to_string(), String::new(), "é".to_string()];
            Writer::new(&mut v, layout)
                .str("hi")
                .list(&names, |w, s| {
                    w.str(s);
                })
                .blob(&[9, 9]);
            let mut r = Reader::new(&v, layout);
            assert_eq!(r.str("s", 10).unwrap(), "hi");
            assert_eq!(r.list("names", 3, 1, |r| r.str("name", 5)).unwrap(), names);
            assert_eq!(r.blob("b", 2).unwrap(), [9, 9]);
            assert!(r.at_end());
        }
    }

    #[test]
    fn limits_are_checked_before_the_bytes_are_awaited() {
        // A 64-bit length that lies: refused at once, with nothing behind it.
        let mut v = Vec::new();
        Writer::new(&mut v, LE64).u64(u64::MAX);
        let e = Reader::new(&v, LE64).str("name", 30).unwrap_err();
        assert_eq!(
            e,
            DecodeError::TooLong {
                field: "name",
                len: u64::MAX,
                max: 30
            }
        );
        // A negative Java length.
        let v = (-1i32).to_be_bytes();
        assert_eq!(
            Reader::new(&v, JAVA).str("msg", 10),
            Err(DecodeError::NegativeLength(-1))
        );
        // A list count that cannot fit in what is left.
        let mut v = Vec::new();
        Writer::new(&mut v, BE16).u16(1000).u16(0);
        let e = Reader::new(&v, BE16).list("l", 1000, 2, |r| r.str("x", 1));
        assert_eq!(e, Err(DecodeError::Truncated));
        let e = Reader::new(&v, BE16).list("l", 999, 2, |r| r.str("x", 1));
        assert!(matches!(e, Err(DecodeError::TooLong { field: "l", .. })));
    }

    #[test]
    fn running_out_is_what_the_layout_says() {
        let v = [0u8, 5, b'a'];
        assert_eq!(
            Reader::new(&v, BE16).str("s", 9),
            Err(DecodeError::Truncated)
        );
        let v = [0u8, 0, 0, 5, b'a'];
        assert_eq!(
            Reader::new(&v, JAVA).str("s", 9),
            Err(DecodeError::Incomplete)
        );
        assert_eq!(Reader::new(&[], JAVA).u8(), Err(DecodeError::Incomplete));
        assert_eq!(
            Reader::new(&[1], BE16).take(usize::MAX),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn delimited_strings() {
        let v = b"ab#cd#";
        let mut r = Reader::new(v, BE16);
        assert_eq!(r.until(b'#', "n", 2).unwrap(), "ab");
        assert_eq!(r.until(b'#', "n", 2).unwrap(), "cd");
        assert!(r.at_end());
        assert_eq!(
            Reader::new(b"abc", BE16).until(b'#', "n", 2),
            Err(DecodeError::TooLong {
                field: "n",
                len: 3,
                max: 2
            })
        );
        assert_eq!(
            Reader::new(b"ab", BE16).until(b'#', "n", 2),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn trailing_bytes_are_counted() {
        let v = [1u8, 2, 3];
        let mut r = Reader::new(&v, BE16);
        r.u8().unwrap();
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes(2)));
    }

    #[test]
    fn a_slot_holds_the_length_of_what_follows_it() {
        let mut v = vec![0xAA];
        let mut w = Writer::new(&mut v, LE64);
        let s = w.slot(Prefix::U64);
        w.u16(3).str("xy");
        w.fill(s);
        assert_eq!(v[1..9], 12u64.to_le_bytes());
        let mut v = Vec::new();
        let mut w = Writer::new(&mut v, BE16);
        let s = w.slot(Prefix::U32);
        w.raw(&[1, 2, 3]);
        w.fill(s);
        assert_eq!(v, [0, 0, 0, 3, 1, 2, 3]);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let bytes = seed.to_le_bytes();
            let len = (seed % 9) as usize;
            for layout in [BE16, LE64, JAVA] {
                let mut r = Reader::new(&bytes[..len], layout);
                let _ = r.list("l", 50, 0, |r| r.str("s", 4));
                let _ = r.until(b'#', "n", 3);
                let _ = r.finish();
            }
        }
    }
}
