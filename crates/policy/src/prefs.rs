//! OpenRouter's request-level `provider` object. The policy uses it for route and default
//! preferences, and the request parser accepts it verbatim from request bodies, so the
//! deserializer here must accept exactly what OpenRouter clients send.

use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Whether a provider may store or train on request data (OpenRouter's `data_collection`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataCollection {
    #[default]
    Allow,
    Deny,
}

/// Provider preferences, OpenRouter's `provider` object. Every field is optional; an unset
/// field means "no preference" and is filled from the next layer out (request over route over
/// policy defaults, see [`ProviderPrefs::overlay`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderPrefs {
    /// Provider ids to try first, in this order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<Vec<String>>,
    /// Whether providers outside `order`/`only` may serve when those fail (OpenRouter: true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_fallbacks: Option<bool>,
    /// Only use endpoints that declare every parameter the request uses (OpenRouter: false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_parameters: Option<bool>,
    /// `deny` keeps requests away from providers that may store data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_collection: Option<DataCollection>,
    /// Only use zero-data-retention providers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zdr: Option<bool>,
    /// OpenRouter's distillation filter; accepted so clients can send it, Switchyard has no
    /// distillation metadata to enforce it with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforce_distillable_text: Option<bool>,
    /// Provider ids allowed for this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<String>>,
    /// Provider ids never used for this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Vec<String>>,
    /// Allowed quantization levels (`int4`, `fp8`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantizations: Option<Vec<String>>,
    /// Explicit ordering by price, throughput or latency instead of price-weighted balancing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort: Option<SortSpec>,
    /// Tokens per second; endpoints measured below it are pushed down, not removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_min_throughput: Option<Threshold>,
    /// Seconds; endpoints measured above it are pushed down, not removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_max_latency: Option<Threshold>,
    /// Price ceilings; dearer endpoints are filtered out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_price: Option<MaxPrice>,
}

impl ProviderPrefs {
    /// These preferences with every field that `o` sets replaced by `o`'s value.
    pub fn overlay(&self, o: &ProviderPrefs) -> ProviderPrefs {
        fn pick<T: Clone>(base: &Option<T>, over: &Option<T>) -> Option<T> {
            over.as_ref().or(base.as_ref()).cloned()
        }
        ProviderPrefs {
            order: pick(&self.order, &o.order),
            allow_fallbacks: pick(&self.allow_fallbacks, &o.allow_fallbacks),
            require_parameters: pick(&self.require_parameters, &o.require_parameters),
            data_collection: pick(&self.data_collection, &o.data_collection),
            zdr: pick(&self.zdr, &o.zdr),
            enforce_distillable_text: pick(
                &self.enforce_distillable_text,
                &o.enforce_distillable_text,
            ),
            only: pick(&self.only, &o.only),
            ignore: pick(&self.ignore, &o.ignore),
            quantizations: pick(&self.quantizations, &o.quantizations),
            sort: pick(&self.sort, &o.sort),
            preferred_min_throughput: pick(
                &self.preferred_min_throughput,
                &o.preferred_min_throughput,
            ),
            preferred_max_latency: pick(&self.preferred_max_latency, &o.preferred_max_latency),
            max_price: pick(&self.max_price, &o.max_price),
        }
    }
}

/// What to sort endpoints by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortBy {
    /// Cheapest first.
    Price,
    /// Highest measured tokens per second first.
    Throughput,
    /// Lowest measured time to first token first.
    Latency,
}

impl SortBy {
    const NAMES: &'static [&'static str] = &["price", "throughput", "latency"];

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "price" => Some(Self::Price),
            "throughput" => Some(Self::Throughput),
            "latency" => Some(Self::Latency),
            _ => None,
        }
    }
}

/// How a sort treats fallback models.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortPartition {
    /// Sort endpoints within each model; fallback models stay fallbacks (OpenRouter's default).
    #[default]
    Model,
    /// Sort all endpoints of all candidate models together.
    None,
}

/// The object form of `sort`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SortOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<SortBy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<SortPartition>,
}

/// `sort`: either `"price"` / `"throughput"` / `"latency"`, or `{"by": .., "partition": ..}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SortSpec {
    By(SortBy),
    Options(SortOptions),
}

impl SortSpec {
    /// The sort key, if any.
    pub fn by(&self) -> Option<SortBy> {
        match self {
            Self::By(by) => Some(*by),
            Self::Options(o) => o.by,
        }
    }

    /// The partition, defaulting to [`SortPartition::Model`].
    pub fn partition(&self) -> SortPartition {
        match self {
            Self::By(_) => SortPartition::Model,
            Self::Options(o) => o.partition.unwrap_or_default(),
        }
    }
}

impl<'de> Deserialize<'de> for SortSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SortSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "\"price\", \"throughput\", \"latency\" or an object {\"by\", \"partition\"}",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<SortSpec, E> {
                SortBy::from_name(v)
                    .map(SortSpec::By)
                    .ok_or_else(|| E::unknown_variant(v, SortBy::NAMES))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SortSpec, A::Error> {
                SortOptions::deserialize(MapAccessDeserializer::new(map)).map(SortSpec::Options)
            }
        }
        d.deserialize_any(V)
    }
}

/// A `preferred_*` threshold: a plain number (applies to p50) or per-percentile cutoffs, all of
/// which must hold for an endpoint to keep its place.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Threshold {
    Value(f64),
    Percentiles {
        #[serde(skip_serializing_if = "Option::is_none")]
        p50: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        p75: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        p90: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        p99: Option<f64>,
    },
}

impl Threshold {
    /// Every number in the threshold, for validation.
    pub fn values(&self) -> impl Iterator<Item = f64> {
        let all = match *self {
            Self::Value(v) => [Some(v), None, None, None],
            Self::Percentiles { p50, p75, p90, p99 } => [p50, p75, p90, p99],
        };
        all.into_iter().flatten()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Percentiles {
    p50: Option<f64>,
    p75: Option<f64>,
    p90: Option<f64>,
    p99: Option<f64>,
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Threshold;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or an object with any of p50, p75, p90, p99")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Threshold, E> {
                Ok(Threshold::Value(v as f64))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Threshold, E> {
                Ok(Threshold::Value(v as f64))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Threshold, E> {
                Ok(Threshold::Value(v))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Threshold, A::Error> {
                let p = Percentiles::deserialize(MapAccessDeserializer::new(map))?;
                Ok(Threshold::Percentiles {
                    p50: p.p50,
                    p75: p.p75,
                    p90: p.p90,
                    p99: p.p99,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Price ceilings: `prompt` and `completion` in USD per million tokens, `request` in USD per
/// request, `image` in USD per image, `audio` in USD per audio unit. OpenRouter's SDKs send
/// these as numbers or as numeric strings; both are accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPrice {
    #[serde(
        default,
        deserialize_with = "price",
        skip_serializing_if = "Option::is_none"
    )]
    pub prompt: Option<f64>,
    #[serde(
        default,
        deserialize_with = "price",
        skip_serializing_if = "Option::is_none"
    )]
    pub completion: Option<f64>,
    #[serde(
        default,
        deserialize_with = "price",
        skip_serializing_if = "Option::is_none"
    )]
    pub request: Option<f64>,
    #[serde(
        default,
        deserialize_with = "price",
        skip_serializing_if = "Option::is_none"
    )]
    pub image: Option<f64>,
    #[serde(
        default,
        deserialize_with = "price",
        skip_serializing_if = "Option::is_none"
    )]
    pub audio: Option<f64>,
}

impl MaxPrice {
    /// Every ceiling that is set, named, for validation.
    pub fn values(&self) -> impl Iterator<Item = (&'static str, f64)> {
        [
            ("prompt", self.prompt),
            ("completion", self.completion),
            ("request", self.request),
            ("image", self.image),
            ("audio", self.audio),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.map(|v| (name, v)))
    }
}

fn price<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<f64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a price as a number or a numeric string")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Option<f64>, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Option<f64>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<f64>, D::Error> {
            d.deserialize_any(self)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<f64>, E> {
            Ok(Some(v as f64))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<f64>, E> {
            Ok(Some(v as f64))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<f64>, E> {
            Ok(Some(v))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<f64>, E> {
            v.trim()
                .parse::<f64>()
                .map(Some)
                .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<ProviderPrefs, String> {
        serde_path_to_error::deserialize(v).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn full_object_parses() {
        let p = parse(json!({
            "order": ["a", "b"], "allow_fallbacks": false, "require_parameters": true,
            "data_collection": "deny", "zdr": true, "enforce_distillable_text": false,
            "only": ["a"], "ignore": ["c"], "quantizations": ["fp8", "int4"],
            "sort": "throughput", "preferred_min_throughput": 50,
            "preferred_max_latency": {"p50": 1.5, "p99": 4},
            "max_price": {"prompt": 1, "completion": "2.5", "request": 0.01}
        }))
        .unwrap();
        assert_eq!(
            p.order.as_deref(),
            Some(&["a".to_owned(), "b".to_owned()][..])
        );
        assert_eq!(p.allow_fallbacks, Some(false));
        assert_eq!(p.require_parameters, Some(true));
        assert_eq!(p.data_collection, Some(DataCollection::Deny));
        assert_eq!(p.zdr, Some(true));
        assert_eq!(p.enforce_distillable_text, Some(false));
        assert_eq!(p.only.as_deref(), Some(&["a".to_owned()][..]));
        assert_eq!(p.ignore.as_deref(), Some(&["c".to_owned()][..]));
        assert_eq!(p.quantizations.as_ref().map(Vec::len), Some(2));
        assert_eq!(p.sort, Some(SortSpec::By(SortBy::Throughput)));
        assert_eq!(p.preferred_min_throughput, Some(Threshold::Value(50.0)));
        assert_eq!(
            p.preferred_max_latency,
            Some(Threshold::Percentiles {
                p50: Some(1.5),
                p75: None,
                p90: None,
                p99: Some(4.0)
            })
        );
        let mp = p.max_price.unwrap();
        assert_eq!(mp.prompt, Some(1.0));
        assert_eq!(mp.completion, Some(2.5));
        assert_eq!(mp.request, Some(0.01));
        assert_eq!(mp.image, None);
    }

    #[test]
    fn empty_object_is_all_none() {
        assert_eq!(parse(json!({})).unwrap(), ProviderPrefs::default());
    }

    #[test]
    fn sort_string_and_object_forms() {
        let s = parse(json!({"sort": "price"})).unwrap().sort.unwrap();
        assert_eq!(s, SortSpec::By(SortBy::Price));
        assert_eq!(s.by(), Some(SortBy::Price));
        assert_eq!(s.partition(), SortPartition::Model);

        let s = parse(json!({"sort": {"by": "latency", "partition": "none"}}))
            .unwrap()
            .sort
            .unwrap();
        assert_eq!(
            s,
            SortSpec::Options(SortOptions {
                by: Some(SortBy::Latency),
                partition: Some(SortPartition::None)
            })
        );
        assert_eq!(s.by(), Some(SortBy::Latency));
        assert_eq!(s.partition(), SortPartition::None);

        let s = parse(json!({"sort": {"by": "price"}}))
            .unwrap()
            .sort
            .unwrap();
        assert_eq!(s.partition(), SortPartition::Model);
    }

    #[test]
    fn sort_rejects_unknown_values_with_path() {
        let e = parse(json!({"sort": "fastest"})).unwrap_err();
        assert!(e.starts_with("sort: unknown variant `fastest`"), "{e}");
        let e = parse(json!({"sort": {"by": "price", "order": "asc"}})).unwrap_err();
        assert!(e.starts_with("sort.order: unknown field `order`"), "{e}");
        let e = parse(json!({"sort": {"partition": "provider"}})).unwrap_err();
        assert!(e.starts_with("sort.partition: unknown variant"), "{e}");
        let e = parse(json!({"sort": 3})).unwrap_err();
        assert!(e.starts_with("sort: invalid type"), "{e}");
    }

    #[test]
    fn threshold_number_and_percentiles() {
        let p =
            parse(json!({"preferred_min_throughput": 12.5, "preferred_max_latency": 3})).unwrap();
        assert_eq!(p.preferred_min_throughput, Some(Threshold::Value(12.5)));
        assert_eq!(p.preferred_max_latency, Some(Threshold::Value(3.0)));

        let p = parse(json!({"preferred_min_throughput": {"p75": 10, "p90": 20.5}})).unwrap();
        let t = p.preferred_min_throughput.unwrap();
        assert_eq!(
            t,
            Threshold::Percentiles {
                p50: None,
                p75: Some(10.0),
                p90: Some(20.5),
                p99: None
            }
        );
        assert_eq!(t.values().collect::<Vec<_>>(), vec![10.0, 20.5]);

        let e = parse(json!({"preferred_max_latency": {"p95": 1}})).unwrap_err();
        assert!(
            e.starts_with("preferred_max_latency.p95: unknown field `p95`"),
            "{e}"
        );
        let e = parse(json!({"preferred_max_latency": "fast"})).unwrap_err();
        assert!(e.starts_with("preferred_max_latency: invalid type"), "{e}");
    }

    #[test]
    fn rejects_unknown_key_with_path() {
        let e = parse(json!({"orderr": ["a"]})).unwrap_err();
        assert!(e.starts_with("orderr: unknown field `orderr`"), "{e}");
        let e = parse(json!({"max_price": {"tokens": 1}})).unwrap_err();
        assert!(e.starts_with("max_price.tokens: unknown field"), "{e}");
        let e = parse(json!({"max_price": {"prompt": "cheap"}})).unwrap_err();
        assert!(e.starts_with("max_price.prompt: invalid value"), "{e}");
        let e = parse(json!({"data_collection": "maybe"})).unwrap_err();
        assert!(e.starts_with("data_collection: unknown variant"), "{e}");
    }

    #[test]
    fn max_price_null_is_unset() {
        let p = parse(json!({"max_price": {"prompt": null, "completion": 3}})).unwrap();
        let mp = p.max_price.unwrap();
        assert_eq!(mp.prompt, None);
        assert_eq!(mp.values().collect::<Vec<_>>(), vec![("completion", 3.0)]);
    }

    #[test]
    fn serializes_back_to_the_same_shape() {
        let input = json!({
            "order": ["a"], "sort": {"by": "price", "partition": "none"},
            "preferred_min_throughput": {"p50": 10.0}, "preferred_max_latency": 2.0,
            "max_price": {"prompt": 1.0}, "data_collection": "deny"
        });
        let p = parse(input.clone()).unwrap();
        assert_eq!(serde_json::to_value(&p).unwrap(), input);
        let again: ProviderPrefs =
            serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(again, p);
        let s = serde_json::to_value(ProviderPrefs {
            sort: Some(SortSpec::By(SortBy::Latency)),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s, json!({"sort": "latency"}));
    }

    #[test]
    fn parses_from_request_json_text() {
        let p: ProviderPrefs = serde_json::from_str(
            r#"{"sort":{"by":"throughput"},"preferred_max_latency":{"p90":2}}"#,
        )
        .unwrap();
        assert_eq!(p.sort.unwrap().by(), Some(SortBy::Throughput));
        assert!(matches!(
            p.preferred_max_latency,
            Some(Threshold::Percentiles { p90: Some(v), .. }) if v == 2.0
        ));
    }

    #[test]
    fn overlay_prefers_the_overriding_side() {
        let base = ProviderPrefs {
            order: Some(vec!["a".into()]),
            zdr: Some(false),
            sort: Some(SortSpec::By(SortBy::Price)),
            ..Default::default()
        };
        let over = ProviderPrefs {
            zdr: Some(true),
            only: Some(vec!["b".into()]),
            ..Default::default()
        };
        let m = base.overlay(&over);
        assert_eq!(m.order, Some(vec!["a".to_owned()]));
        assert_eq!(m.zdr, Some(true));
        assert_eq!(m.only, Some(vec!["b".to_owned()]));
        assert_eq!(m.sort, Some(SortSpec::By(SortBy::Price)));
        assert_eq!(m.ignore, None);
        assert_eq!(base.overlay(&ProviderPrefs::default()), base);
    }
}
