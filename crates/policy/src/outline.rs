//! A second, shape-only walk over the source text. `serde_json::Value` keeps object keys
//! sorted and silently keeps the last of two equal keys, so this walk recovers what the Value
//! loses: the file order of providers, models and routes, and the paths of duplicate keys.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The top-level sections whose key order is kept.
const ORDERED: [&str; 3] = ["providers", "models", "routes"];

#[derive(Debug, Default)]
pub(crate) struct Outline {
    pub providers: Vec<String>,
    pub models: Vec<String>,
    pub routes: Vec<String>,
    /// Paths (`models.gpt-4o`) of keys that appear twice in the same object.
    pub duplicates: Vec<String>,
}

impl<'de> serde::Deserialize<'de> for Outline {
    /// Walks any self-describing deserializer.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = Outline::default();
        Walk {
            path: String::new(),
            depth: 0,
            out: &mut out,
        }
        .deserialize(d)?;
        Ok(out)
    }
}

impl Outline {
    fn section(&mut self, name: &str) -> Option<&mut Vec<String>> {
        match name {
            "providers" => Some(&mut self.providers),
            "models" => Some(&mut self.models),
            "routes" => Some(&mut self.routes),
            _ => None,
        }
    }
}

struct Walk<'a> {
    path: String,
    depth: usize,
    out: &'a mut Outline,
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        Ok(())
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        loop {
            let item = Walk {
                path: format!("{}[{i}]", self.path),
                depth: self.depth + 1,
                out: &mut *self.out,
            };
            if seq.next_element_seed(item)?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        let keep_order = self.depth == 1 && ORDERED.contains(&self.path.as_str());
        while let Some(key) = map.next_key::<String>()? {
            let path = child(&self.path, &key);
            if !seen.insert(key.clone()) {
                self.out.duplicates.push(path.clone());
            } else if keep_order && let Some(list) = self.out.section(&self.path) {
                list.push(key);
            }
            map.next_value_seed(Walk {
                path,
                depth: self.depth + 1,
                out: &mut *self.out,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn keeps_section_order_from_json() {
        let text = r#"{"models": {"zeta": {}, "alpha": {"x": [1, {"y": 2}]}, "mid": {}},
                       "providers": {"b": {}, "a": {}}, "other": {"z": 1, "a": 2}}"#;
        let o: Outline = serde_json::from_str(text).unwrap();
        assert_eq!(o.models, ["zeta", "alpha", "mid"]);
        assert_eq!(o.providers, ["b", "a"]);
        assert!(o.routes.is_empty());
        assert!(o.duplicates.is_empty());
    }

    #[test]
    fn finds_duplicate_keys_with_paths() {
        let text = r#"{"models": {"m": {"endpoints": [{"provider": "a", "provider": "b"}]},
                                  "m": {}}, "budgets": [], "budgets": []}"#;
        let o: Outline = serde_json::from_str(text).unwrap();
        assert_eq!(
            o.duplicates,
            ["models.m.endpoints[0].provider", "models.m", "budgets"]
        );
        assert_eq!(o.models, ["m"]);
    }

    #[test]
    fn keeps_section_order_from_yaml() {
        let text = "routes:\n  z: {}\n  a: {}\nmodels:\n  b:\n    aliases: [x]\n  a: {}\n";
        let o: Outline = serde_saphyr::from_str(text).unwrap();
        assert_eq!(o.routes, ["z", "a"]);
        assert_eq!(o.models, ["b", "a"]);
    }
}
