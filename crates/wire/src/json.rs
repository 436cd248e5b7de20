//! Raw JSON walking: members of an object and elements of an array as borrowed
//! [`RawValue`]s, so that values Switchyard does not interpret are copied, never re-encoded.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess};
use serde_json::value::RawValue;

/// One member of a JSON object: its key exactly as written (quotes included), the key
/// decoded, and the value exactly as written.
#[derive(Debug)]
pub(crate) struct Member<'a> {
    pub key_raw: &'a str,
    pub key: Cow<'a, str>,
    pub value: &'a RawValue,
}

/// The first byte of a JSON text after leading whitespace.
pub(crate) fn first_byte(text: &str) -> Option<u8> {
    text.bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

pub(crate) fn is_object(v: &RawValue) -> bool {
    first_byte(v.get()) == Some(b'{')
}

pub(crate) fn is_array(v: &RawValue) -> bool {
    first_byte(v.get()) == Some(b'[')
}

pub(crate) fn is_string(v: &RawValue) -> bool {
    first_byte(v.get()) == Some(b'"')
}

pub(crate) fn is_null(v: &RawValue) -> bool {
    v.get() == "null"
}

/// A string value with at least one character (`""` is the only empty one, since a raw
/// value carries no surrounding whitespace).
pub(crate) fn is_nonempty_string(v: &RawValue) -> bool {
    is_string(v) && v.get().len() > 2
}

/// An array with at least one element.
pub(crate) fn is_nonempty_array(v: &RawValue) -> bool {
    let t = v.get();
    is_array(v) && first_byte(&t[1..]) != Some(b']')
}

/// Where `inner` (a sub-slice of `outer`) sits inside `outer`.
pub(crate) fn range_in(outer: &str, inner: &str) -> Range<usize> {
    let start = (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize);
    start..start + inner.len()
}

/// Decodes a raw JSON string (quotes included) without allocating when it has no escapes.
pub(crate) fn decode_str(raw: &str) -> Result<Cow<'_, str>, serde_json::Error> {
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => Ok(Cow::Borrowed(inner)),
        _ => serde_json::from_str::<String>(raw).map(Cow::Owned),
    }
}

/// Calls `f` for each member of the object `text`, in order (duplicates included).
///
/// Returns `Ok(false)` without calling `f` when `text` is valid JSON but not an object, and
/// an error when it is not valid JSON (with serde's line and column).
pub(crate) fn for_each_member<'a, F>(text: &'a str, mut f: F) -> Result<bool, serde_json::Error>
where
    F: FnMut(Member<'a>),
{
    if first_byte(text) != Some(b'{') {
        serde_json::from_str::<IgnoredAny>(text)?;
        return Ok(false);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    (&mut de).deserialize_map(MemberVisitor(&mut f))?;
    de.end()?;
    Ok(true)
}

/// The members of the object `text` with later duplicates replacing earlier ones (as
/// serde_json does when it builds a map), each kept at the position of its last occurrence.
/// `Ok(None)` when `text` is valid JSON but not an object.
pub(crate) fn object_members(text: &str) -> Result<Option<Vec<Member<'_>>>, serde_json::Error> {
    let mut members = Vec::new();
    if !for_each_member(text, |m| members.push(m))? {
        return Ok(None);
    }
    dedup_last_wins(&mut members);
    Ok(Some(members))
}

fn dedup_last_wins(members: &mut Vec<Member<'_>>) {
    // Top-level objects are small; a quadratic scan beats hashing until they are not, and a
    // hostile body with a million keys must not make parsing quadratic.
    const LINEAR_MAX: usize = 32;
    let n = members.len();
    if n <= LINEAR_MAX && !(0..n).any(|i| members[i + 1..].iter().any(|m| m.key == members[i].key))
    {
        // The usual case, checked without allocating.
        return;
    }
    let mut keep = vec![true; n];
    let mut any_dup = false;
    if n <= LINEAR_MAX {
        for i in 0..n {
            if members[i + 1..].iter().any(|m| m.key == members[i].key) {
                keep[i] = false;
                any_dup = true;
            }
        }
    } else {
        let mut seen = std::collections::HashSet::with_capacity(n);
        for i in (0..n).rev() {
            if !seen.insert(members[i].key.clone()) {
                keep[i] = false;
                any_dup = true;
            }
        }
    }
    if any_dup {
        let mut i = 0;
        members.retain(|_| {
            let k = keep[i];
            i += 1;
            k
        });
    }
}

/// Calls `f` for each element of the array `text`. `Ok(false)` when `text` is valid JSON but
/// not an array.
pub(crate) fn for_each_element<'a, F>(text: &'a str, mut f: F) -> Result<bool, serde_json::Error>
where
    F: FnMut(&'a RawValue),
{
    if first_byte(text) != Some(b'[') {
        serde_json::from_str::<IgnoredAny>(text)?;
        return Ok(false);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    (&mut de).deserialize_seq(ElementVisitor(&mut f))?;
    de.end()?;
    Ok(true)
}

struct MemberVisitor<'f, F>(&'f mut F);

impl<'de, F: FnMut(Member<'de>)> de::Visitor<'de> for MemberVisitor<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // serde_json hands a map key to a RawValue as the quoted string, so the key's exact
        // bytes are known too, not only its decoded text.
        while let Some(key_raw) = map.next_key_seed(RawSeed)? {
            let value = map.next_value_seed(RawSeed)?;
            let key = decode_str(key_raw.get()).map_err(de::Error::custom)?;
            (self.0)(Member {
                key_raw: key_raw.get(),
                key,
                value,
            });
        }
        Ok(())
    }
}

struct ElementVisitor<'f, F>(&'f mut F);

impl<'de, F: FnMut(&'de RawValue)> de::Visitor<'de> for ElementVisitor<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(v) = seq.next_element_seed(RawSeed)? {
            (self.0)(v);
        }
        Ok(())
    }
}

struct RawSeed;

impl<'de> DeserializeSeed<'de> for RawSeed {
    type Value = &'de RawValue;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<&'de RawValue, D::Error> {
        serde::Deserialize::deserialize(d)
    }
}

/// Appends `s` as a JSON string literal.
pub(crate) fn push_str_literal(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends a USD amount as a JSON number (never `NaN` or infinite, which JSON cannot carry).
pub(crate) fn push_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        // `Display` for f64 prints the shortest round-tripping decimal and never an exponent,
        // which is always a valid JSON number.
        out.extend_from_slice(v.to_string().as_bytes());
    } else {
        out.push(b'0');
    }
}

/// Builds an object member by member, writing separators.
#[derive(Debug)]
pub(crate) struct ObjectWriter<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> ObjectWriter<'o> {
    pub fn open(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    fn sep(&mut self) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
    }

    /// A member copied as written.
    pub fn raw(&mut self, key_raw: &[u8], value: &[u8]) {
        self.sep();
        self.out.extend_from_slice(key_raw);
        self.out.push(b':');
        self.out.extend_from_slice(value);
    }

    /// Starts a member whose key is written as given (quotes included) and returns the
    /// buffer to write its value into.
    pub fn raw_key(&mut self, key_raw: &[u8]) -> &mut Vec<u8> {
        self.sep();
        self.out.extend_from_slice(key_raw);
        self.out.push(b':');
        self.out
    }

    /// Starts a member named `key` and returns the buffer to write its value into.
    pub fn key(&mut self, key: &str) -> &mut Vec<u8> {
        self.sep();
        push_str_literal(self.out, key);
        self.out.push(b':');
        self.out
    }

    pub fn str(&mut self, key: &str, value: &str) {
        push_str_literal(self.key(key), value);
    }

    pub fn close(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn members_keep_raw_keys_and_values() {
        let text = r#" { "a" : [1, 2] ,"b\u0063":"x\"y", "n":null } "#;
        let m = object_members(text).unwrap().unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].key_raw, r#""a""#);
        assert_eq!(m[0].value.get(), "[1, 2]");
        assert_eq!(m[1].key_raw, r#""b\u0063""#);
        assert_eq!(m[1].key, "bc");
        assert!(matches!(m[1].key, Cow::Owned(_)));
        assert_eq!(m[1].value.get(), r#""x\"y""#);
        assert!(is_null(m[2].value));
        let r = range_in(text, m[0].value.get());
        assert_eq!(&text[r], "[1, 2]");
    }

    #[test]
    fn duplicates_keep_last_at_its_position() {
        let m = object_members(r#"{"a":1,"b":2,"a":3}"#).unwrap().unwrap();
        let got: Vec<_> = m.iter().map(|m| (m.key.as_ref(), m.value.get())).collect();
        assert_eq!(got, [("b", "2"), ("a", "3")]);
    }

    #[test]
    fn duplicates_in_large_objects_use_the_hash_path() {
        let mut text = String::from("{");
        for i in 0..100 {
            text.push_str(&format!("\"k{}\":{i},", i % 40));
        }
        text.push_str("\"end\":0}");
        let m = object_members(&text).unwrap().unwrap();
        assert_eq!(m.len(), 41);
        let k0 = m.iter().find(|m| m.key == "k0").unwrap();
        assert_eq!(k0.value.get(), "80");
    }

    #[test]
    fn non_objects_and_invalid_json_are_told_apart() {
        assert!(object_members("[1]").unwrap().is_none());
        assert!(object_members("\"s\"").unwrap().is_none());
        assert!(object_members("{").is_err());
        assert!(object_members("[").is_err());
        assert!(object_members("{} x").is_err());
        assert!(object_members("").is_err());
    }

    #[test]
    fn raw_value_predicates() {
        let v = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        assert!(is_nonempty_array(&v("[ 1 ]")));
        assert!(!is_nonempty_array(&v("[ ]")));
        assert!(!is_nonempty_array(&v("{}")));
        assert!(is_nonempty_string(&v("\"a\"")));
        assert!(!is_nonempty_string(&v("\"\"")));
        assert!(is_null(&v("null")));
        assert!(is_object(&v(" {}")));
    }

    #[test]
    fn elements_in_order() {
        let mut got = Vec::new();
        assert!(for_each_element(r#"[ {"a":1}, 2 ,"x"]"#, |v| got.push(v.get())).unwrap());
        assert_eq!(got, [r#"{"a":1}"#, "2", r#""x""#]);
        assert!(!for_each_element("{}", |_| ()).unwrap());
    }

    #[test]
    fn string_literals_escape_what_json_requires() {
        let mut out = Vec::new();
        push_str_literal(&mut out, "a\"b\\c\n\u{1}é");
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\u0001é\"");
        assert_eq!(
            serde_json::from_str::<String>(&s).unwrap(),
            "a\"b\\c\n\u{1}é"
        );
    }

    #[test]
    fn numbers_are_valid_json() {
        for v in [0.0, 1e-9, 0.0045, 12345.5, f64::NAN, f64::INFINITY] {
            let mut out = Vec::new();
            push_f64(&mut out, v);
            let back: f64 = serde_json::from_slice(&out).unwrap();
            if v.is_finite() {
                assert_eq!(back, v);
            } else {
                assert_eq!(back, 0.0);
            }
        }
    }
}
