use apache_avro::Schema;
use schemas::compatibility::{check_pair, check_registry};
use schemas::{EventKind, ManifestRegistry, RegisteredSchema};
use std::sync::Arc;

fn fixture(name: &str) -> Schema {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    Schema::parse_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture parses")
}

fn registry_with_v2(v2: Schema) -> ManifestRegistry {
    let mut registry = ManifestRegistry::builtin().expect("builtin");
    registry
        .insert(RegisteredSchema {
            subject: "com.orderflow.events.OrderCancelled".into(),
            version: 2,
            id: 1000,
            schema: Arc::new(v2),
        })
        .expect("insert");
    registry
}

#[test]
fn checked_in_schemas_are_compatible_across_versions() {
    let registry = ManifestRegistry::builtin().expect("builtin");
    let subjects: Vec<String> = registry.subjects().map(String::from).collect();
    assert_eq!(subjects.len(), EventKind::ALL.len());
    assert_eq!(check_registry(&registry, subjects.iter().map(String::as_str)), vec![]);
}

#[test]
fn adding_a_required_field_without_default_fails_the_gate() {
    let registry = registry_with_v2(fixture("order_cancelled.v2.incompatible.avsc"));
    let found = check_registry(&registry, ["com.orderflow.events.OrderCancelled"]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].previous_version, found[0].version), (1, 2));
    assert!(found[0].reason.starts_with("backward"), "{}", found[0].reason);
}

#[test]
fn adding_an_optional_field_with_default_passes_the_gate() {
    let registry = registry_with_v2(fixture("order_cancelled.v2.compatible.avsc"));
    assert_eq!(check_registry(&registry, ["com.orderflow.events.OrderCancelled"]), vec![]);
}

#[test]
fn records_written_with_v1_are_read_through_a_newer_v2() {
    // The codec resolves old writer schemas into the newest reader schema.
    let v1 = fixture("../../avro/order_cancelled.v1.avsc");
    let v2 = fixture("order_cancelled.v2.compatible.avsc");
    assert!(check_pair(&v1, &v2).is_ok());
    let registry = registry_with_v2(v2);
    let codec_v1 = schemas::Codec::builtin();
    let bytes = codec_v1.encode(&schemas::samples::sample(schemas::EventKind::OrderCancelled)).expect("encode");
    let codec_v2 = schemas::Codec::new(&registry).expect("codec");
    let event = codec_v2.decode(&bytes).expect("v1 bytes decode under v2");
    assert_eq!(event, schemas::samples::sample(schemas::EventKind::OrderCancelled));
}

#[test]
fn duplicate_schema_ids_are_refused() {
    let mut registry = ManifestRegistry::builtin().expect("builtin");
    let err =
        registry.insert(RegisteredSchema { subject: "x".into(), version: 1, id: 1, schema: Arc::new(Schema::Null) });
    assert!(err.is_err());
}
