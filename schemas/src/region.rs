//! Regions: where an order lives. Every order has one home region, the region whose
//! checkout accepted it, and its events are appended only to that region's log (one
//! writer per order: two regions appending to one order's stream could interleave
//! decisions that contradict each other). The home is written into the order id itself,
//! so any region, any reader of a mirrored log and any client can tell it without a lookup.
//!
//! An order id with a home is a UUID of version 8 (RFC 9562's custom layout) whose first
//! six bytes are the region's name in ASCII, padded with zero bytes, so the id reads as
//! its region in hex: `65750000-0000-8…` is homed in `eu`. The other 74 bits are random
//! (or, under an Idempotency-Key, derived from the request). Any other UUID (version 4
//! ids of orders placed before regions, ids chosen by producers outside the checkout) has
//! no home of its own: it belongs to the log it was appended to.
//!
//! Region names double as MirrorMaker 2's cluster aliases: the copy of `orders` from `eu`
//! is `eu.orders` in every other region ([`Region::mirrored`]).
use uuid::Uuid;

/// The longest region name: it must fit the six bytes an order id gives it.
pub const MAX_REGION_LEN: usize = 6;

/// A region's name: 1 to 6 characters, a lower-case ASCII letter then letters or digits
/// (`eu`, `us`, `apac1`). No dot, so `<region>.<topic>` always splits one way.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region(String);

impl Region {
    /// A region name, or why it cannot be one.
    pub fn parse(name: &str) -> Result<Region, String> {
        let valid = !name.is_empty()
            && name.len() <= MAX_REGION_LEN
            && name.as_bytes()[0].is_ascii_lowercase()
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if valid {
            Ok(Region(name.to_string()))
        } else {
            Err(format!(
                "{name:?} is not a region name: 1 to {MAX_REGION_LEN} characters, a lower-case letter then letters or digits"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of `topic`'s copy from this region, under MirrorMaker 2's default
    /// replication policy (`<source alias>.<topic>`).
    pub fn mirrored(&self, topic: &str) -> String {
        format!("{}.{topic}", self.0)
    }

    /// The topic a mirrored copy's name copies, if `topic` is a copy from this region.
    pub fn source_topic<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic.strip_prefix(self.0.as_str())?.strip_prefix('.')
    }

    /// An order id homed in this region, its other bits taken from `entropy` (random
    /// bytes, or a digest of the request that makes it).
    pub fn order_id(&self, entropy: [u8; 16]) -> Uuid {
        let mut bytes = entropy;
        bytes[..MAX_REGION_LEN].fill(0);
        bytes[..self.0.len()].copy_from_slice(self.0.as_bytes());
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }

    /// The region an order id names as its home, if it names one.
    pub fn home_of(order_id: &Uuid) -> Option<Region> {
        if order_id.get_version_num() != 8 {
            return None;
        }
        let name = &order_id.as_bytes()[..MAX_REGION_LEN];
        let len = name.iter().position(|b| *b == 0).unwrap_or(MAX_REGION_LEN);
        if name[len..].iter().any(|b| *b != 0) {
            return None;
        }
        Region::parse(std::str::from_utf8(&name[..len]).ok()?).ok()
    }
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Region {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Region::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_id_names_its_home_region_and_reads_as_it_in_hex() {
        let eu = Region::parse("eu").expect("a region name");
        let id = eu.order_id([0xab; 16]);
        assert_eq!(Region::home_of(&id), Some(eu.clone()));
        assert!(id.to_string().starts_with("65750000-0000-8"), "{id}");
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let apac = Region::parse("apac1").expect("a region name");
        assert_eq!(Region::home_of(&apac.order_id([0; 16])), Some(apac));
        let six = Region::parse("abcdef").expect("a region name");
        assert_eq!(Region::home_of(&six.order_id([0xff; 16])), Some(six));
    }

    #[test]
    fn ids_without_a_home_name_none() {
        assert_eq!(Region::home_of(&Uuid::new_v4()), None);
        assert_eq!(Region::home_of(&Uuid::nil()), None);
        // Version 8 but no region name in its first bytes.
        let mut bytes = [0u8; 16];
        bytes[0] = b'E';
        assert_eq!(Region::home_of(&uuid::Builder::from_custom_bytes(bytes).into_uuid()), None);
        bytes[0] = b'e';
        bytes[3] = b'x'; // a gap inside the name
        assert_eq!(Region::home_of(&uuid::Builder::from_custom_bytes(bytes).into_uuid()), None);
        assert_eq!(Region::home_of(&uuid::Builder::from_custom_bytes([0; 16]).into_uuid()), None);
    }

    #[test]
    fn region_names_are_short_lower_case_and_dotless() {
        for good in ["eu", "us", "a", "apac1", "abcdef"] {
            assert!(Region::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "EU", "1eu", "eu.west", "eu-1", "abcdefg", "é"] {
            assert!(Region::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mirrored_topics_carry_the_source_region_as_prefix() {
        let eu = Region::parse("eu").expect("a region name");
        assert_eq!(eu.mirrored("decisions-orders"), "eu.decisions-orders");
        assert_eq!(eu.source_topic("eu.orders"), Some("orders"));
        assert_eq!(eu.source_topic("euro.orders"), None);
        assert_eq!(eu.source_topic("orders"), None);
    }
}
