//! Looks into a client message for the two fields the mock cares about (the
//! id field and the type field, whose names are flags) without building a
//! `serde_json::Value`.
//!
//! Why: `/ws/message` is the hot endpoint (every client message and every
//! client ack), and the messages carry padding up to kilobytes. A
//! `DeserializeSeed` that matches keys against the configured names, keeps
//! the two values as borrowed `RawValue`s and skips everything else with
//! `IgnoredAny` validates the JSON in one pass with no allocation; the id
//! goes back in the ack byte for byte.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The fields found in a JSON object.
#[derive(Debug, Default, Clone, Copy)]
pub struct Found<'a> {
    /// The id field's value, as sent.
    pub id: Option<&'a RawValue>,
    /// The type field's value, as sent (a string keeps its quotes).
    pub ty: Option<&'a RawValue>,
}

/// Field names to look for.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'n> {
    /// Name of the id field.
    pub id_field: &'n str,
    /// Name of the type field.
    pub type_field: &'n str,
}

impl Probe<'_> {
    /// The fields of `body` when it is one JSON object (and nothing after
    /// it but whitespace); `None` for anything else.
    pub fn run<'a>(&self, body: &'a [u8]) -> Option<Found<'a>> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let found = self.deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(found)
    }
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = Found<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = Found<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = Found::default();
        while let Some(key) = map.next_key_seed(KeySeed(self))? {
            match key {
                Key::Id => found.id = Some(map.next_value()?),
                Key::Type => found.ty = Some(map.next_value()?),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

enum Key {
    Id,
    Type,
    Other,
}

/// Classifies a key without keeping it.
struct KeySeed<'n>(Probe<'n>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(if key == self.0.id_field {
            Key::Id
        } else if key == self.0.type_field {
            Key::Type
        } else {
            Key::Other
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Probe<'static> = Probe {
        id_field: "id",
        type_field: "type",
    };

    #[test]
    fn finds_the_fields_as_sent() {
        let body = br#"{"type":"msg","pad":{"a":[1,2,{"id":9}]},"id": 42 ,"x":"y"}"#;
        let f = P.run(body).unwrap();
        assert_eq!(f.id.map(RawValue::get), Some("42"));
        assert_eq!(f.ty.map(RawValue::get), Some("\"msg\""));
        let f = P.run(br#" {"id":"a\"b","type":"ack"} "#).unwrap();
        assert_eq!(f.id.map(RawValue::get), Some(r#""a\"b""#));
        assert_eq!(f.ty.map(RawValue::get), Some("\"ack\""));
        // Escaped key names still match.
        let f = P.run(br#"{"\u0069d":1}"#).unwrap();
        assert_eq!(f.id.map(RawValue::get), Some("1"));
        let f = P.run(br#"{"other":1}"#).unwrap();
        assert!(f.id.is_none() && f.ty.is_none());
        let custom = Probe {
            id_field: "rid",
            type_field: "kind",
        };
        let f = custom.run(br#"{"id":1,"rid":[1,2],"kind":null}"#).unwrap();
        assert_eq!(f.id.map(RawValue::get), Some("[1,2]"));
        assert_eq!(f.ty.map(RawValue::get), Some("null"));
    }

    #[test]
    fn anything_but_one_object_is_none() {
        for bad in [
            &b""[..],
            b"[1]",
            b"\"id\"",
            b"{\"id\":1",
            b"{\"id\":1} x",
            b"{\"id\":1}{}",
            b"not json",
            b"{\"id\":\"\xff\"}",
        ] {
            assert!(P.run(bad).is_none(), "{:?}", bad.escape_ascii());
        }
    }
}
