//! Deterministic content and token counts, shared by the server and by tests that compute
//! what a success must look like and what it must cost.

use serde_json::Value;

use crate::config::Behavior;

/// Content chunks when a behaviour sets neither `chunks` nor `text`.
pub const DEFAULT_CHUNKS: usize = 8;

const VOCABULARY: [&str; 11] = [
    "says",
    "hello",
    "from",
    "a",
    "simulated",
    "provider",
    "with",
    "a",
    "steady",
    "stream",
    "of",
];

/// The prompt token count the sim reports for a request body: for chat, the sum over messages
/// of `ceil(chars(content) / 4) + 3` (string content, or the text of its text parts); for
/// completions `ceil(chars(prompt) / 4)`; for embeddings `ceil(chars(input) / 4)` per input.
/// Token-array inputs count one per token.
pub fn prompt_tokens(body: &Value) -> u64 {
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        return messages
            .iter()
            .map(|message| quarter(content_chars(message.get("content"))) + 3)
            .sum();
    }
    if let Some(prompt) = body.get("prompt") {
        return input_tokens(prompt);
    }
    body.get("input").map_or(0, input_tokens)
}

/// The exact content a success of `b` produces on a sim named `config_name`: the chunks
/// concatenated, `""` for `empty`. For a `tool_call` behaviour, the function's arguments.
pub fn expected_text(config_name: &str, b: &Behavior) -> String {
    if b.tool_call && !b.empty {
        tool_arguments(&content_chunks(config_name, b)).concat()
    } else {
        content_chunks(config_name, b).concat()
    }
}

/// What a success of `b` produces as the continuation of an answer that already reads
/// `prefill` (an assistant prefill): the rest of [`expected_text`] when `prefill` is a prefix
/// of it, else the whole of it. Tool-call answers are never continued.
pub fn continuation_text(config_name: &str, b: &Behavior, prefill: &str) -> String {
    if b.tool_call && !b.empty {
        return expected_text(config_name, b);
    }
    continue_after(content_chunks(config_name, b), prefill).concat()
}

/// The chunks still to send after `prefill`: when `prefill` is a prefix of the chunks'
/// concatenation, the chunks after it (the first one cut where `prefill` ends, so it may be
/// a partial word); otherwise all of them.
pub(crate) fn continue_after(chunks: Vec<String>, prefill: &str) -> Vec<String> {
    let mut rest = prefill;
    for (i, chunk) in chunks.iter().enumerate() {
        if rest.is_empty() {
            return chunks[i..].to_vec();
        }
        if rest.len() >= chunk.len() {
            match rest.strip_prefix(chunk.as_str()) {
                Some(after) => rest = after,
                None => return chunks,
            }
        } else {
            return match chunk.strip_prefix(rest) {
                Some(tail) => std::iter::once(tail.to_owned())
                    .chain(chunks[i + 1..].iter().cloned())
                    .collect(),
                None => chunks,
            };
        }
    }
    if rest.is_empty() { Vec::new() } else { chunks }
}

/// The content chunks of a success, in order.
pub(crate) fn content_chunks(config_name: &str, b: &Behavior) -> Vec<String> {
    if b.empty {
        return Vec::new();
    }
    if let Some(text) = &b.text {
        return text.split_inclusive(' ').map(str::to_owned).collect();
    }
    let first = if config_name.is_empty() {
        "sim"
    } else {
        config_name
    };
    (0..b.chunks.unwrap_or(DEFAULT_CHUNKS))
        .map(|i| match i {
            0 => format!("{first} "),
            _ => format!("{} ", VOCABULARY[(i - 1) % VOCABULARY.len()]),
        })
        .collect()
}

/// Splits a tool call's arguments, the JSON object `{"text": <content>}`, into one fragment
/// per content chunk, so that fragments count like content chunks do.
pub(crate) fn tool_arguments(chunks: &[String]) -> Vec<String> {
    let last = chunks.len().saturating_sub(1);
    if chunks.is_empty() {
        return vec!["{\"text\":\"\"}".to_owned()];
    }
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let quoted = Value::String(chunk.clone()).to_string();
            // JSON string escaping is per character, so escaped pieces concatenate into the
            // escaped whole.
            let inner = &quoted[1..quoted.len() - 1];
            let head = if i == 0 { "{\"text\":\"" } else { "" };
            let tail = if i == last { "\"}" } else { "" };
            format!("{head}{inner}{tail}")
        })
        .collect()
}

fn quarter(chars: u64) -> u64 {
    chars.div_ceil(4)
}

fn chars(text: &str) -> u64 {
    text.chars().count() as u64
}

fn content_chars(content: Option<&Value>) -> u64 {
    match content {
        Some(Value::String(text)) => chars(text),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part {
                Value::String(text) => chars(text),
                _ => part.get("text").and_then(Value::as_str).map_or(0, chars),
            })
            .sum(),
        _ => 0,
    }
}

fn input_tokens(input: &Value) -> u64 {
    match input {
        Value::String(text) => quarter(chars(text)),
        Value::Number(_) => 1,
        Value::Array(items) if items.iter().all(Value::is_number) => items.len() as u64,
        Value::Array(items) => items.iter().map(input_tokens).sum(),
        _ => 0,
    }
}

/// Standard base64 with padding, for `encoding_format: "base64"` embeddings (the `openai`
/// Python SDK asks for it by default).
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn chat_prompt_tokens_count_messages_and_text_parts() {
        let body = json!({"messages": [
            {"role": "system", "content": "abcde"},
            {"role": "user", "content": [
                {"type": "text", "text": "abcd"},
                {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                {"type": "text", "text": "é"}
            ]},
            {"role": "assistant", "content": null, "tool_calls": []}
        ]});
        // ceil(5/4)+3 + ceil(5/4)+3 + 0+3
        assert_eq!(prompt_tokens(&body), 5 + 5 + 3);
        assert_eq!(prompt_tokens(&json!({"messages": []})), 0);
    }

    #[test]
    fn completion_and_embedding_prompt_tokens() {
        assert_eq!(prompt_tokens(&json!({"prompt": "123456789"})), 3);
        assert_eq!(prompt_tokens(&json!({"prompt": ["1234", "12345"]})), 3);
        assert_eq!(prompt_tokens(&json!({"input": "ab"})), 1);
        assert_eq!(prompt_tokens(&json!({"input": ["ab", "abcdefgh", ""]})), 3);
        assert_eq!(prompt_tokens(&json!({"input": [1, 2, 3]})), 3);
        assert_eq!(prompt_tokens(&json!({"input": [[1, 2], [3]]})), 3);
        assert_eq!(prompt_tokens(&json!({"model": "m"})), 0);
        assert_eq!(prompt_tokens(&Value::Null), 0);
    }

    #[test]
    fn generated_words_start_with_the_name() {
        let chunks = content_chunks("alpha", &Behavior::ok().chunks(3));
        assert_eq!(chunks, vec!["alpha ", "says ", "hello "]);
        assert_eq!(content_chunks("", &Behavior::ok().chunks(1)), vec!["sim "]);
        assert_eq!(
            content_chunks("alpha", &Behavior::ok()).len(),
            DEFAULT_CHUNKS
        );
        assert_eq!(
            content_chunks("alpha", &Behavior::ok().chunks(30)).len(),
            30
        );
        assert_eq!(
            expected_text("alpha", &Behavior::ok().chunks(3)),
            "alpha says hello "
        );
    }

    #[test]
    fn text_overrides_words_and_stays_exact() {
        let b = Behavior::ok().text("The answer  is 4");
        assert_eq!(
            content_chunks("x", &b),
            vec!["The ", "answer ", " ", "is ", "4"]
        );
        assert_eq!(expected_text("x", &b), "The answer  is 4");
        assert_eq!(expected_text("x", &b.clone().empty()), "");
        assert!(content_chunks("x", &Behavior::ok().chunks(4).empty()).is_empty());
    }

    #[test]
    fn tool_arguments_concatenate_to_valid_json() {
        let b = Behavior::ok().text("say \"hi\"\n now").tool_call();
        let fragments = tool_arguments(&content_chunks("x", &b));
        assert_eq!(fragments.len(), 3);
        let args = expected_text("x", &b);
        assert_eq!(args, fragments.concat());
        let parsed: Value = serde_json::from_str(&args).unwrap();
        assert_eq!(parsed, json!({"text": "say \"hi\"\n now"}));
        let none: Value = serde_json::from_str(&tool_arguments(&[]).concat()).unwrap();
        assert_eq!(none, json!({"text": ""}));
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn continuation_after_a_prefix_of_the_answer() {
        let b = Behavior::ok().chunks(4);
        let full = expected_text("alpha", &b);
        assert_eq!(full, "alpha says hello from ");
        let chunks = || content_chunks("alpha", &b);
        // On a chunk boundary: the following chunks, whole.
        assert_eq!(
            continue_after(chunks(), "alpha says "),
            vec!["hello ", "from "]
        );
        // Mid-word: the first chunk is the rest of that word.
        assert_eq!(
            continue_after(chunks(), "alpha says hel"),
            vec!["lo ", "from "]
        );
        assert_eq!(
            continue_after(chunks(), "alp"),
            vec!["ha ", "says ", "hello ", "from "]
        );
        // Empty prefill: everything; the whole answer: nothing.
        assert_eq!(continue_after(chunks(), ""), chunks());
        assert!(continue_after(chunks(), &full).is_empty());
        // Not a prefix (or longer than the answer): the normal answer.
        assert_eq!(continue_after(chunks(), "alpha sings"), chunks());
        assert_eq!(continue_after(chunks(), "beta"), chunks());
        assert_eq!(
            continue_after(chunks(), &format!("{full}and more")),
            chunks()
        );
        assert_eq!(continuation_text("alpha", &b, "alpha says hel"), "lo from ");
        assert_eq!(continuation_text("alpha", &b, "nope"), full);
    }

    #[test]
    fn continuation_respects_multibyte_text_and_skips_tool_calls() {
        let b = Behavior::ok().text("caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e");
        assert_eq!(
            continue_after(content_chunks("x", &b), "caf\u{e9} cr\u{e8}"),
            vec!["me ", "br\u{fb}l\u{e9}e"]
        );
        let tool = Behavior::ok().chunks(2).tool_call();
        assert_eq!(
            continuation_text("t", &tool, "{\"text\""),
            expected_text("t", &tool)
        );
    }
}
