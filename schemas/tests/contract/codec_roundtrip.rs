use schemas::{samples::sample, Codec, EventKind};

#[test]
fn every_event_kind_survives_encode_then_decode() {
    let codec = Codec::builtin();
    for kind in EventKind::ALL {
        let event = sample(kind);
        let bytes = codec.encode(&event).expect("encode");
        assert_eq!(codec.decode(&bytes).expect("decode"), event, "{kind:?}");
        assert_eq!(codec.peek_kind(&bytes).expect("peek"), kind);
    }
}

#[test]
fn frames_start_with_magic_byte_and_big_endian_schema_id() {
    let codec = Codec::builtin();
    let bytes = codec.encode(&sample(EventKind::PaymentCaptured)).expect("encode");
    assert_eq!(bytes[0], 0);
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    assert_eq!(id, codec.schema_id(EventKind::PaymentCaptured));
}

/// Golden vectors pin the exact bytes of each event, so an accidental change to a schema,
/// a field order or the framing shows up as a diff. Regenerate deliberately with
/// `ORDERFLOW_BLESS=1 cargo test -p schemas --test codec_roundtrip`.
#[test]
fn encoding_matches_golden_vectors() {
    let codec = Codec::builtin();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("ORDERFLOW_BLESS").is_some();
    for kind in EventKind::ALL {
        let hex: String = codec.encode(&sample(kind)).expect("encode").iter().map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("{}.hex", kind.record_name()));
        if bless {
            std::fs::write(&path, format!("{hex}\n")).expect("write golden");
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(hex, golden.trim(), "{kind:?} bytes changed");
    }
}

#[test]
fn keys_put_all_events_of_an_order_under_the_order_id_and_stock_under_the_sku() {
    for kind in EventKind::ALL {
        let event = sample(kind);
        let expected = match kind {
            EventKind::StockAdjusted
            | EventKind::StockRequested
            | EventKind::StockTransferRequested
            | EventKind::StockTransferReceived => "sku:SKU-1".to_string(),
            _ => schemas::samples::SAMPLE_ORDER_ID.to_string(),
        };
        assert_eq!(event.key(), expected);
    }
}

#[test]
fn uuids_are_written_as_their_36_character_text() {
    // The Avro contract says `string` with logicalType `uuid`: other languages' readers
    // must find the canonical text, not 16 raw bytes.
    let codec = Codec::builtin();
    let event = sample(EventKind::OrderCancelled);
    let bytes = codec.encode(&event).expect("encode");
    let text = event.envelope().event_id.to_string();
    assert_eq!(bytes[5] as usize, text.len() * 2, "zig-zag length prefix of a 36-byte string");
    assert_eq!(&bytes[6..42], text.as_bytes());
}
