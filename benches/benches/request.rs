//! The caller's request body: one parse into the typed view, and the body rebuilt for the
//! upstream from it.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard_benches::{UPSTREAM_MODEL, chat_request, or_exit};
use switchyard_wire::{Operation, ParsedRequest};

fn request(c: &mut Criterion) {
    let body = chat_request(false);
    let stream_body = chat_request(true);
    let op = Operation::ChatCompletions;
    let parsed = or_exit(
        "parse the chat request",
        ParsedRequest::parse(op, body.clone()),
    );
    let parsed_stream = or_exit(
        "parse the streaming chat request",
        ParsedRequest::parse(op, stream_body.clone()),
    );

    let mut g = c.benchmark_group("request");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| ParsedRequest::parse(op, black_box(body.clone())))
    });
    g.bench_function("upstream_body", |b| {
        b.iter(|| black_box(&parsed).upstream_body(black_box(UPSTREAM_MODEL)))
    });
    // A stream's upstream body also rewrites `stream_options` to force usage on.
    g.bench_function("upstream_body_stream", |b| {
        b.iter(|| black_box(&parsed_stream).upstream_body(black_box(UPSTREAM_MODEL)))
    });
    g.bench_function("parse_and_upstream_body", |b| {
        b.iter(|| {
            ParsedRequest::parse(op, black_box(body.clone()))
                .map(|p| p.upstream_body(black_box(UPSTREAM_MODEL)))
        })
    });
    g.finish();
}

criterion_group!(benches, request);
criterion_main!(benches);
