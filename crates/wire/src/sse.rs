//! Incremental server-sent-events decoder (WHATWG "interpreting an event stream"), fed
//! arbitrary chunk boundaries, with a hard cap on how much one line may buffer.

use bytes::{Buf, Bytes, BytesMut};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, `None` when absent or empty (the spec's default `message`).
    pub event: Option<String>,
    /// All `data:` lines joined with `\n`.
    pub data: Bytes,
    /// The last event id seen so far in the stream (it persists across events, per spec).
    pub id: Option<String>,
}

/// Why decoding stopped. The decoder stays failed: every later call returns the same error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// A line, or the data of one event, grew beyond the cap.
    #[error("SSE line longer than {limit} bytes")]
    LineTooLong { limit: usize },
}

/// The data lines of the event being assembled. Nearly every event has one data line, which
/// is kept as a slice of the input without copying.
#[derive(Debug)]
enum Data {
    None,
    One(Bytes),
    Many(BytesMut),
}

/// Incremental SSE decoder: [`push`](Self::push) bytes as they arrive, then call
/// [`next_event`](Self::next_event) until it returns `Ok(None)`; at end of input call
/// [`finish`](Self::finish) until it returns `Ok(None)`.
///
/// At most one unterminated line (bounded by `max_line_bytes`) plus the last pushed chunk
/// is ever buffered, provided events are drained after each push.
#[derive(Debug)]
pub struct SseDecoder {
    buf: BytesMut,
    /// Prefix of `buf` already searched for a line end, so a long line that arrives in many
    /// small chunks is scanned once, not once per chunk.
    scanned: usize,
    max_line: usize,
    bom_pending: bool,
    /// The last line ended in `\r` at the end of the buffer: a `\n` arriving next belongs to
    /// that line end.
    skip_lf: bool,
    data: Data,
    event: Option<String>,
    last_id: Option<String>,
    eof: bool,
    failed: bool,
}

impl SseDecoder {
    /// A decoder that fails on any line longer than `max_line_bytes` (line end excluded) and
    /// on any event whose joined data is longer than that.
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            scanned: 0,
            max_line: max_line_bytes,
            bom_pending: true,
            skip_lf: false,
            data: Data::None,
            event: None,
            last_id: None,
            eof: false,
            failed: false,
        }
    }

    /// Appends input bytes. Bytes pushed after [`finish`](Self::finish) are ignored.
    pub fn push(&mut self, chunk: &[u8]) {
        if !self.eof && !self.failed {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// The next complete event, or `Ok(None)` when more input is needed.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        if self.failed {
            return Err(self.too_long());
        }
        match self.decode() {
            Ok(ev) => Ok(ev),
            Err(e) => {
                self.failed = true;
                self.buf = BytesMut::new();
                self.data = Data::None;
                Err(e)
            }
        }
    }

    /// Marks the end of input and returns the next remaining event: complete ones first,
    /// then the unterminated last line, then an event that had data lines but no closing
    /// blank line (the spec discards it; a stream cut before its last blank line still
    /// delivers its last chunk this way). Call until it returns `Ok(None)`.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, SseError> {
        self.eof = true;
        self.next_event()
    }

    fn too_long(&self) -> SseError {
        SseError::LineTooLong {
            limit: self.max_line,
        }
    }

    fn decode(&mut self) -> Result<Option<SseEvent>, SseError> {
        while let Some(line) = self.next_line()? {
            if let Some(ev) = self.process_line(line)? {
                return Ok(Some(ev));
            }
        }
        if self.eof && !matches!(self.data, Data::None) {
            return Ok(Some(self.dispatch()));
        }
        Ok(None)
    }

    fn next_line(&mut self) -> Result<Option<Bytes>, SseError> {
        if self.skip_lf {
            match self.buf.first() {
                None => return Ok(None),
                Some(b'\n') => self.buf.advance(1),
                Some(_) => {}
            }
            self.skip_lf = false;
        }
        if self.bom_pending {
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) && !self.eof {
                return Ok(None);
            }
            if self.buf.starts_with(BOM) {
                self.buf.advance(BOM.len());
            }
            self.bom_pending = false;
        }
        match memchr::memchr2(b'\n', b'\r', &self.buf[self.scanned..]) {
            Some(i) => {
                let end = self.scanned + i;
                if end > self.max_line {
                    return Err(self.too_long());
                }
                let line = self.buf.split_to(end).freeze();
                let cr = self.buf[0] == b'\r';
                self.buf.advance(1);
                if cr {
                    match self.buf.first() {
                        Some(b'\n') => self.buf.advance(1),
                        Some(_) => {}
                        None => self.skip_lf = true,
                    }
                }
                self.scanned = 0;
                Ok(Some(line))
            }
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max_line {
                    return Err(self.too_long());
                }
                if self.eof && !self.buf.is_empty() {
                    self.scanned = 0;
                    return Ok(Some(self.buf.split().freeze()));
                }
                Ok(None)
            }
        }
    }

    fn process_line(&mut self, line: Bytes) -> Result<Option<SseEvent>, SseError> {
        if line.is_empty() {
            if matches!(self.data, Data::None) {
                // An event without data lines is not dispatched, and its `event:` is forgotten.
                self.event = None;
                return Ok(None);
            }
            return Ok(Some(self.dispatch()));
        }
        if line[0] == b':' {
            return Ok(None);
        }
        let (name, value) = match memchr::memchr(b':', &line) {
            Some(c) => {
                let skip = if line.get(c + 1) == Some(&b' ') { 2 } else { 1 };
                (line.slice(..c), line.slice(c + skip..))
            }
            None => (line.clone(), Bytes::new()),
        };
        match &name[..] {
            b"data" => self.append_data(value)?,
            b"event" => {
                self.event =
                    (!value.is_empty()).then(|| String::from_utf8_lossy(&value).into_owned());
            }
            // An id holding NUL is ignored, per spec.
            b"id" if !value.contains(&0) => {
                self.last_id =
                    (!value.is_empty()).then(|| String::from_utf8_lossy(&value).into_owned());
            }
            // `retry` only matters to a reconnecting client; unknown fields are ignored.
            _ => {}
        }
        Ok(None)
    }

    fn append_data(&mut self, value: Bytes) -> Result<(), SseError> {
        let len = match &self.data {
            Data::None => 0,
            Data::One(b) => b.len() + 1,
            Data::Many(b) => b.len() + 1,
        } + value.len();
        if len > self.max_line {
            return Err(self.too_long());
        }
        self.data = match std::mem::replace(&mut self.data, Data::None) {
            Data::None => Data::One(value),
            Data::One(first) => {
                let mut joined = BytesMut::with_capacity(len);
                joined.extend_from_slice(&first);
                joined.extend_from_slice(b"\n");
                joined.extend_from_slice(&value);
                Data::Many(joined)
            }
            Data::Many(mut joined) => {
                joined.extend_from_slice(b"\n");
                joined.extend_from_slice(&value);
                Data::Many(joined)
            }
        };
        Ok(())
    }

    fn dispatch(&mut self) -> SseEvent {
        let data = match std::mem::replace(&mut self.data, Data::None) {
            Data::None => Bytes::new(),
            Data::One(b) => b,
            Data::Many(b) => b.freeze(),
        };
        SseEvent {
            event: self.event.take(),
            data,
            id: self.last_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn drain(dec: &mut SseDecoder, out: &mut Vec<SseEvent>) {
        while let Some(ev) = dec.next_event().unwrap() {
            out.push(ev);
        }
    }

    fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<SseEvent> {
        let mut dec = SseDecoder::new(1024);
        let mut out = Vec::new();
        for c in chunks {
            dec.push(c);
            drain(&mut dec, &mut out);
        }
        while let Some(ev) = dec.finish().unwrap() {
            out.push(ev);
        }
        out
    }

    fn decode_whole(input: &[u8]) -> Vec<SseEvent> {
        decode_chunks([input])
    }

    fn decode_bytewise(input: &[u8]) -> Vec<SseEvent> {
        decode_chunks(input.chunks(1))
    }

    fn data(evs: &[SseEvent]) -> Vec<&[u8]> {
        evs.iter().map(|e| &e.data[..]).collect()
    }

    const MIXED: &[u8] = b"\xEF\xBB\xBF: hello\r\nevent: delta\rdata: {\"a\":1}\r\n\r\
id: 7\ndata:first\ndata:  second\n\n\
data\n\n\
data: [DONE]\r\r";

    #[test]
    fn one_byte_at_a_time_equals_whole() {
        let whole = decode_whole(MIXED);
        let bytewise = decode_bytewise(MIXED);
        assert_eq!(whole, bytewise);
        assert_eq!(
            data(&whole),
            [&b"{\"a\":1}"[..], b"first\n second", b"", b"[DONE]"]
        );
        assert_eq!(whole[0].event.as_deref(), Some("delta"));
        assert_eq!(whole[0].id, None);
        assert_eq!(whole[1].event, None);
        assert_eq!(whole[1].id.as_deref(), Some("7"));
        // The last event id persists.
        assert_eq!(whole[3].id.as_deref(), Some("7"));
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let whole = decode_whole(MIXED);
        for i in 0..=MIXED.len() {
            let (a, b) = MIXED.split_at(i);
            assert_eq!(decode_chunks([a, b]), whole, "split at {i}");
        }
    }

    #[test]
    fn line_endings_lf_crlf_cr() {
        for input in [
            &b"data: x\n\ndata: y\n\n"[..],
            b"data: x\r\n\r\ndata: y\r\n\r\n",
            b"data: x\r\rdata: y\r\r",
            b"data: x\r\n\rdata: y\n\r\n",
        ] {
            assert_eq!(data(&decode_whole(input)), [b"x", b"y"], "{input:?}");
            assert_eq!(data(&decode_bytewise(input)), [b"x", b"y"], "{input:?}");
        }
    }

    #[test]
    fn cr_at_chunk_end_then_lf_is_one_line_end() {
        // Were the \n taken as a second line end, "x" would be dispatched at once and "y"
        // would be its own event.
        let evs = decode_chunks([&b"data: x\r"[..], b"\ndata: y\r", b"\n\r\n"]);
        assert_eq!(data(&evs), [&b"x\ny"[..]]);
    }

    #[test]
    fn bom_only_at_start() {
        assert_eq!(data(&decode_whole(b"\xEF\xBB\xBFdata: a\n\n")), [b"a"]);
        // A BOM split across chunks is still skipped.
        let evs = decode_chunks([&b"\xEF"[..], b"\xBB", b"\xBFdata: a\n\n"]);
        assert_eq!(data(&evs), [b"a"]);
        // Later, the same bytes are content (here: an unknown field, so nothing).
        assert_eq!(
            data(&decode_whole(b"data: a\n\n\xEF\xBB\xBFdata: b\n\n")),
            [b"a"]
        );
    }

    #[test]
    fn comments_and_eventless_blocks_dispatch_nothing() {
        let evs = decode_whole(b": keep-alive\n\n:\n\nevent: ping\n\nretry: 100\n\ndata: z\n\n");
        assert_eq!(data(&evs), [b"z"]);
        // `event:` of a block with no data does not leak into the next event.
        assert_eq!(evs[0].event, None);
    }

    #[test]
    fn field_value_rules() {
        let evs = decode_whole(b"data:no-space\n\ndata:  two-spaces\n\ndata\n\ndata:\n\n");
        assert_eq!(data(&evs), [&b"no-space"[..], b" two-spaces", b"", b""]);
        let evs = decode_whole(b"data: a\ndata\ndata: b\n\n");
        assert_eq!(data(&evs), [&b"a\n\nb"[..]]);
        // An id containing NUL is ignored.
        let evs = decode_whole(b"id: 1\n\nid: a\0b\ndata: x\n\n");
        assert_eq!(evs[0].id.as_deref(), Some("1"));
    }

    #[test]
    fn finish_flushes_an_unterminated_event() {
        assert_eq!(
            data(&decode_whole(b"data: a\n\ndata: last")),
            [&b"a"[..], b"last"]
        );
        assert_eq!(data(&decode_whole(b"data: last\n")), [b"last"]);
        assert_eq!(data(&decode_whole(b"data: last\r")), [b"last"]);
        assert!(decode_whole(b"event: x\n").is_empty());
        assert!(decode_whole(b"").is_empty());
        // A lone partial BOM at EOF is content, not a hang.
        assert!(decode_whole(b"\xEF").is_empty());
    }

    #[test]
    fn next_event_waits_for_the_blank_line() {
        let mut dec = SseDecoder::new(64);
        dec.push(b"data: a\n");
        assert_eq!(dec.next_event().unwrap(), None);
        dec.push(b"\n");
        assert_eq!(
            dec.next_event().unwrap().map(|e| e.data),
            Some(Bytes::from("a"))
        );
        assert_eq!(dec.next_event().unwrap(), None);
        assert_eq!(dec.finish().unwrap(), None);
        dec.push(b"data: ignored after eof\n\n");
        assert_eq!(dec.next_event().unwrap(), None);
    }

    #[test]
    fn line_cap_is_enforced_without_a_terminator() {
        let mut dec = SseDecoder::new(16);
        dec.push(b"data: 0123456789");
        assert_eq!(dec.next_event().unwrap(), None);
        dec.push(b"abc");
        assert_eq!(dec.next_event(), Err(SseError::LineTooLong { limit: 16 }));
        // Sticky.
        dec.push(b"\n\n");
        assert_eq!(dec.next_event(), Err(SseError::LineTooLong { limit: 16 }));
        assert_eq!(dec.finish(), Err(SseError::LineTooLong { limit: 16 }));
    }

    #[test]
    fn line_cap_boundaries() {
        // Exactly at the cap is fine, one more byte is not.
        let mut dec = SseDecoder::new(8);
        dec.push(b"data: ab\n\n");
        assert_eq!(
            dec.next_event().unwrap().map(|e| e.data),
            Some(Bytes::from("ab"))
        );
        let mut dec = SseDecoder::new(8);
        dec.push(b"data: abc\n\n");
        assert!(dec.next_event().is_err());
        // Many short data lines cannot build an unbounded event either.
        let mut dec = SseDecoder::new(8);
        dec.push(b"data:abc\ndata:def\n");
        assert_eq!(dec.next_event().unwrap(), None);
        dec.push(b"data:ghi\n");
        assert_eq!(dec.next_event(), Err(SseError::LineTooLong { limit: 8 }));
    }

    #[test]
    fn long_line_in_small_chunks_is_found() {
        let mut dec = SseDecoder::new(1 << 20);
        let payload = vec![b'x'; 100_000];
        dec.push(b"data: ");
        for c in payload.chunks(7) {
            dec.push(c);
            assert_eq!(dec.next_event().unwrap(), None);
        }
        dec.push(b"\n\n");
        let ev = dec.next_event().unwrap().unwrap();
        assert_eq!(ev.data.len(), 100_000);
    }

    #[test]
    fn invalid_utf8_in_names_is_replaced_and_data_kept_raw() {
        let evs = decode_whole(b"event: a\xFFb\ndata: \xFE\n\n");
        assert_eq!(evs[0].event.as_deref(), Some("a\u{FFFD}b"));
        assert_eq!(&evs[0].data[..], b"\xFE");
    }
}
