//! The candidate set: which route governs the request, which models it may be served by, and
//! the effective provider preferences.

use std::sync::Arc;

use http::HeaderMap;
use switchyard_core::{BoxError, Failure};
use switchyard_policy::{Model, ProviderPrefs, Route, Snapshot, SortBy, SortOptions, SortSpec};
use switchyard_wire::ParsedRequest;

use crate::error::{InvalidProvider, MissingModel, RouteSource, UnknownModel, UnknownRoute};

/// The header that names a policy route, like `@preset/<id>` does in the body.
pub const ROUTE_HEADER: &str = "x-switchyard-route";

const PRESET: &str = "@preset/";

/// What the request asks to be served by, resolved against one snapshot.
#[derive(Debug)]
pub(crate) struct Resolved<'s> {
    pub route: Option<&'s Arc<Route>>,
    /// Distinct models in fallback order.
    pub models: Vec<&'s Arc<Model>>,
    pub prefs: ProviderPrefs,
}

/// One model name as the caller wrote it, after the preset and sort suffixes are split off.
struct Named<'s> {
    model: Option<&'s Arc<Model>>,
    preset: Option<&'s str>,
    sort: Option<SortBy>,
}

fn parse_name<'s>(snapshot: &'s Snapshot, name: &'s str) -> Result<Named<'s>, BoxError> {
    let (model, preset) = match name.find(PRESET) {
        Some(i) => (name[..i].trim(), Some(name[i + PRESET.len()..].trim())),
        None => (name, None),
    };
    if model.is_empty() {
        return Ok(Named {
            model: None,
            preset,
            sort: None,
        });
    }
    // A model id may itself end in `:nitro`; the full name wins over the suffix.
    if let Some(m) = snapshot.model(model) {
        return Ok(Named {
            model: Some(m),
            preset,
            sort: None,
        });
    }
    let suffixed = [(":nitro", SortBy::Throughput), (":floor", SortBy::Price)]
        .into_iter()
        .find_map(|(suffix, by)| {
            let base = model.strip_suffix(suffix)?;
            snapshot.model(base).map(|m| (m, by))
        });
    match suffixed {
        Some((m, by)) => Ok(Named {
            model: Some(m),
            preset,
            sort: Some(by),
        }),
        None => Err(Failure::boxed(UnknownModel {
            model: model.to_string(),
        })),
    }
}

fn push_unique<'s>(models: &mut Vec<&'s Arc<Model>>, m: &'s Arc<Model>) {
    if !models.iter().any(|x| x.id == m.id) {
        models.push(m);
    }
}

/// Resolves the route, the models and the preferences (see the crate docs for the rules).
pub(crate) fn resolve<'s>(
    snapshot: &'s Snapshot,
    req: &'s ParsedRequest,
    headers: &HeaderMap,
) -> Result<Resolved<'s>, BoxError> {
    let mut requested: Vec<&'s Arc<Model>> = Vec::new();
    let mut preset: Option<&'s str> = None;
    let mut sort: Option<SortBy> = None;
    let mut names = 0usize;
    // `model@preset/x` names a model on purpose, over whatever the route would serve.
    let mut pinned_with_preset = false;

    let model_names = req
        .model()
        .into_iter()
        .flat_map(|m| m.split(','))
        .chain(req.models().iter().map(String::as_str))
        .map(str::trim)
        .filter(|s| !s.is_empty());
    for name in model_names {
        let named = parse_name(snapshot, name)?;
        if named.preset.is_some() {
            preset = preset.or(named.preset);
            pinned_with_preset |= named.model.is_some();
        }
        sort = sort.or(named.sort);
        if let Some(m) = named.model {
            names += 1;
            push_unique(&mut requested, m);
        }
    }
    let explicit = !req.models().is_empty() || names > 1 || pinned_with_preset;

    let header_route = headers
        .get(ROUTE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let route = if let Some(id) = header_route {
        Some(snapshot.route(id).ok_or_else(|| {
            Failure::boxed(UnknownRoute {
                route: id.to_string(),
                source_kind: RouteSource::Header,
            })
        })?)
    } else if let Some(id) = preset {
        Some(snapshot.route(id).ok_or_else(|| {
            Failure::boxed(UnknownRoute {
                route: id.to_string(),
                source_kind: RouteSource::Preset,
            })
        })?)
    } else {
        requested
            .first()
            .and_then(|m| snapshot.route_for_model(&m.id))
    };

    let models = match route {
        Some(r) if !explicit && !r.models.is_empty() => {
            let mut models = Vec::with_capacity(r.models.len());
            for id in &r.models {
                let m = snapshot.model(id).ok_or_else(|| {
                    Failure::boxed(UnknownModel {
                        model: id.to_string(),
                    })
                })?;
                push_unique(&mut models, m);
            }
            models
        }
        _ => requested,
    };
    if models.is_empty() {
        return Err(Failure::boxed(MissingModel));
    }

    let mut prefs = match route.and_then(|r| r.provider.as_ref()) {
        Some(p) => snapshot.defaults().provider.overlay(p),
        None => snapshot.defaults().provider.clone(),
    };
    if let Some(raw) = req.provider_raw() {
        prefs = prefs.overlay(&parse_provider(raw)?);
    }
    if let Some(by) = sort {
        // The suffix says what to sort by; a partition asked for elsewhere still holds.
        prefs.sort = Some(match prefs.sort {
            Some(SortSpec::Options(o)) => SortSpec::Options(SortOptions {
                by: Some(by),
                partition: o.partition,
            }),
            _ => SortSpec::By(by),
        });
    }

    Ok(Resolved {
        route,
        models,
        prefs,
    })
}

/// Parses the request's `provider` object; the error names the offending field's path.
pub(crate) fn parse_provider(raw: &str) -> Result<ProviderPrefs, BoxError> {
    let de = &mut serde_json::Deserializer::from_str(raw);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path.is_empty() || path == "." {
            inner.to_string()
        } else {
            format!("provider.{path}: {inner}")
        };
        Failure::boxed(InvalidProvider { message })
    })
}
