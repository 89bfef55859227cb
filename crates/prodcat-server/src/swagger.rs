//! Swagger UI at `/docs` over `/openapi.json`. The UI's files come from the npm package
//! `swagger-ui-dist`, which `scripts/setup` installs into a git-ignored folder; they are read
//! once at start-up from the configured folder or the usual places. Without them `/docs` is a
//! plain page that says how to get them and links the OpenAPI document.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// The files the page needs, with their content types.
const FILES: [(&str, &str); 5] = [
    ("swagger-ui.css", "text/css; charset=utf-8"),
    (
        "swagger-ui-bundle.js",
        "application/javascript; charset=utf-8",
    ),
    (
        "swagger-ui-standalone-preset.js",
        "application/javascript; charset=utf-8",
    ),
    ("favicon-32x32.png", "image/png"),
    ("favicon-16x16.png", "image/png"),
];

/// Swagger UI's static files, loaded in memory.
#[derive(Debug, Clone, Default)]
pub struct SwaggerAssets {
    files: HashMap<&'static str, (Bytes, &'static str)>,
    pub folder: Option<PathBuf>,
}

fn candidates(configured: Option<&Path>) -> Vec<PathBuf> {
    let mut folders = Vec::new();
    if let Some(folder) = configured {
        folders.push(folder.to_path_buf());
    }
    folders.push(PathBuf::from("node_modules/swagger-ui-dist"));
    folders
}

impl SwaggerAssets {
    /// Loads the files from the first folder that has them all.
    pub fn load(configured: Option<&Path>) -> Self {
        for folder in candidates(configured) {
            let mut files = HashMap::new();
            let mut complete = true;
            for (name, content_type) in FILES {
                match std::fs::read(folder.join(name)) {
                    Ok(bytes) => {
                        files.insert(name, (Bytes::from(bytes), content_type));
                    }
                    Err(_) if name.starts_with("favicon") => {}
                    Err(_) => {
                        complete = false;
                        break;
                    }
                }
            }
            if complete {
                tracing::debug!(folder = %folder.display(), "Swagger UI files loaded");
                return Self {
                    files,
                    folder: Some(folder),
                };
            }
        }
        tracing::info!("Swagger UI files not found (run scripts/setup); /docs shows a plain page");
        Self::default()
    }

    pub fn available(&self) -> bool {
        !self.files.is_empty()
    }

    /// A file by name (only the known names are served).
    pub fn file(&self, name: &str) -> Option<(Bytes, &'static str)> {
        self.files.get(name).cloned()
    }

    /// The `/docs` page.
    pub fn page(&self) -> String {
        if self.available() {
            INDEX.to_string()
        } else {
            FALLBACK.to_string()
        }
    }
}

const INDEX: &str = r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>prodcat API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-ui-standalone-preset.js"></script>
  <script>
    window.onload = function () {
      window.ui = SwaggerUIBundle({
        url: "/openapi.json",
        dom_id: "#swagger-ui",
        deepLinking: true,
        persistAuthorization: true,
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        layout: "StandaloneLayout"
      });
    };
  </script>
</body>
</html>
"##;

const FALLBACK: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>prodcat API</title>
<style>body{font-family:sans-serif;max-width:48rem;margin:3rem auto;line-height:1.5}</style></head>
<body>
<h1>prodcat API</h1>
<p>The interactive documentation (Swagger UI) is not installed on this server. Run
<code>scripts/setup</code> (it installs the <code>swagger-ui-dist</code> package with npm into
<code>node_modules/</code>), or point <code>PRODCAT_SWAGGER_UI_DIR</code> at a folder holding
<code>swagger-ui-bundle.js</code>, then restart the server.</p>
<p>The OpenAPI document is at <a href="/openapi.json">/openapi.json</a>; any OpenAPI tool can read it.</p>
</body>
</html>
"#;
