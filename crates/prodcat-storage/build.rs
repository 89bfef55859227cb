//! Embeds the migrations: writes `migrations.rs` into `OUT_DIR`, listing each dialect's
//! `<version>_<description>.sql` files in version order with `include_str!`, so the binary
//! carries its schema without compiling sqlx's macro crate (and its second copy of both
//! database drivers) for the build host.

use std::fmt::Write;
use std::path::Path;

fn list(dialect: &str) -> String {
    let directory = Path::new("migrations").join(dialect);
    let mut files: Vec<(i64, String, String)> = std::fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("read {}: {error}", directory.display()))
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            let (version, rest) = name.split_once('_')?;
            let description = rest.strip_suffix(".sql")?.replace('_', " ");
            Some((version.parse().ok()?, description, name))
        })
        .collect();
    files.sort();
    let mut out = String::new();
    for (version, description, name) in files {
        let path = std::fs::canonicalize(directory.join(&name)).expect("migration path");
        writeln!(
            out,
            "    ({version}, {description:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .expect("write to a string");
    }
    out
}

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    let code = format!(
        "/// SQLite migrations: (version, description, SQL).\n\
         pub(crate) const SQLITE: &[(i64, &str, &str)] = &[\n{}];\n\
         /// PostgreSQL migrations: (version, description, SQL).\n\
         pub(crate) const POSTGRES: &[(i64, &str, &str)] = &[\n{}];\n",
        list("sqlite"),
        list("postgres")
    );
    std::fs::write(Path::new(&out).join("migrations.rs"), code).expect("write migrations.rs");
}
