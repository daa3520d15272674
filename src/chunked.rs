//! HTTP/1.1 chunked framing (RFC 9112 section 7.1): the size line in front of every
//! chunk the event-stream writers send.
//!
//! By hand because it runs once per write to every subscriber: `write!("{len:x}\r\n")`
//! goes through `core::fmt`, about 300 instructions a write, where this is about 65
//! (callgrind, `bench/instructions.sh`).

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Hex digits of the largest `usize`, plus the line end.
const CAPACITY: usize = 2 * std::mem::size_of::<usize>() + 2;

/// A chunk's size line: the length in lowercase hex, then CRLF.
#[derive(Debug, Clone, Copy)]
pub struct SizeLine {
    buf: [u8; CAPACITY],
    start: usize,
}

impl SizeLine {
    pub fn new(len: usize) -> Self {
        let mut buf = [0_u8; CAPACITY];
        buf[CAPACITY - 2..].copy_from_slice(b"\r\n");
        let mut start = CAPACITY - 2;
        let mut rest = len;
        loop {
            start -= 1;
            buf[start] = HEX[rest & 0xf];
            rest >>= 4;
            if rest == 0 {
                break;
            }
        }
        Self { buf, start }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn size_lines_are_lowercase_hex_and_crlf() {
        assert_eq!(SizeLine::new(0).as_bytes(), b"0\r\n");
        assert_eq!(SizeLine::new(0xa).as_bytes(), b"a\r\n");
        assert_eq!(SizeLine::new(65_536).as_bytes(), b"10000\r\n");
        assert_eq!(
            SizeLine::new(usize::MAX).as_bytes(),
            format!("{:x}\r\n", usize::MAX).as_bytes()
        );
    }

    proptest! {
        #[test]
        fn size_lines_match_the_formatter(len in any::<usize>()) {
            let (line, expected) = (SizeLine::new(len), format!("{len:x}\r\n"));
            prop_assert_eq!(line.as_bytes(), expected.as_bytes());
        }
    }
}
