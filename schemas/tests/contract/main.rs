//! The schemas crate's contract tests, one test binary: the codec round-trips every event
//! kind byte for byte, the compatibility gate refuses breaking schema changes, and hostile
//! bytes get typed errors.
mod codec_roundtrip;
mod compatibility_gate;
mod hostile_bytes;
mod registry_ids;
