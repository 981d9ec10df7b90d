//! Embeds every `.avsc` file under `avro/` (and the manifest) into the crate, so the
//! binary carries its contract and never looks for schema files at run time.
use std::{env, fs, path::Path};

fn main() {
    let dir = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("avro");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = fs::read_dir(&dir)
        .expect("schemas/avro exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".avsc"))
        .collect();
    names.sort();
    let mut out = String::from("/// Every schema file under `avro/`, by file name.\npub(crate) static EMBEDDED_SCHEMAS: &[(&str, &str)] = &[\n");
    for n in &names {
        out.push_str(&format!("    ({n:?}, include_str!({:?})),\n", dir.join(n).display().to_string()));
    }
    out.push_str("];\n");
    let dest = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("embedded_schemas.rs");
    fs::write(dest, out).expect("write embedded_schemas.rs");
}
