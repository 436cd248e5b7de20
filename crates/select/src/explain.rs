//! The plan as JSON, for `switchyard explain` and `POST /admin/explain`.

use serde_json::{Value, json};
use switchyard_health::{HealthRegistry, Percentiles, Summary};
use switchyard_policy::{DataCollection, Plan, Snapshot};

use crate::error::exclusion_json;

/// The plan as JSON: route, models, session, effective preferences, the candidates in order
/// (provider, model, upstream model, prices, `why`, `score`, live statistics) and every
/// exclusion with its reason code and detail.
pub fn explain_json(plan: &Plan, snapshot: &Snapshot, health: &HealthRegistry) -> Value {
    let candidates: Vec<Value> = plan
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ep = &c.endpoint;
            let context_length = snapshot.model(&ep.model).and_then(|m| m.context_length);
            json!({
                "position": i + 1,
                "endpoint": &*ep.id,
                "provider": &*ep.provider.id,
                "model": &*ep.model,
                "upstream_model": &*ep.upstream_model,
                "pricing": {
                    "prompt": ep.pricing.prompt,
                    "completion": ep.pricing.completion,
                    "request": ep.pricing.request,
                },
                "why": c.why,
                "score": c.score,
                "quantization": ep.quantization.as_deref(),
                "max_output_tokens": ep.max_output_tokens,
                "context_length": context_length,
                "data_collection": match ep.provider.data_collection {
                    DataCollection::Allow => "allow",
                    DataCollection::Deny => "deny",
                },
                "zdr": ep.provider.zdr,
                "stats": health.get(&ep.id).map(|h| summary_json(&h.summary())),
            })
        })
        .collect();
    let excluded: Vec<Value> = plan.excluded.iter().map(exclusion_json).collect();
    json!({
        "route": plan.route.as_ref().map(|r| &*r.id),
        "models": plan.models.iter().map(|m| &**m).collect::<Vec<_>>(),
        "session": plan.session.as_deref(),
        "prefs": serde_json::to_value(&plan.prefs).unwrap_or(Value::Null),
        "candidates": candidates,
        "excluded": excluded,
    })
}

/// One endpoint's live statistics as JSON (seconds for TTFT and latency, tokens per second
/// for throughput), as the explain output and `GET /admin/providers` show them.
pub fn summary_json(s: &Summary) -> Value {
    json!({
        "samples": s.samples,
        "failures": s.failures,
        "error_rate": s.error_rate,
        "consecutive_failures": s.consecutive_failures,
        "ttft_s": s.ttft.as_ref().map(percentiles_json),
        "latency_s": s.latency.as_ref().map(percentiles_json),
        "throughput_tps": s.throughput.as_ref().map(percentiles_json),
    })
}

fn percentiles_json(p: &Percentiles) -> Value {
    json!({ "p50": p.p50, "p75": p.p75, "p90": p.p90, "p99": p.p99 })
}
