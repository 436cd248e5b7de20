//! Verdicts on upstream failures: which [`Class`] an error response or an in-band error event
//! stands for, and how long the upstream asked us to wait.
//!
//! Providers name the same failure in many ways (an OpenAI `code`, an Anthropic `type`, a
//! vLLM or OpenRouter sentence), so besides the status the verdict reads the wording of the
//! body. Only the first [`SCAN_LIMIT`] bytes are read: error bodies are small, and a huge body
//! must not cost more than that.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use serde::Deserialize;
use serde_json::value::RawValue;
use switchyard_core::Class;

/// How much of an error body the wording checks read.
const SCAN_LIMIT: usize = 64 * 1024;

/// The verdict on one failed upstream response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub class: Class,
    /// How long the upstream asked to be left alone (`retry-after-ms`, `Retry-After` as
    /// seconds or an HTTP date, or Google's `retryDelay` in the body); a date in the past is
    /// zero.
    pub retry_after: Option<Duration>,
}

/// Classifies an upstream HTTP response by its status, headers and body (DESIGN.md §4).
///
/// - 429 is [`Class::RateLimited`], except quota exhaustion (OpenAI `insufficient_quota`, or
///   quota / billing / credit wording with no retry hint), which is [`Class::Credential`].
/// - 401, 402 and 403 are [`Class::Credential`], except a 403 that reports a moderation or
///   content-policy block ([`Class::ContentPolicy`]).
/// - 408 and every 5xx (500, 502, 503, 504, 529, ...) are [`Class::ServerError`].
/// - 400, 413 and 422 are [`Class::ContextLength`] when the body says the prompt does not fit
///   the context window, [`Class::ContentPolicy`] for a content-policy refusal,
///   [`Class::Credential`] for an exhausted credit balance (Anthropic answers that with a 400),
///   else [`Class::ClientError`]; any other 4xx is [`Class::ClientError`] (or
///   [`Class::ContentPolicy`] by wording).
/// - A 2xx is [`Class::Success`] unless its body is an `error` object, which is classified as
///   [`classify_error_event`] does; 1xx and 3xx, which an LLM API never answers with, are
///   [`Class::ServerError`].
pub fn classify_response(status: u16, headers: &HeaderMap, body: &[u8]) -> Verdict {
    classify_at(status, headers, body, SystemTime::now())
}

fn classify_at(status: u16, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Verdict {
    let wording = Wording::of(body);
    let retry_after = retry_after_at(headers, now).or_else(|| wording.retry_delay());
    let class = match status {
        200..=299 if error_object(body).is_some() => classify_error_event(body),
        200..=299 => Class::Success,
        429 if wording.insufficient_quota()
            || (wording.out_of_credit() && retry_after.is_none()) =>
        {
            Class::Credential
        }
        429 => Class::RateLimited,
        403 if wording.content_policy() => Class::ContentPolicy,
        401..=403 => Class::Credential,
        408 => Class::ServerError,
        400 | 413 | 422 if wording.context_length() => Class::ContextLength,
        400..=499 if wording.content_policy() => Class::ContentPolicy,
        400 if wording.insufficient_quota() || wording.out_of_credit() => Class::Credential,
        400..=499 => Class::ClientError,
        _ => Class::ServerError,
    };
    Verdict { class, retry_after }
}

/// Classifies an in-band upstream error event that arrived before any output (`data` is the
/// event's JSON, with or without its `data: ` framing): [`Class::ServerError`] unless it
/// says the prompt exceeds the context window ([`Class::ContextLength`]), reports a content
/// policy block ([`Class::ContentPolicy`]) or a rate limit ([`Class::RateLimited`], also for
/// an OpenRouter-style `"code": 429`).
pub fn classify_error_event(data: &[u8]) -> Class {
    let wording = Wording::of(data);
    if wording.context_length() {
        Class::ContextLength
    } else if wording.content_policy() {
        Class::ContentPolicy
    } else if wording.rate_limited() || error_status(data) == Some(429) {
        Class::RateLimited
    } else {
        Class::ServerError
    }
}

/// The wait an upstream asked for in its headers: `retry-after-ms` (milliseconds, as
/// OpenAI's and Azure's SDKs read it) wins over `Retry-After` (delay-seconds or an HTTP
/// date). Fractional values are accepted; negative, malformed or absurd ones are ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

fn retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(d) = text("retry-after-ms").and_then(|v| seconds_of(v, 1000)) {
        return Some(d);
    }
    let value = text("retry-after")?;
    if let Some(d) = seconds_of(value, 1) {
        return Some(d);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A non-negative decimal number of `1/per_second` seconds as a duration. Waits beyond a day
/// are nonsense and ignored, as are exponents, signs and anything else that is not a plain
/// decimal.
fn seconds_of(text: &str, per_second: u32) -> Option<Duration> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    // Whole numbers, by far the usual case, stay exact.
    if let Ok(n) = text.parse::<u64>() {
        let nanos = u128::from(n) * 1_000_000_000 / u128::from(per_second);
        return (nanos <= 86_400 * 1_000_000_000)
            .then(|| Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)));
    }
    let secs = text.parse::<f64>().ok()? / f64::from(per_second);
    if !(0.0..=86_400.0).contains(&secs) {
        return None;
    }
    Duration::try_from_secs_f64(secs).ok()
}

/// Lower-cased text of (the start of) a body, for wording checks.
struct Wording<'a>(Cow<'a, str>);

impl<'a> Wording<'a> {
    fn of(body: &'a [u8]) -> Self {
        let head = &body[..body.len().min(SCAN_LIMIT)];
        let text = String::from_utf8_lossy(head);
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            Self(Cow::Owned(text.to_ascii_lowercase()))
        } else {
            Self(text)
        }
    }

    fn any(&self, needles: &[&str]) -> bool {
        needles.iter().any(|n| self.0.contains(n))
    }

    /// The prompt (plus the requested output) does not fit the model's window.
    fn context_length(&self) -> bool {
        self.any(&[
            // OpenAI code; also "context_length" in LiteLLM-style codes.
            "context_length_exceeded",
            // OpenAI, OpenRouter, vLLM, Mistral: "maximum context length is N tokens".
            "context length",
            "context_length",
            // Anthropic: "input length and `max_tokens` exceed context limit: a + b > c".
            "context limit",
            "context window",
            // llama.cpp: "the request exceeds the available context size".
            "context size",
            // Anthropic: "prompt is too long: 208656 tokens > 200000 maximum".
            "prompt is too long",
            // vLLM: "... is longer than the maximum model length of 4096".
            "maximum model length",
            "max_model_len",
            // Bedrock: "Input is too long for requested model".
            "input is too long",
            // Gemini: "The input token count (N) exceeds the maximum number of tokens allowed".
            "exceeds the maximum number of tokens",
            // TGI: "`inputs` tokens + `max_new_tokens` must be <= 4096".
            "tokens + `max_new_tokens`",
            "too many tokens",
        ])
    }

    /// A moderation or content-policy block.
    fn content_policy(&self) -> bool {
        self.any(&[
            // OpenAI `content_policy_violation`; "content policy" in prose.
            "content_policy",
            "content policy",
            // OpenAI finish reason / Azure code `content_filter`; "content filtering policy"
            // (Anthropic's "Output blocked by content filtering policy", Azure's prose).
            "content_filter",
            "content filter",
            "content management policy",
            "responsibleaipolicyviolation",
            // OpenAI: "flagged for potentially violating our usage policies".
            "usage polic",
            // OpenRouter moderation: "... your input was flagged".
            "flagged",
            "moderation",
            // OpenAI images: "rejected as a result of our safety system"; Gemini "SAFETY".
            "safety system",
            "blocked due to safety",
            "safety reasons",
            "finish_reason\":\"safety",
            "blockreason",
        ])
    }

    /// OpenAI's code for a key with no quota left: never a temporary condition.
    fn insufficient_quota(&self) -> bool {
        self.any(&["insufficient_quota"])
    }

    /// Quota, billing or credit wording: the key has run dry (temporary only when the
    /// upstream also says when to come back).
    fn out_of_credit(&self) -> bool {
        self.any(&[
            "exceeded your current quota",
            "billing",
            // Anthropic: "Your credit balance is too low to access the Anthropic API".
            "credit balance",
            // OpenRouter 402: "Insufficient credits".
            "insufficient credits",
            "insufficient_credits",
            "out of credits",
            "payment required",
        ])
    }

    fn rate_limited(&self) -> bool {
        self.any(&[
            "rate limit",
            "rate_limit",
            "ratelimit",
            "too many requests",
            "resource_exhausted",
        ])
    }

    /// Google's `"retryDelay": "37s"` (in a 429 body's `RetryInfo` detail).
    fn retry_delay(&self) -> Option<Duration> {
        let at = self.0.find("\"retrydelay\"")?;
        let rest = self.0[at + "\"retrydelay\"".len()..].trim_start();
        let rest = rest.strip_prefix(':')?.trim_start().strip_prefix('"')?;
        let end = rest.find('"')?;
        seconds_of(rest[..end].strip_suffix('s')?, 1)
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ErrorObject<'a> {
    #[serde(borrow, default)]
    code: Option<&'a RawValue>,
    #[serde(borrow, default)]
    status: Option<&'a RawValue>,
}

/// The JSON text of an event or body: `data: ` framing and surrounding whitespace removed.
fn json_text(data: &[u8]) -> &[u8] {
    let data = data.trim_ascii();
    let data = data.strip_prefix(b"data:").unwrap_or(data);
    data.trim_ascii()
}

/// The body's top-level `error` member, when it is present and not null.
fn error_object(body: &[u8]) -> Option<&RawValue> {
    // A success body can be large: parse it only when it may hold an error.
    memchr::memmem::find(body, b"\"error\"")?;
    serde_json::from_slice::<Envelope<'_>>(json_text(body))
        .ok()?
        .error
}

/// An HTTP status named by an error object (OpenRouter puts it in `error.code`; Azure also
/// in `error.status`).
fn error_status(data: &[u8]) -> Option<u16> {
    let err = error_object(data)?;
    let obj: ErrorObject<'_> = serde_json::from_str(err.get()).ok()?;
    [obj.code, obj.status]
        .into_iter()
        .flatten()
        .find_map(|v| {
            let text = v.get().trim_matches('"');
            text.parse::<u16>().ok()
        })
        .filter(|s| (100..=599).contains(s))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http::HeaderValue;

    fn classify(status: u16, body: &str) -> Class {
        classify_response(status, &HeaderMap::new(), body.as_bytes()).class
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const OPENAI_RATE: &str = r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 2s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
    const OPENAI_QUOTA: &str = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
    const OPENAI_CONTEXT: &str = r#"{"error":{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in 8202 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
    const ANTHROPIC_TOO_LONG: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208656 tokens > 200000 maximum"}}"#;
    const ANTHROPIC_LIMIT: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"input length and `max_tokens` exceed context limit: 178959 + 64000 > 200000, decrease input length or `max_tokens` and try again"},"request_id":"req_1"}"#;
    const VLLM_CONTEXT: &str = r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}"#;
    const VLLM_MODEL_LEN: &str = r#"{"error":{"message":"The decoder prompt (length 9000) is longer than the maximum model length of 8192. Make sure that `max_model_len` is no smaller than the number of text tokens.","type":"BadRequestError","param":null,"code":400}}"#;
    const OPENROUTER_CONTEXT: &str = r#"{"error":{"message":"This endpoint's maximum context length is 131072 tokens. However, you requested about 140000 tokens (139000 of text input, 1000 in the output). Please reduce the length of either one, or use the \"middle-out\" transform to compress your prompt automatically.","code":400,"metadata":{"provider_name":null}}}"#;
    const AZURE_FILTER: &str = r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"high"}}}}}"#;
    const OPENAI_POLICY: &str = r#"{"error":{"message":"Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}"#;
    const ANTHROPIC_FILTER: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"Output blocked by content filtering policy"}}"#;
    const OPENROUTER_MODERATION: &str = r#"{"error":{"code":403,"message":"gpt-4o requires moderation on OpenRouter. Your input was flagged for \"harassment\". No credits were charged.","metadata":{"reasons":["harassment"],"flagged_input":"...","provider_name":"OpenAI","model_slug":"openai/gpt-4o"}}}"#;
    const ANTHROPIC_CREDIT: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}"#;
    const OPENROUTER_CREDITS: &str = r#"{"error":{"code":402,"message":"Insufficient credits. Add more using https://openrouter.ai/credits"}}"#;
    const GEMINI_QUOTA: &str = r#"{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}"#;

    #[test]
    fn rate_limits_and_quota() {
        assert_eq!(classify(429, OPENAI_RATE), Class::RateLimited);
        assert_eq!(classify(429, ""), Class::RateLimited);
        assert_eq!(
            classify(429, "<html>Too Many Requests</html>"),
            Class::RateLimited
        );
        assert_eq!(classify(429, OPENAI_QUOTA), Class::Credential);
        // insufficient_quota is never temporary, even with a Retry-After.
        let h = headers(&[("retry-after", "20")]);
        assert_eq!(
            classify_response(429, &h, OPENAI_QUOTA.as_bytes()).class,
            Class::Credential
        );
        // Quota wording with a retry hint is a per-minute quota: a rate limit.
        let v = classify_response(429, &HeaderMap::new(), GEMINI_QUOTA.as_bytes());
        assert_eq!(v.class, Class::RateLimited);
        assert_eq!(v.retry_after, Some(Duration::from_secs(37)));
        let no_hint = GEMINI_QUOTA.replace("\"retryDelay\":\"37s\"", "\"x\":1");
        assert_eq!(classify(429, &no_hint), Class::Credential);
        assert_eq!(classify(429, OPENROUTER_CREDITS), Class::Credential);
    }

    #[test]
    fn credentials() {
        for status in [401, 402, 403] {
            assert_eq!(classify(status, ""), Class::Credential, "{status}");
        }
        assert_eq!(
            classify(
                401,
                r#"{"error":{"message":"Incorrect API key provided","code":"invalid_api_key"}}"#
            ),
            Class::Credential
        );
        assert_eq!(classify(402, OPENROUTER_CREDITS), Class::Credential);
        assert_eq!(classify(400, ANTHROPIC_CREDIT), Class::Credential);
        // A moderation block is not the key's fault.
        assert_eq!(classify(403, OPENROUTER_MODERATION), Class::ContentPolicy);
    }

    #[test]
    fn server_errors() {
        for status in [500, 502, 503, 504, 529, 501, 520, 408] {
            assert_eq!(classify(status, ""), Class::ServerError, "{status}");
        }
        // Wording never turns a 5xx into a client error.
        assert_eq!(classify(500, OPENAI_CONTEXT), Class::ServerError);
        assert_eq!(
            classify(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            Class::ServerError
        );
        for status in [100, 304] {
            assert_eq!(classify(status, ""), Class::ServerError, "{status}");
        }
    }

    #[test]
    fn context_length_wordings() {
        for body in [
            OPENAI_CONTEXT,
            ANTHROPIC_TOO_LONG,
            ANTHROPIC_LIMIT,
            VLLM_CONTEXT,
            VLLM_MODEL_LEN,
            OPENROUTER_CONTEXT,
            r#"{"error":{"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#,
            r#"{"message":"Input is too long for requested model."}"#,
            r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error"}}"#,
            r#"{"error":"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 `inputs` tokens and 500 `max_new_tokens`","error_type":"validation"}"#,
            r#"{"object":"error","message":"Prompt contains 40000 tokens and 0 draft tokens, too large for model with 32768 maximum context length","type":"invalid_request_invalid_args"}"#,
        ] {
            for status in [400, 413, 422] {
                assert_eq!(
                    classify(status, body),
                    Class::ContextLength,
                    "{status} {body}"
                );
            }
        }
        // A 404 or 409 is never about the context window.
        assert_eq!(classify(404, OPENAI_CONTEXT), Class::ClientError);
        // An output-token limit is a plain parameter error.
        assert_eq!(
            classify(
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: 10000 > 4096, which is the maximum allowed number of output tokens for claude-3-5-sonnet-20240620"}}"#
            ),
            Class::ClientError
        );
    }

    #[test]
    fn content_policy_wordings() {
        for body in [
            AZURE_FILTER,
            OPENAI_POLICY,
            ANTHROPIC_FILTER,
            OPENROUTER_MODERATION,
        ] {
            assert_eq!(classify(400, body), Class::ContentPolicy, "{body}");
        }
        assert_eq!(
            classify(
                400,
                r#"{"error":{"message":"This request has been flagged for potentially violating our usage policies."}}"#
            ),
            Class::ContentPolicy
        );
        assert_eq!(classify(422, AZURE_FILTER), Class::ContentPolicy);
    }

    #[test]
    fn other_client_errors() {
        for (status, body) in [
            (
                400,
                r#"{"error":{"message":"Invalid value for 'temperature'","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}"#,
            ),
            (
                404,
                r#"{"error":{"message":"The model `x` does not exist or you do not have access to it.","code":"model_not_found"}}"#,
            ),
            (
                413,
                r#"{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}"#,
            ),
            (422, "unprocessable"),
            (409, ""),
            (400, ""),
        ] {
            assert_eq!(
                classify(status, body),
                Class::ClientError,
                "{status} {body}"
            );
        }
    }

    #[test]
    fn success_unless_the_body_is_an_error() {
        assert_eq!(classify(200, r#"{"choices":[]}"#), Class::Success);
        assert_eq!(
            classify(200, r#"{"error":null,"choices":[]}"#),
            Class::Success
        );
        assert_eq!(classify(200, "not json"), Class::Success);
        assert_eq!(
            classify(
                200,
                r#"{"error":{"message":"Provider returned error","code":502}}"#
            ),
            Class::ServerError
        );
        assert_eq!(classify(200, OPENAI_CONTEXT), Class::ContextLength);
    }

    #[test]
    fn retry_after_seconds_ms_and_dates() {
        let at =
            |pairs: &[(&'static str, &str)], now: SystemTime| retry_after_at(&headers(pairs), now);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00
        assert_eq!(
            at(&[("retry-after", "7")], now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(at(&[("retry-after", " 0 ")], now), Some(Duration::ZERO));
        assert_eq!(
            at(&[("retry-after", "1.5")], now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            at(&[("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT")], now),
            Some(Duration::from_secs(30))
        );
        // A date in the past means now.
        assert_eq!(
            at(&[("retry-after", "Wed, 21 Oct 2015 07:27:00 GMT")], now),
            Some(Duration::ZERO)
        );
        // retry-after-ms wins.
        assert_eq!(
            at(&[("retry-after", "7"), ("retry-after-ms", "250")], now),
            Some(Duration::from_millis(250))
        );
        let d = at(&[("retry-after-ms", "12.5")], now).unwrap();
        assert!((d.as_secs_f64() - 0.0125).abs() < 1e-6, "{d:?}");
        assert_eq!(
            at(&[("retry-after-ms", "86400001")], now),
            None,
            "more than a day"
        );
        // Garbage is no hint; a garbage -ms falls back to Retry-After.
        for bad in ["-1", "soon", "", "1e3", "NaN", "99999999999"] {
            assert_eq!(at(&[("retry-after", bad)], now), None, "{bad}");
        }
        assert_eq!(
            at(&[("retry-after-ms", "x"), ("retry-after", "3")], now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(at(&[], now), None);
        // The public entry reads the same headers.
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2")])),
            Some(Duration::from_secs(2))
        );
        let v = classify_response(
            429,
            &headers(&[("retry-after", "4")]),
            OPENAI_RATE.as_bytes(),
        );
        assert_eq!(
            v,
            Verdict {
                class: Class::RateLimited,
                retry_after: Some(Duration::from_secs(4))
            }
        );
    }

    #[test]
    fn error_events() {
        let ev = |s: &str| classify_error_event(s.as_bytes());
        assert_eq!(
            ev(r#"{"error":{"message":"Provider disconnected","code":"server_error"}}"#),
            Class::ServerError
        );
        assert_eq!(
            ev("data: {\"error\":{\"message\":\"boom\"}}\n\n"),
            Class::ServerError
        );
        assert_eq!(ev("not json at all"), Class::ServerError);
        assert_eq!(ev(OPENAI_CONTEXT), Class::ContextLength);
        assert_eq!(
            ev(
                r#"data: {"error":{"message":"prompt is too long: 300000 tokens > 200000 maximum"}}"#
            ),
            Class::ContextLength
        );
        assert_eq!(ev(AZURE_FILTER), Class::ContentPolicy);
        assert_eq!(
            ev(r#"{"error":{"message":"Rate limit exceeded: free-models-per-min.","code":429}}"#),
            Class::RateLimited
        );
        assert_eq!(
            ev(r#"data: {"error":{"message":"slow down","code":"429"}}"#),
            Class::RateLimited
        );
        assert_eq!(
            ev(r#"{"error":{"message":"x","status":429}}"#),
            Class::RateLimited
        );
        assert_eq!(
            ev(r#"{"error":{"message":"x","code":502}}"#),
            Class::ServerError
        );
    }

    #[test]
    fn scanning_is_bounded_and_case_insensitive() {
        let mut body = "x".repeat(SCAN_LIMIT);
        body.push_str("context_length_exceeded");
        assert_eq!(classify(400, &body), Class::ClientError);
        assert_eq!(classify(400, "PROMPT IS TOO LONG"), Class::ContextLength);
        // Invalid UTF-8 does not stop the scan.
        let mut bytes = b"\xff\xfe".to_vec();
        bytes.extend_from_slice(b"maximum context length");
        assert_eq!(
            classify_response(400, &HeaderMap::new(), &bytes).class,
            Class::ContextLength
        );
    }
}
