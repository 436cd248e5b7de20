//! The client's view of a stream: split server-sent events as the bytes arrive, pull out each
//! chunk's text, and read the ticker's emission stamp from it.

use serde_json::Value;

/// Splits a byte stream into server-sent events (terminated by a blank line, `\n\n` or
/// `\r\n\r\n`), whatever the transport's framing.
#[derive(Debug, Default)]
pub struct Splitter {
    buf: Vec<u8>,
}

impl Splitter {
    /// Appends `bytes` and calls `each` with every event now complete, in order.
    pub fn push(&mut self, bytes: &[u8], mut each: impl FnMut(&[u8])) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some((end, sep)) = event_end(&self.buf[start..]) {
            each(&self.buf[start..start + end]);
            start += end + sep;
        }
        self.buf.drain(..start);
    }
}

/// The end of the first event in `buf` and the length of its terminator.
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some((i, 2));
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

/// The `data:` payload of an event (multi-line data joined with `\n`), `None` when it has none.
pub fn data(event: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(event).ok()?;
    let mut out: Option<String> = None;
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(rest) = line.strip_prefix("data:") {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            match out.as_mut() {
                Some(s) => {
                    s.push('\n');
                    s.push_str(rest);
                }
                None => out = Some(rest.to_owned()),
            }
        }
    }
    out
}

/// The generated text an event carries (`choices[0].delta.content` of a chat chunk, or
/// `choices[0].text` of a completion chunk); `None` for `[DONE]`, role, finish and usage
/// chunks, which carry no text.
pub fn content(event: &[u8]) -> Option<String> {
    let payload = data(event)?;
    if payload.trim() == "[DONE]" {
        return None;
    }
    let json: Value = serde_json::from_str(&payload).ok()?;
    let text = json
        .pointer("/choices/0/delta/content")
        .or_else(|| json.pointer("/choices/0/text"))?
        .as_str()?;
    (!text.is_empty()).then(|| text.to_owned())
}

/// The ticker's emission stamp in a chunk's text (`@<nanoseconds> `).
pub fn stamp_of(text: &str) -> Option<u64> {
    text.strip_prefix('@')?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn split_all(pieces: &[&[u8]]) -> Vec<String> {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        for p in pieces {
            s.push(p, |e| out.push(String::from_utf8_lossy(e).into_owned()));
        }
        out
    }

    #[test]
    fn events_split_across_and_within_frames() {
        let got = split_all(&[
            b"data: a\n\nda",
            b"ta: b\n",
            b"\ndata: c\r\n\r\ndata: d\n\n",
        ]);
        assert_eq!(got, ["data: a", "data: b", "data: c\r", "data: d"]);
        let mut s = Splitter::default();
        let mut n = 0;
        s.push(b"data: partial", |_| n += 1);
        assert_eq!(n, 0);
        s.push(b"\n\n", |e| assert_eq!(e, b"data: partial"));
    }

    #[test]
    fn content_of_chat_and_completion_chunks() {
        let chat = br#"data: {"choices":[{"index":0,"delta":{"content":"@123 "}}]}"#;
        assert_eq!(content(chat).as_deref(), Some("@123 "));
        let completion = br#"data: {"choices":[{"index":0,"text":"hi "}]}"#;
        assert_eq!(content(completion).as_deref(), Some("hi "));
        let role = br#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
        assert_eq!(content(role), None);
        let usage = br#"data: {"choices":[],"usage":{"prompt_tokens":3}}"#;
        assert_eq!(content(usage), None);
        assert_eq!(content(b"data: [DONE]"), None);
        assert_eq!(content(b": comment only"), None);
        assert_eq!(content(b"data: {not json"), None);
        assert_eq!(
            data(b"event: x\ndata: one\ndata:two").as_deref(),
            Some("one\ntwo")
        );
    }

    #[test]
    fn stamps() {
        assert_eq!(stamp_of("@123456789 "), Some(123_456_789));
        assert_eq!(stamp_of("@42"), Some(42));
        assert_eq!(stamp_of("hello "), None);
        assert_eq!(stamp_of("@x "), None);
    }
}
