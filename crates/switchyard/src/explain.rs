//! `switchyard explain` and `POST /admin/explain`: the routing plan for one request, with
//! every candidate in order and every excluded endpoint with its reason — the same data the
//! Select layer acts on.

use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;
use switchyard_core::{BoxError, Failure};
use switchyard_policy::Snapshot;
use switchyard_stack::Registries;
use switchyard_wire::{Operation, ParsedRequest};

/// The plan for `body` (a request to `op_path`) under `snapshot`, as JSON.
pub fn plan_json(
    snapshot: &Snapshot,
    registries: &Registries,
    op_path: &str,
    body: Bytes,
    headers: &HeaderMap,
) -> Result<Value, BoxError> {
    let op = Operation::from_path(op_path).ok_or_else(|| {
        Failure::boxed(switchyard_respond::NotFound {
            method: http::Method::POST,
            path: op_path.to_string(),
        })
    })?;
    let req = ParsedRequest::parse(op, body).map_err(Failure::boxed)?;
    let plan = registries
        .selector
        .plan(snapshot, &req, headers, tokio::time::Instant::now())?;
    Ok(switchyard_select::explain_json(
        &plan,
        snapshot,
        &registries.health,
    ))
}

/// The CLI command: no live statistics (a fresh process has none), so the plan shows what
/// the policy alone decides, with the default balancing's random pick for this run.
pub fn run(policy: &Path, request: &Path, op_path: &str) -> ExitCode {
    let compiled = match switchyard_policy::load_file(policy) {
        Ok(c) => c,
        Err(diags) => {
            eprintln!("{}: invalid policy", policy.display());
            for d in diags {
                eprintln!("  {d}");
            }
            return ExitCode::from(2);
        }
    };
    let body = match std::fs::read(request) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            eprintln!("{}: {e}", request.display());
            return ExitCode::from(2);
        }
    };
    // The selector reads tokio's clock; a small runtime gives it one.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let registries = Registries::new();
    let result = rt.block_on(async {
        plan_json(
            &compiled.snapshot,
            &registries,
            op_path,
            body,
            &HeaderMap::new(),
        )
    });
    match result {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            match Failure::find(&*e) {
                Some(f) => {
                    let f = f.get();
                    eprintln!("{} ({}): {f}", f.status(), f.code());
                    if let Some(meta) = f.metadata() {
                        eprintln!(
                            "{}",
                            serde_json::to_string_pretty(&meta).unwrap_or_default()
                        );
                    }
                }
                None => eprintln!("switchyard: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}
