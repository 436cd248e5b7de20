//! Rewriting OpenAI response objects for the caller: the served model and provider, the
//! upstream's model name in `metadata`, and `usage.cost`.

use bytes::Bytes;
use serde_json::value::RawValue;
use switchyard_core::{Pricing, Usage};

use crate::error::WireError;
use crate::json::{self, Member, ObjectWriter};
use crate::{Operation, Rewrite};

/// Whether an object is a whole response body or one streamed chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Body,
    Chunk,
}

pub(crate) fn malformed(detail: impl Into<String>) -> WireError {
    WireError::Malformed {
        detail: detail.into(),
    }
}

/// Rewrites a non-streaming OpenAI response body (chat completion, text completion or
/// embeddings) for the caller, and returns the usage it reports (cost from `rw.pricing`,
/// `estimated: false`), or `None` when it reports none.
///
/// `model` becomes `rw.model`, a top-level `provider` is added, `metadata.upstream_model`
/// is added unless the body already has a `metadata`, and `usage` gains `cost` (USD);
/// every other member is copied as written. A body holding an `error` object is returned
/// as [`WireError::UpstreamError`].
pub fn rewrite_response(
    op: Operation,
    body: &[u8],
    rw: &Rewrite,
) -> Result<(Bytes, Option<Usage>), WireError> {
    let text = std::str::from_utf8(body).map_err(|e| malformed(format!("invalid UTF-8: {e}")))?;
    let members = json::object_members(text)
        .map_err(|e| malformed(e.to_string()))?
        .ok_or_else(|| malformed("response is not a JSON object"))?;
    if let Some(err) = members
        .iter()
        .find(|m| m.key == "error" && !json::is_null(m.value))
    {
        return Err(upstream_error(err.value));
    }
    let mut out = Vec::with_capacity(body.len() + 96 + rw.upstream_model.len());
    let usage = rewrite_object(op, &members, rw, Shape::Body, &mut out);
    Ok((Bytes::from(out), usage))
}

/// Writes `members` as an object rewritten for the caller; returns the usage it carried.
pub(crate) fn rewrite_object(
    op: Operation,
    members: &[Member<'_>],
    rw: &Rewrite,
    shape: Shape,
    out: &mut Vec<u8>,
) -> Option<Usage> {
    let mut w = ObjectWriter::open(out);
    let mut usage = None;
    let mut has_model = false;
    let mut has_metadata = false;
    for m in members {
        match m.key.as_ref() {
            "model" => {
                w.str("model", &rw.model);
                w.str("provider", &rw.provider);
                has_model = true;
            }
            // Ours replaces any the upstream sent (an OpenRouter-compatible upstream names
            // its own provider there).
            "provider" => {}
            "metadata" if shape == Shape::Body && json::is_null(m.value) => {}
            "metadata" if shape == Shape::Body => {
                has_metadata = true;
                w.raw(m.key_raw.as_bytes(), m.value.get().as_bytes());
            }
            "usage" if json::is_object(m.value) => {
                usage = Some(write_usage(op, m.value.get(), &rw.pricing, w.key("usage")));
            }
            _ => w.raw(m.key_raw.as_bytes(), m.value.get().as_bytes()),
        }
    }
    if shape == Shape::Body {
        if !has_model {
            w.str("model", &rw.model);
            w.str("provider", &rw.provider);
        }
        if !has_metadata {
            let mut meta = ObjectWriter::open(w.key("metadata"));
            meta.str("upstream_model", &rw.upstream_model);
            meta.close();
        }
    }
    w.close();
    usage
}

/// Copies a usage object (raw JSON), replacing any `cost` with ours, and returns what it
/// reports.
pub(crate) fn write_usage(
    op: Operation,
    usage: &str,
    pricing: &Pricing,
    out: &mut Vec<u8>,
) -> Usage {
    let mut prompt = 0;
    let mut completion = 0;
    let mut w = ObjectWriter::open(out);
    let members = json::object_members(usage)
        .ok()
        .flatten()
        .unwrap_or_default();
    for m in &members {
        match m.key.as_ref() {
            "cost" => continue,
            "prompt_tokens" => prompt = token_count(m.value),
            "completion_tokens" if op != Operation::Embeddings => {
                completion = token_count(m.value);
            }
            _ => {}
        }
        w.raw(m.key_raw.as_bytes(), m.value.get().as_bytes());
    }
    let cost = pricing.cost(prompt, completion);
    json::push_f64(w.key("cost"), cost);
    w.close();
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        cost,
        estimated: false,
    }
}

/// A token count as reported; a provider writing `12.0` still means 12, and a missing or
/// nonsensical count is 0 rather than a failed response.
fn token_count(v: &RawValue) -> u64 {
    if let Ok(n) = serde_json::from_str::<u64>(v.get()) {
        return n;
    }
    match serde_json::from_str::<f64>(v.get()) {
        Ok(f) if f.is_finite() && f > 0.0 => f.round() as u64,
        _ => 0,
    }
}

/// An OpenAI (or OpenRouter) `error` member as a [`WireError`].
pub(crate) fn upstream_error(err: &RawValue) -> WireError {
    let mut status = None;
    let mut message = None;
    if json::is_string(err) {
        message = json::decode_str(err.get()).ok().map(|s| s.into_owned());
    } else if let Ok(Some(members)) = json::object_members(err.get()) {
        for m in &members {
            match m.key.as_ref() {
                "message" if json::is_string(m.value) => {
                    message = json::decode_str(m.value.get()).ok().map(|s| s.into_owned());
                }
                "code" => {
                    status = serde_json::from_str::<u16>(m.value.get())
                        .ok()
                        .filter(|s| (100..=599).contains(s));
                }
                _ => {}
            }
        }
    }
    WireError::UpstreamError {
        status,
        message: message.unwrap_or_else(|| err.get().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::{Value, json};
    use std::sync::Arc;

    pub(crate) fn rw(client_wants_usage: bool) -> Rewrite {
        Rewrite {
            model: Arc::from("fast-chat"),
            provider: Arc::from("acme"),
            upstream_model: Arc::from("gpt-4o-mini-2024-07-18"),
            pricing: Pricing {
                prompt: 0.15,
                completion: 0.6,
                request: 0.001,
            },
            client_wants_usage,
        }
    }

    fn rewrite(op: Operation, body: &str) -> (String, Value, Option<Usage>) {
        let (b, u) = rewrite_response(op, body.as_bytes(), &rw(false)).unwrap();
        let s = String::from_utf8(b.to_vec()).unwrap();
        let v = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"));
        (s, v, u)
    }

    const CHAT: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"caf\u00e9  \"x\"","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":2000,"total_tokens":3000,"prompt_tokens_details":{"cached_tokens":0}},"system_fingerprint":"fp_1"}"#;

    #[test]
    fn chat_body_is_rewritten_and_metered() {
        let (s, v, u) = rewrite(Operation::ChatCompletions, CHAT);
        let want_cost = (1000.0 * 0.15 + 2000.0 * 0.6) / 1e6 + 0.001;
        assert_eq!(
            u,
            Some(Usage {
                prompt_tokens: 1000,
                completion_tokens: 2000,
                cost: want_cost,
                estimated: false
            })
        );
        assert_eq!(v["model"], "fast-chat");
        assert_eq!(v["provider"], "acme");
        assert_eq!(
            v["metadata"],
            json!({"upstream_model": "gpt-4o-mini-2024-07-18"})
        );
        assert_eq!(v["usage"]["cost"].as_f64(), Some(want_cost));
        assert_eq!(v["usage"]["total_tokens"], 3000);
        assert_eq!(
            v["usage"]["prompt_tokens_details"],
            json!({"cached_tokens": 0})
        );
        // Content is copied as written, escapes and all.
        assert!(
            s.contains(r#""choices":[{"index":0,"message":{"role":"assistant","content":"caf\u00e9  \"x\"","refusal":null},"logprobs":null,"finish_reason":"stop"}]"#),
            "{s}"
        );
        assert!(s.starts_with(r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"fast-chat","provider":"acme","#), "{s}");
        assert!(s.ends_with(r#","system_fingerprint":"fp_1","metadata":{"upstream_model":"gpt-4o-mini-2024-07-18"}}"#), "{s}");
    }

    #[test]
    fn existing_metadata_and_provider_and_cost() {
        let body = r#"{"model":"x","provider":"OpenAI","metadata":{"k":"v"},"usage":{"prompt_tokens":10,"completion_tokens":0,"cost":99}}"#;
        let (s, v, u) = rewrite(Operation::ChatCompletions, body);
        assert_eq!(v["metadata"], json!({"k": "v"}));
        assert_eq!(v["provider"], "acme");
        assert_eq!(s.matches("\"provider\"").count(), 1, "{s}");
        assert_eq!(s.matches("\"cost\"").count(), 1, "{s}");
        let cost = u.unwrap().cost;
        assert!((cost - (10.0 * 0.15 / 1e6 + 0.001)).abs() < 1e-15);
        assert_eq!(v["usage"]["cost"].as_f64(), Some(cost));
        // A null metadata is the same as none.
        let (_, v, _) = rewrite(
            Operation::ChatCompletions,
            r#"{"model":"x","metadata":null}"#,
        );
        assert_eq!(v["metadata"]["upstream_model"], "gpt-4o-mini-2024-07-18");
    }

    #[test]
    fn model_is_added_when_absent_and_usage_optional() {
        let (s, v, u) = rewrite(Operation::ChatCompletions, r#"{"id":"x","choices":[]}"#);
        assert_eq!(u, None);
        assert_eq!(v["model"], "fast-chat");
        assert_eq!(v["provider"], "acme");
        assert!(v.get("usage").is_none());
        assert!(
            s.starts_with(r#"{"id":"x","choices":[],"model":"fast-chat""#),
            "{s}"
        );
        let (_, v, u) = rewrite(Operation::ChatCompletions, r#"{"model":"x","usage":null}"#);
        assert_eq!(u, None);
        assert!(v["usage"].is_null());
    }

    #[test]
    fn embeddings_have_no_completion_tokens() {
        let body = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023064255,-0.009327292]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8,"completion_tokens":5}}"#;
        let (s, v, u) = rewrite(Operation::Embeddings, body);
        let u = u.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (8, 0));
        assert!((u.cost - (8.0 * 0.15 / 1e6 + 0.001)).abs() < 1e-15);
        assert!(s.contains(r#""embedding":[0.0023064255,-0.009327292]"#));
        assert_eq!(v["model"], "fast-chat");
    }

    #[test]
    fn completions_body() {
        let body = r#"{"id":"cmpl-1","object":"text_completion","model":"m","choices":[{"text":"hi","index":0,"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":1.0,"total_tokens":4}}"#;
        let (_, v, u) = rewrite(Operation::Completions, body);
        assert_eq!(
            u.map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((3, 1))
        );
        assert_eq!(v["choices"][0]["text"], "hi");
    }

    #[test]
    fn error_bodies_become_upstream_errors() {
        let e = rewrite_response(
            Operation::ChatCompletions,
            br#"{"error":{"message":"Rate limit \"hit\"","type":"rate_limit","code":429}}"#,
            &rw(false),
        )
        .unwrap_err();
        assert_eq!(
            e,
            WireError::UpstreamError {
                status: Some(429),
                message: "Rate limit \"hit\"".into()
            }
        );
        let e = rewrite_response(
            Operation::ChatCompletions,
            br#"{"error":{"message":"bad","code":"invalid_api_key"}}"#,
            &rw(false),
        )
        .unwrap_err();
        assert_eq!(
            e,
            WireError::UpstreamError {
                status: None,
                message: "bad".into()
            }
        );
        let e = rewrite_response(Operation::Embeddings, br#"{"error":"nope"}"#, &rw(false))
            .unwrap_err();
        assert_eq!(
            e,
            WireError::UpstreamError {
                status: None,
                message: "nope".into()
            }
        );
        let e =
            rewrite_response(Operation::Embeddings, br#"{"error":[1]}"#, &rw(false)).unwrap_err();
        assert!(matches!(e, WireError::UpstreamError { ref message, .. } if message == "[1]"));
        // `"error": null` is no error.
        assert!(
            rewrite_response(
                Operation::ChatCompletions,
                br#"{"error":null,"model":"x"}"#,
                &rw(false)
            )
            .is_ok()
        );
    }

    #[test]
    fn malformed_bodies() {
        for body in [
            &b"{"[..],
            b"",
            b"[1]",
            b"\"s\"",
            b"{\"a\":\"\xff\"}",
            b"<html>",
        ] {
            let e = rewrite_response(Operation::ChatCompletions, body, &rw(false)).unwrap_err();
            assert!(matches!(e, WireError::Malformed { .. }), "{body:?}: {e:?}");
        }
    }

    #[test]
    fn token_counts_are_lenient() {
        let v = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        assert_eq!(token_count(&v("12")), 12);
        assert_eq!(token_count(&v("12.4")), 12);
        assert_eq!(token_count(&v("-3")), 0);
        assert_eq!(token_count(&v("null")), 0);
        assert_eq!(token_count(&v("\"7\"")), 0);
    }
}
