//! Field rules for everything that arrives over HTTP. Each failure names the field, so a
//! client can fix its request without reading our code. The OpenAPI schema of every
//! checked field is built here too, from the same limits, so the document states exactly
//! what the checks enforce.
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;

use crate::currency::{is_iso_4217, CODES};

/// One rejected field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

pub type Checked<T> = Result<T, FieldError>;

pub const MAX_LINES: usize = 100;
pub const MAX_QUANTITY: i64 = 10_000;
/// A trillion in major units: one line cannot overflow i64, but a large order can, so
/// totals are computed with checked arithmetic and an overflow is a validation error.
pub const MAX_UNIT_PRICE_MINOR: i64 = 100_000_000_000_000;
pub const MAX_STOCK_DELTA: i64 = 1_000_000;

/// What [`text`] accepts, as a regular expression: no control character (Unicode `Cc`), no
/// invisible format character ([`FORMAT_CHARACTERS`]), and at least one character that is
/// not white space.
pub const TEXT_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]*[^\s\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff][^\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]*$";

/// Invisible characters that change how text reads without showing (Unicode `Cf` in text
/// people type: soft hyphen, bidirectional overrides and isolates, zero-width ones, the
/// byte order mark): an identifier holding one looks like another identifier.
pub const FORMAT_CHARACTERS: [(char, char); 8] = [
    ('\u{00ad}', '\u{00ad}'),
    ('\u{061c}', '\u{061c}'),
    ('\u{180e}', '\u{180e}'),
    ('\u{200b}', '\u{200f}'),
    ('\u{202a}', '\u{202e}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{2069}'),
    ('\u{feff}', '\u{feff}'),
];

fn is_format(c: char) -> bool {
    FORMAT_CHARACTERS.iter().any(|(from, to)| (*from..=*to).contains(&c))
}
pub const SKU_PATTERN: &str = "^[A-Z0-9-]{1,32}$";
pub const COUNTRY_PATTERN: &str = "^[A-Z]{2}$";

fn string_schema() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::Type(Type::String))
}

/// The schema of a [`text`] field of at most `max` characters.
pub fn text_schema(max: usize) -> Schema {
    string_schema().min_length(Some(1)).max_length(Some(max)).pattern(Some(TEXT_PATTERN)).into()
}

/// The schema of an optional [`text`] field: absent, null, or text.
pub fn optional_text_schema(max: usize) -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(TEXT_PATTERN))
        .into()
}

pub fn sku_schema() -> RefOr<Schema> {
    string_schema().pattern(Some(SKU_PATTERN)).description(Some("Stock keeping unit")).into()
}

pub fn country_schema() -> RefOr<Schema> {
    string_schema().pattern(Some(COUNTRY_PATTERN)).description(Some("ISO 3166-1 alpha-2 code")).into()
}

pub fn currency_schema() -> RefOr<Schema> {
    string_schema().enum_values(Some(CODES.iter().copied())).description(Some("ISO 4217 code")).into()
}

/// The schema of an integer field checked with [`in_range`].
pub fn integer_schema(min: i64, max: i64) -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Integer))
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64)))
        .minimum(Some(min as f64))
        .maximum(Some(max as f64))
        .into()
}

/// SKU: [`SKU_PATTERN`].
pub fn sku(field: &str, value: &str) -> Checked<()> {
    let ok = (1..=32).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
    ok.then_some(()).ok_or_else(|| FieldError::new(field, format!("must match {SKU_PATTERN}")))
}

pub fn currency(field: &str, value: &str) -> Checked<()> {
    is_iso_4217(value)
        .then_some(())
        .ok_or_else(|| FieldError::new(field, "must be an ISO 4217 currency code such as EUR"))
}

/// ISO 3166-1 alpha-2 shape ([`COUNTRY_PATTERN`]): two upper-case letters.
pub fn country(field: &str, value: &str) -> Checked<()> {
    let ok = value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase());
    ok.then_some(()).ok_or_else(|| FieldError::new(field, "must be an ISO 3166-1 alpha-2 country code such as DE"))
}

/// Free text identifiers: 1..=max characters, no control characters.
pub fn text(field: &str, value: &str, max: usize) -> Checked<()> {
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(FieldError::new(field, format!("must be at most {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    if value.chars().any(is_format) {
        return Err(FieldError::new(
            field,
            "must not contain invisible format characters (bidirectional overrides, zero-width)",
        ));
    }
    Ok(())
}

pub fn optional_text(field: &str, value: Option<&str>, max: usize) -> Checked<()> {
    value.map_or(Ok(()), |v| text(field, v, max))
}

pub use infra::http::hyphenated_uuid;

/// Reads a JSON integer. An integral number written with a fraction (`5.0`) is the same
/// integer to JSON Schema, so it is one here too; `19.99` or `"5"` are refused.
pub fn integral<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct Integral;
    impl serde::de::Visitor<'_> for Integral {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom("integer out of range"))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            // Beyond 2^53 a float no longer names one integer.
            const EXACT: f64 = 9_007_199_254_740_992.0;
            if v.fract() == 0.0 && v.abs() <= EXACT {
                Ok(v as i64)
            } else {
                Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
            }
        }
    }
    deserializer.deserialize_any(Integral)
}

/// An integer within `min..=max`, converted to the target type.
pub fn in_range<T: TryFrom<i64>>(field: &str, value: i64, min: i64, max: i64) -> Checked<T> {
    if value < min || value > max {
        return Err(FieldError::new(field, format!("must be between {min} and {max}")));
    }
    T::try_from(value).map_err(|_| FieldError::new(field, "is out of range"))
}

/// Parses a JSON document, refusing an object that names a key twice at any depth: which
/// of two values would count depends on the parser, so a body holding both means one thing
/// to us and another to whoever checked it before us.
pub fn strict_json(bytes: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde::Deserializer::deserialize_any(&mut deserializer, StrictJson)?;
    deserializer.end()?;
    Ok(value)
}

struct StrictJson;

impl<'de> serde::de::DeserializeSeed<'de> for StrictJson {
    type Value = serde_json::Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(StrictJson)
    }
}

impl<'de> serde::de::Visitor<'de> for StrictJson {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictJson)? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("the key {key:?} appears twice")));
            }
            let value = map.next_value_seed(StrictJson)?;
            object.insert(key, value);
        }
        Ok(serde_json::Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_accepts_upper_case_digits_and_dashes_only() {
        assert!(sku("sku", "SKU-1").is_ok());
        assert!(sku("sku", &"A".repeat(32)).is_ok());
        for bad in ["", "sku-1", "SKU_1", "SKU 1", &"A".repeat(33), "ÄPFEL"] {
            assert_eq!(sku("lines[0].sku", bad).expect_err(bad).field, "lines[0].sku");
        }
    }

    #[test]
    fn currency_must_be_a_known_iso_code() {
        assert!(currency("currency", "EUR").is_ok());
        assert!(currency("currency", "JPY").is_ok());
        for bad in ["eur", "EU", "EURO", "XYZ", ""] {
            assert!(currency("currency", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_are_inclusive_and_name_the_bounds() {
        assert_eq!(in_range::<i32>("q", 1, 1, 10), Ok(1));
        assert_eq!(in_range::<i32>("q", 10, 1, 10), Ok(10));
        let err = in_range::<i32>("q", 0, 1, 10).expect_err("below");
        assert_eq!(err.message, "must be between 1 and 10");
    }

    #[test]
    fn integers_may_be_written_with_a_zero_fraction_but_not_with_another() {
        #[derive(serde::Deserialize)]
        struct N {
            #[serde(deserialize_with = "integral")]
            n: i64,
        }
        let n = |json: &str| serde_json::from_str::<N>(json).map(|v| v.n);
        assert_eq!(n(r#"{"n": 5}"#).ok(), Some(5));
        assert_eq!(n(r#"{"n": 5.0}"#).ok(), Some(5));
        assert_eq!(n(r#"{"n": -3.0}"#).ok(), Some(-3));
        for bad in [r#"{"n": 19.99}"#, r#"{"n": "5"}"#, r#"{"n": 1e300}"#, r#"{"n": null}"#] {
            assert!(n(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_rejects_blank_long_and_control_characters() {
        assert!(text("c", "c-1", 64).is_ok());
        assert!(text("c", "  ", 64).is_err());
        assert!(text("c", &"x".repeat(65), 64).is_err());
        assert!(text("c", "a\u{0}b", 64).is_err());
    }

    #[test]
    fn a_key_named_twice_at_any_depth_is_refused_and_everything_else_parses_as_serde_json_does() {
        for bad in [r#"{"currency":"EUR","currency":"USD"}"#, r#"{"lines":[{"sku":"A","sku":"B"}]}"#] {
            let err = strict_json(bad.as_bytes()).expect_err(bad);
            assert!(err.to_string().contains("appears twice"), "{err}");
        }
        let good = r#"{"a":[1,-2,3.5,true,null,"x",{"b":{}}],"c":18446744073709551615}"#;
        assert_eq!(strict_json(good.as_bytes()).ok(), serde_json::from_str::<serde_json::Value>(good).ok());
        assert!(strict_json(b"{} trailing").is_err());
    }

    #[test]
    fn text_rejects_invisible_format_characters() {
        for bad in ["admin\u{202e}gpj", "sku\u{200b}", "\u{feff}c-1", "a\u{2066}b", "soft\u{00ad}hyphen"] {
            assert!(text("c", bad, 64).is_err(), "{bad:?}");
        }
        assert!(text("c", "café-ünïcode ✓", 64).is_ok(), "letters of every script stay welcome");
    }
}
