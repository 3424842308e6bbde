//! Reading a binary record field by field (big-endian integers, length-prefixed strings),
//! every read bounds-checked: the one cursor under the store's session codec and the
//! cluster's envelopes and session records. A short or bad read is an error naming why
//! (`&'static str`), which each format turns into its own error type.

/// A bounds-checked cursor over `buf`.
pub(crate) struct Cursor<'a> {
    /// The record.
    buf: &'a [u8],
    /// Read position.
    at: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, at: 0 }
    }

    /// The read position.
    pub(crate) fn at(&self) -> usize {
        self.at
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or("truncated")?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.at..];
        self.at = self.buf.len();
        s
    }

    pub(crate) fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, &'static str> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, &'static str> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, &'static str> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A string of `n` bytes.
    pub(crate) fn str_of(&mut self, n: usize) -> Result<String, &'static str> {
        std::str::from_utf8(self.take(n)?)
            .map(str::to_owned)
            .map_err(|_| "string not UTF-8")
    }

    /// A string after its length as a `u32`.
    pub(crate) fn string32(&mut self) -> Result<String, &'static str> {
        let n = self.u32()? as usize;
        self.str_of(n)
    }

    /// A count (a `u32`) of items at least `each` bytes long: refused when the rest cannot
    /// hold them, so a garbled count never allocates much.
    pub(crate) fn count(&mut self, each: usize) -> Result<usize, &'static str> {
        let n = self.u32()? as usize;
        if n.saturating_mul(each) > self.remaining() {
            return Err("count larger than the record");
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::Cursor;

    #[test]
    fn reads_are_big_endian_and_bounded() {
        let buf = [1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 2, b'h', b'i', 0, 0, 0, 9];
        let mut c = Cursor::new(&buf);
        assert_eq!(c.u8(), Ok(1));
        assert_eq!(c.u16(), Ok(2));
        assert_eq!(c.u32(), Ok(3));
        assert_eq!(c.string32().as_deref(), Ok("hi"));
        assert_eq!(c.count(1), Err("count larger than the record"));
        assert_eq!(c.u8(), Err("truncated"));
        assert_eq!(c.rest(), &[] as &[u8]);
    }
}
