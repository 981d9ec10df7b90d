//! Query-string parsing with an error that names the parameter. Unknown parameters are
//! refused: a typo (`belo=5`) must not silently return everything. The rules here are the
//! ones the OpenAPI document states (`routes`' parameter types take their patterns and
//! bounds from the constants below).
use std::collections::HashMap;

use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;

use super::ApiError;

/// `<partition>:<offset>`, as the checkout returns it.
pub const AFTER_PATTERN: &str = "^([0-9]{1,9}:[0-9]{1,18}|[a-z][a-z0-9]{0,5}:[0-9]{1,9}:[0-9]{1,18}:[0-9]{1,15}:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$";
/// Free text (a SKU, a warehouse, a cursor): anything but control characters. A NUL
/// cannot be stored or compared by PostgreSQL, and no identifier the checkout accepts holds
/// one, so such a value is the caller's mistake (400), not the database's.
pub const TEXT_PATTERN: &str = "^[^\\x00-\\x1F\\x7F]*$";

/// Whether `raw` matches [`TEXT_PATTERN`].
pub fn plain_text(raw: &str) -> bool {
    !raw.chars().any(|c| c.is_ascii_control())
}

/// Bounds of integer filters (`below`): stock levels are far inside them.
pub const MAX_FILTER: i64 = 1_000_000_000_000_000;

pub fn bad_parameter(name: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_parameter", format!("{name}: {message}")).with("parameter", json!(name))
}

/// Whether `raw` is 1 to `max` ASCII digits.
fn digits(raw: &str, max: usize) -> bool {
    (1..=max).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_digit())
}

pub struct Params {
    values: HashMap<String, String>,
}

/// A log position the checkout returned: `<partition>:<offset>`, or in a region
/// `<region>:<partition>:<offset>:<timestamp ms>:<event id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct After {
    pub partition: i32,
    pub offset: i64,
    /// Where the record was appended, when a regional checkout answered.
    pub origin: Option<Origin>,
}

/// The region whose log a position names, and what finds the record in that region's
/// copies elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub region: schemas::Region,
    pub timestamp_ms: i64,
    pub event_id: uuid::Uuid,
}

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

impl Params {
    pub fn new(values: HashMap<String, String>, allowed: &[&str]) -> Result<Self, ApiError> {
        if let Some(unknown) = values.keys().find(|k| !allowed.contains(&k.as_str()) && k.as_str() != "after") {
            return Err(bad_parameter(
                unknown,
                format!("unknown parameter; this endpoint takes {}", [allowed, &["after"]].concat().join(", ")),
            ));
        }
        if let Some((name, _)) = values.iter().find(|(_, v)| !plain_text(v)) {
            return Err(bad_parameter(name, "must not contain control characters"));
        }
        Ok(Params { values })
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn after(&self) -> Result<Option<After>, ApiError> {
        self.position("after")
    }

    /// A parameter holding a log position, `<partition>:<offset>` or a region's
    /// `<region>:<partition>:<offset>:<timestamp ms>:<event id>`.
    pub fn position(&self, name: &str) -> Result<Option<After>, ApiError> {
        let Some(raw) = self.text(name) else { return Ok(None) };
        let bad = || {
            bad_parameter(
                name,
                format!("{raw:?} is not a position like 3:1042 (partition:offset) or eu:3:1042:<ms>:<event id>"),
            )
        };
        let parts: Vec<&str> = raw.split(':').collect();
        let (p, o, origin) = match parts.as_slice() {
            [p, o] => (*p, *o, None),
            [region, p, o, ms, id] => {
                let region = schemas::Region::parse(region).map_err(|_| bad())?;
                let event_id = infra::http::hyphenated_uuid(id).filter(|_| *id == id.to_lowercase()).ok_or_else(bad)?;
                if !digits(ms, 15) {
                    return Err(bad());
                }
                (*p, *o, Some(Origin { region, timestamp_ms: ms.parse().map_err(|_| bad())?, event_id }))
            }
            _ => return Err(bad()),
        };
        if !digits(p, 9) || !digits(o, 18) {
            return Err(bad());
        }
        Ok(Some(After { partition: p.parse().map_err(|_| bad())?, offset: o.parse().map_err(|_| bad())?, origin }))
    }

    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.text("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(bad_parameter("limit", format!("{raw:?} is not a number from 1 to {MAX_LIMIT}"))),
            },
        }
    }

    /// An integer within `min..=max`.
    pub fn integer(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        self.text(name)
            .map(|raw| match raw.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(bad_parameter(name, format!("{raw:?} is not an integer from {min} to {max}"))),
            })
            .transpose()
    }

    /// An RFC 3339 time or a date (midnight UTC), as microseconds since the epoch.
    pub fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        let Some(raw) = self.text(name) else { return Ok(None) };
        if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
            return Ok(Some(t.with_timezone(&Utc).timestamp_micros()));
        }
        // Exactly YYYY-MM-DD (chrono would also take `2026-1-5`, which is no `format: date`).
        let shaped = raw.len() == 10 && raw.bytes().enumerate().all(|(i, b)| (i == 4 || i == 7) == (b == b'-'));
        if let Some(day) = NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok().filter(|_| shaped) {
            if let Some(t) = day.and_hms_opt(0, 0, 0) {
                return Ok(Some(t.and_utc().timestamp_micros()));
            }
        }
        Err(bad_parameter(name, format!("{raw:?} is not a date (2026-11-23) or RFC 3339 time")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)], allowed: &[&str]) -> Result<Params, ApiError> {
        Params::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), allowed)
    }

    #[test]
    fn positions_parse_and_garbage_is_refused() {
        let ok = params(&[("after", "3:1042")], &[]).expect("params");
        assert_eq!(ok.after().expect("after"), Some(After { partition: 3, offset: 1042, origin: None }));
        let id = "5d2c7c0e-8a3b-4c1d-9e2f-0a1b2c3d4e5f";
        let regional = params(&[("after", &format!("eu:3:1042:1733490000123:{id}"))], &[]).expect("params");
        let origin = Origin {
            region: schemas::Region::parse("eu").expect("region"),
            timestamp_ms: 1_733_490_000_123,
            event_id: id.parse().expect("uuid"),
        };
        assert_eq!(regional.after().expect("after"), Some(After { partition: 3, offset: 1042, origin: Some(origin) }));
        let regional_bad = [
            format!("EU:3:1042:1:{id}"),
            format!("eu:3:1042:x:{id}"),
            "eu:3:1042:1:not-a-uuid".to_string(),
            format!("eu:3:1042:1:{}", id.to_uppercase()),
            format!("eu:3:1042:{id}"),
        ];
        for bad in regional_bad.iter().map(String::as_str).chain([
            "3",
            "x:1",
            "3:-1",
            "-1:4",
            "3:1:2",
            "",
            " 3:4",
            "1234567890:1",
            "+3:4",
        ]) {
            assert!(params(&[("after", bad)], &[]).expect("params").after().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_value_holding_a_control_character_is_refused_naming_its_parameter() {
        for bad in ["a\0b", "\u{1f}", "x\u{7f}"] {
            let refused = params(&[("cursor", bad)], &["cursor"]).err().expect(bad);
            assert_eq!(
                (refused.status, refused.body.details["parameter"].as_str()),
                (StatusCode::BAD_REQUEST, Some("cursor"))
            );
        }
        assert!(params(&[("cursor", "SKU-1 é")], &["cursor"]).is_ok());
    }

    #[test]
    fn unknown_parameters_and_bad_limits_are_refused() {
        assert!(params(&[("belo", "5")], &["below"]).is_err());
        for bad in ["0", "1001", "ten"] {
            assert!(params(&[("limit", bad)], &["limit"]).expect("params").limit().is_err(), "{bad}");
        }
    }

    #[test]
    fn times_accept_dates_and_rfc3339() {
        let p = params(&[("from", "2026-11-23"), ("to", "2026-11-23T12:00:00Z"), ("x", "soon")], &["from", "to", "x"])
            .expect("params");
        assert_eq!(
            p.time("to").expect("to").expect("some") - p.time("from").expect("from").expect("some"),
            43_200_000_000
        );
        assert!(p.time("x").is_err());
        let short = params(&[("from", "2026-1-5")], &["from"]).expect("params");
        assert!(short.time("from").is_err(), "a date has two-digit months and days");
    }
}
