//! The upstream's answer on its way back: the OpenAI stream adapter over a 200-event chat
//! stream, against plain SSE decoding of the same bytes as the baseline, and the rewrite of
//! a non-streaming completion.

use std::hint::black_box;
use std::pin::pin;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard_benches::{
    FixtureError, FrameBody, STREAM_EVENTS, chat_completion, chat_stream_frames, drain, or_exit,
    rewrite,
};
use switchyard_wire::{OpenAiEventStream, Operation, SseDecoder, rewrite_response};

/// The policy's default SSE line cap.
const MAX_LINE: usize = 1 << 20;

fn stream(c: &mut Criterion) {
    let frames = chat_stream_frames();
    let rw = rewrite(true);
    let op = Operation::ChatCompletions;

    let once = pin!(OpenAiEventStream::new(
        FrameBody::new(frames.clone()),
        op,
        rw.clone(),
        MAX_LINE
    ));
    let drained = or_exit("drain the fixture stream", drain(once));
    if drained.events != STREAM_EVENTS || !drained.done {
        or_exit::<(), _>(
            "check the fixture stream",
            Err(FixtureError::Unexpected(format!("{drained:?}"))),
        );
    }

    let mut g = c.benchmark_group("stream");
    g.throughput(Throughput::Elements(STREAM_EVENTS as u64));
    g.bench_function("openai_event_stream", |b| {
        b.iter(|| {
            let events = pin!(OpenAiEventStream::new(
                FrameBody::new(frames.clone()),
                op,
                rw.clone(),
                MAX_LINE
            ));
            drain(events)
        })
    });
    // Baseline: only finding the events in the same frames, no JSON and no rewrite.
    g.bench_function("sse_decode_only", |b| {
        b.iter(|| {
            let mut decoder = SseDecoder::new(MAX_LINE);
            let mut events = 0usize;
            for frame in frames.iter() {
                decoder.push(black_box(frame));
                while let Ok(Some(ev)) = decoder.next_event() {
                    events += usize::from(!black_box(ev).data.is_empty());
                }
            }
            events
        })
    });
    g.finish();

    let completion = chat_completion();
    let rw = rewrite(false);
    or_exit(
        "rewrite the fixture completion",
        rewrite_response(op, &completion, &rw),
    );
    let mut g = c.benchmark_group("response");
    g.throughput(Throughput::Bytes(completion.len() as u64));
    g.bench_function("rewrite_response", |b| {
        b.iter(|| rewrite_response(op, black_box(&completion), black_box(&rw)))
    });
    g.finish();
}

criterion_group!(benches, stream);
criterion_main!(benches);
