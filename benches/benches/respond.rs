//! Rendering Switchyard's own errors for the caller (`switchyard_respond::error_response`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard_benches::ProvidersExhausted;
use switchyard_core::InboundApi;
use switchyard_respond::error_response;
use switchyard_wire::RequestError;

const REQUEST_ID: &str = "gen-1763700000-9f0c2a41d7e3b5c8";

fn respond(c: &mut Criterion) {
    let invalid = RequestError::InvalidParameter {
        param: "max_tokens",
        expected: "an integer",
    };
    let exhausted = ProvidersExhausted::sample();

    let mut g = c.benchmark_group("respond");
    g.bench_function("openai_400_invalid_parameter", |b| {
        b.iter(|| error_response(InboundApi::OpenAi, black_box(&invalid), Some(REQUEST_ID)))
    });
    g.bench_function("openai_502_attempt_trail", |b| {
        b.iter(|| error_response(InboundApi::OpenAi, black_box(&exhausted), Some(REQUEST_ID)))
    });
    g.bench_function("anthropic_502_attempt_trail", |b| {
        b.iter(|| {
            error_response(
                InboundApi::Anthropic,
                black_box(&exhausted),
                Some(REQUEST_ID),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, respond);
criterion_main!(benches);
