//! The `prodcat` binary as a user runs it: a quickstart on a temporary data folder, then
//! predictions from the command line, including the same unreadable photo that the API
//! answers 422 and a job marks failed.

use std::path::Path;
use std::process::{Command, Output};

fn prodcat(data_dir: &Path, arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prodcat"))
        .args(arguments)
        .env("PRODCAT_DATA_DIR", data_dir)
        .env("PRODCAT_MODEL_DIR", data_dir.join("no-pretrained-models"))
        .env_remove("PRODCAT_DATABASE_URL")
        .env_remove("PRODCAT_OBJECT_STORE_URL")
        .env_remove("PRODCAT_CONFIG")
        .current_dir(data_dir)
        .output()
        .expect("run prodcat")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

#[test]
fn quickstart_then_predict_from_the_command_line() {
    let folder = tempfile::tempdir().unwrap();
    let data_dir = folder.path();
    let output = prodcat(
        data_dir,
        &[
            "quickstart",
            "--no-serve",
            "--text-only",
            "--products",
            "300",
        ],
    );
    assert!(
        output.status.success(),
        "quickstart failed: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );

    let output = prodcat(
        data_dir,
        &[
            "predict",
            "--designation",
            "Piscine tubulaire ronde avec pompe",
            "--json",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(answer["category"].is_u64(), "{answer}");

    // A photo whose header is fine but whose data stops half-way.
    let mut photo = prodcat_dataset::generate::generate_image(
        3,
        prodcat_domain::CategoryCode::from_u16(2583).unwrap(),
        11,
    );
    photo.truncate(photo.len() / 3);
    let photo_path = data_dir.join("truncated.jpg");
    std::fs::write(&photo_path, &photo).unwrap();
    let output = prodcat(
        data_dir,
        &[
            "predict",
            "--designation",
            "Piscine tubulaire",
            "--image",
            photo_path.to_str().unwrap(),
        ],
    );
    assert!(!output.status.success(), "an unreadable photo is refused");
    let message = text(&output.stderr);
    assert!(
        message.contains("could not be classified") && message.contains("image"),
        "{message}"
    );

    // Nothing to classify.
    let output = prodcat(data_dir, &["predict"]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("nothing to classify"));
}

#[test]
fn settings_files_refuse_unknown_keys_and_migrate_reports_the_schema() {
    let folder = tempfile::tempdir().unwrap();
    let data_dir = folder.path();
    std::fs::write(data_dir.join("bad.toml"), "colour = \"blue\"\n").unwrap();
    let output = prodcat(data_dir, &["--config", "bad.toml", "migrate"]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("colour"),
        "{}",
        text(&output.stderr)
    );
    std::fs::write(
        data_dir.join("prodcat.toml"),
        "[server]\nrate-limit = 10\n[worker]\nbatch-size = 8\n",
    )
    .unwrap();
    let output = prodcat(data_dir, &["migrate"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("sqlite"),
        "{}",
        text(&output.stdout)
    );
}
