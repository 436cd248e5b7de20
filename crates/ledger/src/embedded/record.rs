//! The log's and the snapshot's on-disk records.
//!
//! One record per line: eight hex digits of the CRC-32 (IEEE) of the payload, a space, the
//! payload as compact JSON, `\n`. JSON keeps the file greppable during an incident and never
//! contains a raw newline (strings escape it), so a line is a record. The checksum finds torn
//! and garbled lines: a crash mid-`write(2)` leaves a last line without its `\n`, and a power
//! loss can leave a block of zeros or stale bytes that happens to end in one.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A log record. Amounts are nano-dollars, times Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub(crate) enum Record<'a> {
    /// First line of every log file: which generation it is (see `mod.rs`, compaction).
    #[serde(rename = "log")]
    Header { generation: u64, t: u64 },
    /// Reservation `id` of `a` on each window `(key, ttl_secs)` of `c`.
    #[serde(rename = "r")]
    Reserve {
        t: u64,
        id: Cow<'a, str>,
        a: i64,
        c: Vec<(Cow<'a, str>, u64)>,
    },
    /// Settlement of reservation `id` at `a`.
    #[serde(rename = "s")]
    Settle { t: u64, id: Cow<'a, str>, a: i64 },
}

/// The snapshot compaction writes: the state after every log with a lower generation.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    /// Logs of this generation and later come after the snapshot.
    pub(crate) generation: u64,
    pub(crate) t: u64,
    /// `(key, spent, reserved, expires_ms)`.
    pub(crate) windows: Vec<(Arc<str>, i64, i64, u64)>,
    /// `(id, amount, keys)` of reservations open when the snapshot was taken.
    pub(crate) open: Vec<(Arc<str>, i64, Vec<Arc<str>>)>,
    /// Recently settled ids, oldest first.
    pub(crate) settled: Vec<Arc<str>>,
}

/// Appends `value` as one framed line to `out`.
pub(crate) fn encode<T: Serialize>(value: &T, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let start = out.len();
    out.extend_from_slice(b"00000000 ");
    serde_json::to_writer(&mut *out, value)?;
    let crc = crc32(&out[start + 9..]);
    let hex = format!("{crc:08x}");
    out[start..start + 8].copy_from_slice(hex.as_bytes());
    out.push(b'\n');
    Ok(())
}

/// The payload of one line (without its `\n`) if its checksum holds.
pub(crate) fn unframe(line: &[u8]) -> Option<&[u8]> {
    if line.len() < 10 || line[8] != b' ' {
        return None;
    }
    let hex = std::str::from_utf8(&line[..8]).ok()?;
    let crc = u32::from_str_radix(hex, 16).ok()?;
    let payload = &line[9..];
    (crc32(payload) == crc).then_some(payload)
}

/// Splits `bytes` into complete lines (without `\n`) and the length of the complete prefix;
/// bytes after the last `\n` are a torn tail.
pub(crate) fn lines(bytes: &[u8]) -> (impl Iterator<Item = &[u8]>, usize) {
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let lines = bytes[..complete]
        .split_inclusive(|&b| b == b'\n')
        .map(|line| &line[..line.len() - 1]);
    (lines, complete)
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE 802.3, reflected), as zlib and PNG compute it.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_round_trip_through_a_line() {
        let record = Record::Reserve {
            t: 1_700_000_000_000,
            id: Cow::Borrowed("req\n\"1\"#0"),
            a: 123_456,
            c: vec![(Cow::Borrowed("team-a:daily:2026-11-21"), 3600)],
        };
        let mut out = Vec::new();
        encode(&record, &mut out).unwrap();
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        assert_eq!(out.last(), Some(&b'\n'));
        let payload = unframe(&out[..out.len() - 1]).unwrap();
        let back: Record<'_> = serde_json::from_slice(payload).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn unframe_rejects_damage() {
        let mut out = Vec::new();
        encode(
            &Record::Settle {
                t: 1,
                id: "x".into(),
                a: 5,
            },
            &mut out,
        )
        .unwrap();
        let line = &out[..out.len() - 1];
        assert!(unframe(line).is_some());
        assert!(unframe(&line[..line.len() - 1]).is_none(), "truncated");
        let mut flipped = line.to_vec();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x01;
        assert!(unframe(&flipped).is_none(), "bit flip");
        assert!(unframe(&[0u8; 40]).is_none(), "zeros");
        assert!(unframe(b"").is_none());
        assert!(unframe(b"zzzzzzzz {}").is_none());
    }

    #[test]
    fn lines_stop_at_the_last_newline() {
        let (lines_iter, complete) = lines(b"a\nbb\nccc");
        assert_eq!(lines_iter.collect::<Vec<_>>(), [&b"a"[..], &b"bb"[..]]);
        assert_eq!(complete, 5);
        let (lines_iter, complete) = lines(b"a\n\n");
        assert_eq!(lines_iter.collect::<Vec<_>>(), [&b"a"[..], &b""[..]]);
        assert_eq!(complete, 3);
        let (lines_iter, complete) = lines(b"torn");
        assert_eq!(lines_iter.count(), 0);
        assert_eq!(complete, 0);
    }
}
