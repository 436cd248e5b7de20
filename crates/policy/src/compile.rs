//! Source text to [`Snapshot`]: parse, check meaning, resolve keys and CA files, index.
//! Every check runs even after an earlier one failed, so one run reports every error.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::diag::Diagnostic;
use crate::env::Env;
use crate::net::{is_private_host, parse_base_url};
use crate::outline::Outline;
use crate::prefs::{DataCollection, ProviderPrefs};
use crate::schema::{self, dur};
use crate::settings::{
    Breaker, Defaults, Limits, Retry, RetryOverrides, TimeoutOverrides, Timeouts,
};
use crate::snapshot::{Budget, BudgetScope, Endpoint, Model, Provider, Route, Secret, Snapshot};
use crate::{Compiled, Format};

pub(crate) fn compile(
    text: &str,
    format: Format,
    base_dir: &Path,
    env: &dyn Env,
) -> Result<Compiled, Vec<Diagnostic>> {
    let value = parse_value(text, format).map_err(|d| vec![d])?;
    let raw: schema::Policy = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        vec![Diagnostic::error(path, e.inner().to_string())]
    })?;
    // The text parsed once already, so this walk only fails on shapes it cannot follow
    // (non-string YAML keys); sorted order is then the fallback.
    let outline = match format {
        Format::Json => serde_json::from_str::<Outline>(text).ok(),
        Format::Yaml => serde_saphyr::from_str_with_options::<Outline>(text, yaml_options()).ok(),
    }
    .unwrap_or_default();

    let mut c = Compiler {
        env,
        base_dir,
        diags: Vec::new(),
    };
    for path in &outline.duplicates {
        c.error(
            path.clone(),
            "duplicate key; only the last one would be used",
        );
    }
    let snapshot = c.build(raw, &outline, hex::encode(Sha256::digest(text.as_bytes())));
    if c.diags.iter().any(Diagnostic::is_error) {
        Err(c.diags)
    } else {
        Ok(Compiled {
            snapshot,
            warnings: c.diags,
        })
    }
}

fn yaml_options() -> serde_saphyr::Options {
    // Into an untyped Value, YAML 1.1 booleans would turn a model named `no` into `false`.
    serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
    }
}

fn parse_value(text: &str, format: Format) -> Result<serde_json::Value, Diagnostic> {
    let value = match format {
        Format::Json => serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| Diagnostic::error("", format!("invalid JSON: {e}")))?,
        Format::Yaml => {
            serde_saphyr::from_str_with_options::<serde_json::Value>(text, yaml_options())
                .map_err(|e| Diagnostic::error("", format!("invalid YAML: {e}")))?
        }
    };
    if value.is_null() {
        // An empty file is far more often a truncated write than an intent to serve nothing.
        return Err(Diagnostic::error("", "the policy file is empty"));
    }
    if !value.is_object() {
        return Err(Diagnostic::error(
            "",
            "the policy must be an object (a mapping) at the top level",
        ));
    }
    Ok(value)
}

/// Map entries in file order; keys the outline missed follow in sorted order.
fn in_order<T>(mut map: BTreeMap<String, T>, order: &[String]) -> Vec<(String, T)> {
    let mut out = Vec::with_capacity(map.len());
    for key in order {
        if let Some(v) = map.remove(key) {
            out.push((key.clone(), v));
        }
    }
    out.extend(map);
    out
}

fn fmt_dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn bad_price(v: f64) -> bool {
    !v.is_finite() || v < 0.0
}

const NON_NEGATIVE: &str = "must be a finite number >= 0";
const POSITIVE: &str = "must be greater than zero";

/// Ids end up inside endpoint ids (`provider/model`) and in `model: "a,b"` lists, so the
/// separators those use cannot appear in them.
fn check_provider_id(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("provider id must not be empty")
    } else if id.contains(['/', '#']) || id.chars().any(char::is_whitespace) {
        Some("provider id must not contain '/', '#' or whitespace")
    } else {
        None
    }
}

fn check_model_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("must not be empty")
    } else if name.contains(',') {
        Some("must not contain ',' (requests use it to list fallback models)")
    } else if name.trim() != name {
        Some("must not start or end with whitespace")
    } else {
        None
    }
}

fn valid_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn has_pem_certificate(bytes: &[u8]) -> bool {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    match find(bytes, BEGIN) {
        Some(start) => find(&bytes[start + BEGIN.len()..], END).is_some(),
        None => false,
    }
}

/// Header values cannot carry control characters; a key with one would fail on every request.
fn key_is_header_safe(key: &str) -> bool {
    !key.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

struct Compiler<'a> {
    env: &'a dyn Env,
    base_dir: &'a Path,
    diags: Vec<Diagnostic>,
}

/// Lookups over the models section, built before anything that names a model.
struct ModelNames {
    ids: Vec<Arc<str>>,
    index: HashMap<Arc<str>, usize>,
}

impl ModelNames {
    fn resolve(&self, name: &str) -> Option<&Arc<str>> {
        self.index.get(name).map(|&i| &self.ids[i])
    }
}

impl Compiler<'_> {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.diags.push(Diagnostic::error(path, message));
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.diags.push(Diagnostic::warning(path, message));
    }

    fn build(&mut self, raw: schema::Policy, outline: &Outline, sha256: String) -> Snapshot {
        let has_budgets = !raw.budgets.is_empty();

        // Providers.
        let raw_providers = in_order(raw.providers, &outline.providers);
        let declared: HashSet<String> = raw_providers.iter().map(|(id, _)| id.clone()).collect();
        let mut providers = Vec::new();
        let mut provider_index = HashMap::new();
        let mut intercept_index = HashMap::new();
        let mut claimed: HashMap<String, String> = HashMap::new();
        for (id, rp) in raw_providers.iter() {
            if let Some(p) = self.provider(id, rp, &mut claimed) {
                let i = providers.len();
                for h in &p.intercept_hosts {
                    intercept_index.insert(h.clone(), i);
                }
                provider_index.insert(p.id.clone(), i);
                providers.push(Arc::new(p));
            }
        }

        // Model names first: routes, budgets and aliases all refer to them.
        let raw_models = in_order(raw.models, &outline.models);
        if raw_models.is_empty() {
            self.warn(
                "models",
                "the policy defines no models; every request will be refused",
            );
        }
        let names = self.model_names(&raw_models);

        // Models and endpoints.
        let mut models = Vec::with_capacity(raw_models.len());
        let mut endpoints: Vec<Arc<Endpoint>> = Vec::new();
        let mut endpoint_index = HashMap::new();
        let mut endpoint_ids = HashSet::new();
        let mut used_providers = HashSet::new();
        for ((id, rm), model_id) in raw_models.into_iter().zip(&names.ids) {
            let mp = format!("models.{id}");
            if rm.endpoints.is_empty() {
                self.error(format!("{mp}.endpoints"), "model has no endpoints");
            }
            if rm.context_length == Some(0) {
                self.error(format!("{mp}.context_length"), POSITIVE);
            }
            let mut model_endpoints = Vec::with_capacity(rm.endpoints.len());
            let mut providers_seen = HashSet::new();
            for (j, re) in rm.endpoints.into_iter().enumerate() {
                let ep = format!("{mp}.endpoints[{j}]");
                used_providers.insert(re.provider.clone());
                let provider = match provider_index.get(re.provider.as_str()) {
                    Some(&i) => Some(Arc::clone(&providers[i])),
                    None => {
                        // A declared provider that failed its own checks was reported there.
                        if !declared.contains(&re.provider) {
                            self.error(
                                format!("{ep}.provider"),
                                format!("unknown provider \"{}\"", re.provider),
                            );
                        }
                        None
                    }
                };
                let upstream_model: Arc<str> = match re.upstream_model {
                    Some(u) if u.is_empty() => {
                        self.error(format!("{ep}.upstream_model"), "must not be empty");
                        Arc::clone(model_id)
                    }
                    Some(u) => u.into(),
                    None => Arc::clone(model_id),
                };
                let pricing = match re.pricing {
                    Some(p) => {
                        for (name, v) in [
                            ("prompt", p.prompt),
                            ("completion", p.completion),
                            ("request", p.request),
                        ] {
                            if bad_price(v) {
                                self.error(format!("{ep}.pricing.{name}"), NON_NEGATIVE);
                            }
                        }
                        switchyard_core::Pricing {
                            prompt: p.prompt,
                            completion: p.completion,
                            request: p.request,
                        }
                    }
                    None => {
                        if has_budgets {
                            self.warn(
                                ep.clone(),
                                "no pricing: this endpoint's spend counts as 0 against budgets",
                            );
                        }
                        switchyard_core::Pricing::default()
                    }
                };
                if re.max_output_tokens == Some(0) {
                    self.error(format!("{ep}.max_output_tokens"), POSITIVE);
                }
                let timeouts = self.timeout_overrides(&format!("{ep}.timeouts"), &re.timeouts);
                let mut supported_parameters: Vec<Arc<str>> =
                    re.supported_parameters.into_iter().map(Arc::from).collect();
                supported_parameters.sort();
                supported_parameters.dedup();

                let base = format!("{}/{}", re.provider, id);
                let endpoint_id = if providers_seen.insert(re.provider.clone()) {
                    base
                } else {
                    format!("{base}#{upstream_model}")
                };
                if !endpoint_ids.insert(endpoint_id.clone()) {
                    self.error(
                        ep,
                        format!(
                            "duplicate endpoint id \"{endpoint_id}\"; give each endpoint of one \
                             provider a different upstream_model"
                        ),
                    );
                    continue;
                }
                let Some(provider) = provider else { continue };
                let endpoint = Arc::new(Endpoint {
                    id: endpoint_id.into(),
                    model: Arc::clone(model_id),
                    provider,
                    upstream_model,
                    pricing,
                    max_output_tokens: re.max_output_tokens,
                    quantization: re.quantization.map(Arc::from),
                    supported_parameters,
                    supports_prefill: re.supports_prefill,
                    timeouts,
                });
                endpoint_index.insert(Arc::clone(&endpoint.id), endpoints.len());
                endpoints.push(Arc::clone(&endpoint));
                model_endpoints.push(endpoint);
            }
            models.push(Arc::new(Model {
                id: Arc::clone(model_id),
                aliases: rm.aliases.into_iter().map(Arc::from).collect(),
                context_length: rm.context_length,
                endpoints: model_endpoints,
            }));
        }
        for (id, _) in &raw_providers {
            if !used_providers.contains(id) {
                self.warn(
                    format!("providers.{id}"),
                    format!("provider \"{id}\" is not used by any endpoint"),
                );
            }
        }

        // Defaults before routes: route retry overrides are checked against them.
        let defaults = self.defaults(raw.defaults, &declared);

        // Routes.
        let mut routes = Vec::new();
        let mut route_index = HashMap::new();
        let mut route_by_model: HashMap<Arc<str>, usize> = HashMap::new();
        for (id, rr) in in_order(raw.routes, &outline.routes) {
            let rp = format!("routes.{id}");
            if id.is_empty() {
                self.error(rp.clone(), "route id must not be empty");
            }
            let ri = routes.len();
            let mut match_models: Vec<Arc<str>> = Vec::new();
            for (j, name) in rr.match_models.iter().enumerate() {
                let path = format!("{rp}.match_models[{j}]");
                let Some(mid) = names.resolve(name) else {
                    self.error(path, format!("unknown model \"{name}\""));
                    continue;
                };
                match route_by_model.get(mid) {
                    Some(&other) if other != ri => {
                        let other: &Arc<Route> = &routes[other];
                        self.error(
                            path,
                            format!(
                                "model \"{mid}\" is already matched by route \"{}\"",
                                other.id
                            ),
                        );
                    }
                    Some(_) => {}
                    None => {
                        route_by_model.insert(Arc::clone(mid), ri);
                        match_models.push(Arc::clone(mid));
                    }
                }
            }
            let mut route_models: Vec<Arc<str>> = Vec::new();
            for (j, name) in rr.models.iter().enumerate() {
                match names.resolve(name) {
                    Some(mid) if !route_models.contains(mid) => route_models.push(Arc::clone(mid)),
                    Some(_) => {}
                    None => self.error(
                        format!("{rp}.models[{j}]"),
                        format!("unknown model \"{name}\""),
                    ),
                }
            }
            if let Some(prefs) = &rr.provider {
                self.prefs(&format!("{rp}.provider"), prefs, &declared);
            }
            let timeouts = self.timeout_overrides(&format!("{rp}.timeouts"), &rr.timeouts);
            let retry = self.retry_overrides(&format!("{rp}.retry"), &rr.retry, &defaults.retry);
            if rr.max_tokens == Some(0) {
                self.error(format!("{rp}.max_tokens"), POSITIVE);
            }
            let id: Arc<str> = id.into();
            route_index.insert(Arc::clone(&id), ri);
            routes.push(Arc::new(Route {
                id,
                match_models,
                models: route_models,
                provider: rr.provider,
                timeouts,
                retry,
                max_tokens: rr.max_tokens,
                fit_to_budget: rr.fit_to_budget,
            }));
        }

        let budgets = self.budgets(raw.budgets, &names, &route_index);

        Snapshot {
            sha256,
            providers,
            provider_index,
            intercept_index,
            models,
            model_index: names.index,
            endpoints,
            endpoint_index,
            routes,
            route_index,
            route_by_model,
            defaults,
            budgets,
        }
    }

    fn provider(
        &mut self,
        id: &str,
        rp: &schema::Provider,
        claimed: &mut HashMap<String, String>,
    ) -> Option<Provider> {
        let path = format!("providers.{id}");
        if let Some(msg) = check_provider_id(id) {
            self.error(path.clone(), msg);
        }
        let url = match parse_base_url(&rp.base_url) {
            Ok(u) => Some(u),
            Err(msg) => {
                self.error(format!("{path}.base_url"), msg);
                None
            }
        };
        if let Some(u) = &url
            && !rp.allow_private_network
            && is_private_host(&u.host)
        {
            self.error(
                format!("{path}.base_url"),
                format!(
                    "host \"{}\" is a loopback, private or link-local address; set \
                     allow_private_network to true to allow it",
                    u.host
                ),
            );
        }
        let api_key = rp
            .api_key
            .as_ref()
            .and_then(|k| self.api_key(&format!("{path}.api_key"), k));
        let ca_pem = rp
            .ca_file
            .as_deref()
            .and_then(|f| self.ca_file(&format!("{path}.ca_file"), f));

        let mut intercept_hosts: Vec<String> = Vec::new();
        for (i, h) in rp.intercept_hosts.iter().enumerate() {
            let hp = format!("{path}.intercept_hosts[{i}]");
            let host = h.trim().trim_end_matches('.').to_ascii_lowercase();
            if !valid_host_name(&host) {
                self.error(hp, format!("\"{h}\" is not a host name"));
                continue;
            }
            if intercept_hosts.contains(&host) {
                continue;
            }
            if let Some(owner) = claimed.get(&host) {
                self.error(
                    hp,
                    format!("host \"{host}\" is already intercepted for provider \"{owner}\""),
                );
                continue;
            }
            claimed.insert(host.clone(), id.to_owned());
            intercept_hosts.push(host);
        }

        let url = url?;
        Some(Provider {
            id: id.into(),
            api: rp.api,
            base_url: url.base_url,
            https: url.https,
            authority: url.authority,
            host: url.host,
            port: url.port,
            base_path: url.base_path,
            api_key,
            data_collection: rp.data_collection.unwrap_or(DataCollection::Allow),
            zdr: rp.zdr.unwrap_or(false),
            intercept_hosts,
            allow_private_network: rp.allow_private_network,
            ca_pem,
        })
    }

    /// Messages here name the variable or file, never the key.
    fn api_key(&mut self, path: &str, k: &schema::ApiKey) -> Option<Secret> {
        const NO_KEY: &str = "requests to this provider carry no API key";
        let value = match (&k.env, &k.file) {
            (Some(_), Some(_)) | (None, None) => {
                self.error(path, "give exactly one of env or file");
                return None;
            }
            (Some(name), None) => {
                let vp = format!("{path}.env");
                if name.is_empty() {
                    self.error(vp, "environment variable name must not be empty");
                    return None;
                }
                match self.env.var(name) {
                    Some(v) if !v.is_empty() => v,
                    _ => {
                        self.warn(
                            vp,
                            format!("environment variable \"{name}\" is not set; {NO_KEY}"),
                        );
                        return None;
                    }
                }
            }
            (None, Some(file)) => {
                let fp = format!("{path}.file");
                let full = self.base_dir.join(file);
                let bytes = match self.env.read_file(&full) {
                    Ok(b) => b,
                    Err(e) => {
                        self.warn(
                            fp,
                            format!("cannot read key file \"{}\": {e}; {NO_KEY}", full.display()),
                        );
                        return None;
                    }
                };
                let Ok(text) = String::from_utf8(bytes) else {
                    self.warn(
                        fp,
                        format!("key file \"{}\" is not UTF-8; {NO_KEY}", full.display()),
                    );
                    return None;
                };
                // Files written by `echo` or editors end in a newline that is not part of the key.
                let key = text.trim_end_matches(['\r', '\n']);
                if key.is_empty() {
                    self.warn(
                        fp,
                        format!("key file \"{}\" is empty; {NO_KEY}", full.display()),
                    );
                    return None;
                }
                key.to_owned()
            }
        };
        if !key_is_header_safe(&value) {
            self.error(
                path,
                "the API key contains control characters that cannot be sent in an HTTP header",
            );
            return None;
        }
        Some(Secret::new(value))
    }

    fn ca_file(&mut self, path: &str, file: &str) -> Option<Arc<[u8]>> {
        let full = self.base_dir.join(file);
        match self.env.read_file(&full) {
            Err(e) => {
                self.error(
                    path,
                    format!("cannot read CA file \"{}\": {e}", full.display()),
                );
                None
            }
            Ok(bytes) if !has_pem_certificate(&bytes) => {
                self.error(
                    path,
                    format!(
                        "\"{}\" contains no PEM certificate (-----BEGIN CERTIFICATE-----)",
                        full.display()
                    ),
                );
                None
            }
            Ok(bytes) => Some(bytes.into()),
        }
    }

    /// Checks every model id and alias; the index maps both to the model's position.
    fn model_names(&mut self, raw: &[(String, schema::Model)]) -> ModelNames {
        let ids: Vec<Arc<str>> = raw.iter().map(|(id, _)| Arc::from(id.as_str())).collect();
        let mut index: HashMap<Arc<str>, usize> = HashMap::new();
        for (i, id) in ids.iter().enumerate() {
            if let Some(msg) = check_model_name(id) {
                self.error(format!("models.{id}"), format!("model id {msg}"));
            }
            index.insert(Arc::clone(id), i);
        }
        let id_pos: HashMap<&str, usize> = raw
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.as_str(), i))
            .collect();
        let mut alias_owner: HashMap<&str, usize> = HashMap::new();
        for (i, (id, m)) in raw.iter().enumerate() {
            for (j, alias) in m.aliases.iter().enumerate() {
                let path = format!("models.{id}.aliases[{j}]");
                if let Some(msg) = check_model_name(alias) {
                    self.error(path, format!("alias {msg}"));
                    continue;
                }
                let clash = if let Some(&owner) = id_pos.get(alias.as_str()) {
                    Some(if owner == i {
                        format!("alias \"{alias}\" is the model's own id")
                    } else {
                        format!(
                            "alias \"{alias}\" is already the id of model \"{}\"",
                            ids[owner]
                        )
                    })
                } else if let Some(&owner) = alias_owner.get(alias.as_str()) {
                    Some(if owner == i {
                        format!("alias \"{alias}\" is repeated")
                    } else {
                        format!(
                            "alias \"{alias}\" is already an alias of model \"{}\"",
                            ids[owner]
                        )
                    })
                } else {
                    None
                };
                match clash {
                    Some(msg) => self.error(path, msg),
                    None => {
                        alias_owner.insert(alias, i);
                        index.insert(Arc::from(alias.as_str()), i);
                    }
                }
            }
        }
        ModelNames { ids, index }
    }

    fn timeout_overrides(&mut self, path: &str, t: &schema::Timeouts) -> TimeoutOverrides {
        let o = TimeoutOverrides {
            connect: dur(t.connect),
            first_token: dur(t.first_token),
            idle: dur(t.idle),
            attempt: dur(t.attempt),
            total: dur(t.total),
        };
        for (name, v) in [
            ("connect", o.connect),
            ("first_token", o.first_token),
            ("idle", o.idle),
            ("attempt", o.attempt),
            ("total", o.total),
        ] {
            if v == Some(Duration::ZERO) {
                self.error(format!("{path}.{name}"), POSITIVE);
            }
        }
        o
    }

    fn retry_overrides(&mut self, path: &str, r: &schema::Retry, base: &Retry) -> RetryOverrides {
        let o = RetryOverrides {
            max_attempts: r.max_attempts,
            same_endpoint_retries: r.same_endpoint_retries,
            backoff_base: dur(r.backoff_base),
            backoff_max: dur(r.backoff_max),
            budget_ratio: r.budget_ratio,
            budget_min_per_s: r.budget_min_per_s,
            max_retry_after_wait: dur(r.max_retry_after_wait),
            continuation: r.continuation,
            buffer: r.buffer,
        };
        if o.max_attempts == Some(0) {
            self.error(format!("{path}.max_attempts"), "must be at least 1");
        }
        if let Some(v) = o.budget_ratio
            && !(0.0..=1.0).contains(&v)
        {
            self.error(format!("{path}.budget_ratio"), "must be between 0 and 1");
        }
        if let Some(v) = o.budget_min_per_s
            && bad_price(v)
        {
            self.error(format!("{path}.budget_min_per_s"), NON_NEGATIVE);
        }
        let eff = base.overlay(&o);
        if eff.backoff_base > eff.backoff_max {
            let field = if o.backoff_base.is_some() {
                "backoff_base"
            } else {
                "backoff_max"
            };
            self.error(
                format!("{path}.{field}"),
                format!(
                    "backoff_base ({}) is greater than backoff_max ({})",
                    fmt_dur(eff.backoff_base),
                    fmt_dur(eff.backoff_max)
                ),
            );
        }
        o
    }

    fn prefs(&mut self, path: &str, p: &ProviderPrefs, declared: &HashSet<String>) {
        if let Some(mp) = &p.max_price {
            for (name, v) in mp.values() {
                if bad_price(v) {
                    self.error(format!("{path}.max_price.{name}"), NON_NEGATIVE);
                }
            }
        }
        for (name, t) in [
            ("preferred_min_throughput", &p.preferred_min_throughput),
            ("preferred_max_latency", &p.preferred_max_latency),
        ] {
            if let Some(t) = t
                && t.values().any(bad_price)
            {
                self.error(format!("{path}.{name}"), NON_NEGATIVE);
            }
        }
        for (name, list) in [
            ("order", &p.order),
            ("only", &p.only),
            ("ignore", &p.ignore),
        ] {
            for (i, id) in list.iter().flatten().enumerate() {
                if !declared.contains(id) {
                    self.warn(
                        format!("{path}.{name}[{i}]"),
                        format!("unknown provider \"{id}\"; it matches no endpoint"),
                    );
                }
            }
        }
    }

    fn defaults(&mut self, d: schema::Defaults, declared: &HashSet<String>) -> Defaults {
        let provider = d.provider.unwrap_or_default();
        self.prefs("defaults.provider", &provider, declared);
        let timeouts =
            Timeouts::default().overlay(&self.timeout_overrides("defaults.timeouts", &d.timeouts));
        let retry = Retry::default().overlay(&self.retry_overrides(
            "defaults.retry",
            &d.retry,
            &Retry::default(),
        ));

        let b = &d.breaker;
        let built_in = Breaker::default();
        let breaker = Breaker {
            consecutive_failures: b
                .consecutive_failures
                .unwrap_or(built_in.consecutive_failures),
            failure_rate: b.failure_rate.unwrap_or(built_in.failure_rate),
            window: dur(b.window).unwrap_or(built_in.window),
            min_requests: b.min_requests.unwrap_or(built_in.min_requests),
            open_base: dur(b.open_base).unwrap_or(built_in.open_base),
            open_max: dur(b.open_max).unwrap_or(built_in.open_max),
        };
        if breaker.consecutive_failures == 0 {
            self.error(
                "defaults.breaker.consecutive_failures",
                "must be at least 1",
            );
        }
        if !(0.0..=1.0).contains(&breaker.failure_rate) {
            self.error("defaults.breaker.failure_rate", "must be between 0 and 1");
        }
        for (name, v) in [
            ("window", breaker.window),
            ("open_base", breaker.open_base),
            ("open_max", breaker.open_max),
        ] {
            if v.is_zero() {
                self.error(format!("defaults.breaker.{name}"), POSITIVE);
            }
        }
        if breaker.open_base > breaker.open_max {
            self.error(
                "defaults.breaker.open_max",
                format!(
                    "open_max ({}) is less than open_base ({})",
                    fmt_dur(breaker.open_max),
                    fmt_dur(breaker.open_base)
                ),
            );
        }

        let l = &d.limits;
        let built_in = Limits::default();
        let limits = Limits {
            max_request_bytes: l.max_request_bytes.unwrap_or(built_in.max_request_bytes),
            max_response_bytes: l.max_response_bytes.unwrap_or(built_in.max_response_bytes),
            max_sse_line_bytes: l.max_sse_line_bytes.unwrap_or(built_in.max_sse_line_bytes),
            header_read_timeout: dur(l.header_read_timeout).unwrap_or(built_in.header_read_timeout),
            max_in_flight_per_endpoint: l
                .max_in_flight_per_endpoint
                .unwrap_or(built_in.max_in_flight_per_endpoint),
        };
        for (name, zero) in [
            ("max_request_bytes", limits.max_request_bytes == 0),
            ("max_response_bytes", limits.max_response_bytes == 0),
            ("max_sse_line_bytes", limits.max_sse_line_bytes == 0),
            ("header_read_timeout", limits.header_read_timeout.is_zero()),
            (
                "max_in_flight_per_endpoint",
                limits.max_in_flight_per_endpoint == 0,
            ),
        ] {
            if zero {
                self.error(format!("defaults.limits.{name}"), POSITIVE);
            }
        }

        Defaults {
            provider,
            timeouts,
            retry,
            breaker,
            limits,
        }
    }

    fn budgets(
        &mut self,
        raw: Vec<schema::Budget>,
        names: &ModelNames,
        route_index: &HashMap<Arc<str>, usize>,
    ) -> Vec<Budget> {
        let mut ids = HashSet::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, b) in raw.into_iter().enumerate() {
            let bp = format!("budgets[{i}]");
            if b.id.is_empty() {
                self.error(format!("{bp}.id"), "must not be empty");
            } else if !ids.insert(b.id.clone()) {
                self.error(
                    format!("{bp}.id"),
                    format!("duplicate budget id \"{}\"", b.id),
                );
            }
            let scope = match b.scope {
                schema::Scope::Global => BudgetScope::Global,
                schema::Scope::Route(r) => {
                    if !route_index.contains_key(r.as_str()) {
                        self.error(
                            format!("{bp}.scope.route"),
                            format!("unknown route \"{r}\""),
                        );
                    }
                    BudgetScope::Route(r.into())
                }
                schema::Scope::Tag(t) => {
                    if t.is_empty() {
                        self.error(format!("{bp}.scope.tag"), "must not be empty");
                    }
                    BudgetScope::Tag(t.into())
                }
                schema::Scope::Model(m) => match names.resolve(&m) {
                    Some(id) => BudgetScope::Model(Arc::clone(id)),
                    None => {
                        self.error(
                            format!("{bp}.scope.model"),
                            format!("unknown model \"{m}\""),
                        );
                        BudgetScope::Model(m.into())
                    }
                },
            };
            if b.daily_usd.is_none()
                && b.monthly_usd.is_none()
                && b.max_cost_usd.is_none()
                && b.max_tokens.is_none()
            {
                self.error(
                    bp.clone(),
                    "budget sets none of daily_usd, monthly_usd, max_cost_usd, max_tokens",
                );
            }
            if b.max_tokens == Some(0) {
                self.error(format!("{bp}.max_tokens"), "must be greater than 0");
            }
            let timezone = match b.timezone.as_deref() {
                None => jiff::tz::TimeZone::UTC,
                Some(name) => match jiff::tz::TimeZone::get(name) {
                    Ok(tz) => tz,
                    Err(_) => {
                        self.error(
                            format!("{bp}.timezone"),
                            format!("unknown time zone \"{name}\" (use an IANA name such as \"Europe/Berlin\")"),
                        );
                        jiff::tz::TimeZone::UTC
                    }
                },
            };
            for (name, v) in [
                ("daily_usd", b.daily_usd),
                ("monthly_usd", b.monthly_usd),
                ("max_cost_usd", b.max_cost_usd),
            ] {
                if let Some(v) = v
                    && bad_price(v)
                {
                    self.error(format!("{bp}.{name}"), NON_NEGATIVE);
                }
            }
            out.push(Budget {
                id: b.id.into(),
                scope,
                daily_usd: b.daily_usd,
                monthly_usd: b.monthly_usd,
                timezone,
                max_cost_usd: b.max_cost_usd,
                max_tokens: b.max_tokens,
            });
        }
        out
    }
}
