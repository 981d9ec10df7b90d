//! The one wall clock of orderflow: what every crate reads when it stamps a row or ages a
//! record. Reading it is the only impure thing this crate offers, and it is here (the
//! lowest crate) so that the store, the member and the checkout share it instead of each
//! keeping a copy.

/// Milliseconds since the Unix epoch (UTC).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Microseconds since the Unix epoch (UTC).
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    #[test]
    fn milliseconds_and_microseconds_read_the_same_clock() {
        let (ms, us) = (super::now_ms(), super::now_us());
        assert!((us / 1000 - ms).abs() < 1_000, "{ms} ms vs {us} us");
    }
}
