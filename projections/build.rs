// `sqlx::migrate!` embeds `migrations/` at compile time, but cargo does not know the macro
// reads that folder: without this line a migration added after the last build is left out
// of the binary until some source file of the crate changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
