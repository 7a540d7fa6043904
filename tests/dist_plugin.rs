//! The installable plugin folder `dist/` that `scripts/package.sh` assembles: is
//! everything where Grafana looks for it, and does the executable in it answer
//! Grafana's protocol? `scripts/test.sh` runs the packaging step before
//! `cargo test`; without a `dist/` these tests print a note and pass.

mod support;

use std::path::{Path, PathBuf};

use grafana_plugin_sdk::pluginv2::check_health_response::HealthStatus;
use serde_json::Value;
use support::mongo::TestMongo;
use support::plugin_harness::{DataSource, PluginProcess, PLUGIN_ID};

/// What Grafana supplies to every plugin's `module.js` (and so must stay external).
const EXTERNALS: [&str; 5] = [
    "react",
    "@grafana/data",
    "@grafana/ui",
    "@grafana/runtime",
    "@emotion/css",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `dist/`, or `None` (with a note) when the packaging step has not run.
fn dist() -> Option<PathBuf> {
    let dist = root().join("dist");
    if dist.join("plugin.json").is_file() {
        Some(dist)
    } else {
        eprintln!(
            "note: {} has no plugin.json; run scripts/package.sh (scripts/test.sh does) to test the packaged plugin",
            dist.display()
        );
        None
    }
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Grafana's name for this machine's architecture in `<executable>_linux_<arch>`.
fn grafana_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn executable_in(dist: &Path) -> PathBuf {
    let name = json(&dist.join("plugin.json"))["executable"]
        .as_str()
        .expect("plugin.json names its executable")
        .to_string();
    dist.join(format!("{name}_linux_{}", grafana_arch()))
}

#[test]
fn dist_has_plugin_json_module_js_and_the_executable_where_grafana_looks() {
    let Some(dist) = dist() else { return };

    // plugin.json is the repository's, unchanged.
    let packaged = json(&dist.join("plugin.json"));
    assert_eq!(
        packaged,
        json(&root().join("plugin.json")),
        "dist/plugin.json is not the repository's: rerun scripts/package.sh"
    );
    assert_eq!(packaged["id"], PLUGIN_ID);
    assert_eq!(packaged["executable"], "gpx_mongopulse");
    assert_eq!(packaged["backend"], true);
    for logo in ["small", "large"] {
        let path = packaged["info"]["logos"][logo].as_str().unwrap();
        assert!(dist.join(path).is_file(), "dist/{path} (logo) missing");
    }
    for file in ["README.md", "CHANGELOG.md", "module.js"] {
        assert!(dist.join(file).is_file(), "dist/{file} missing");
    }

    // module.js: one AMD module whose dependencies are what Grafana shares.
    let module = std::fs::read_to_string(dist.join("module.js")).expect("dist/module.js");
    assert!(
        module.starts_with("define(["),
        "module.js is not an AMD module"
    );
    let deps_end = module.find(']').expect("AMD dependency list");
    let deps = &module["define([".len()..deps_end];
    for external in EXTERNALS {
        assert!(
            deps.contains(&format!("\"{external}\"")),
            "module.js does not import {external} from Grafana: {deps}"
        );
    }
    assert!(
        !module.contains("react/jsx-runtime") && !module.contains("__SECRET_INTERNALS"),
        "module.js bundles React internals: they break on other React versions"
    );
    assert!(
        !module.contains("createRoot") && !module.contains("monaco-editor"),
        "module.js bundles React DOM or Monaco instead of using Grafana's"
    );
    assert!(
        module.len() < 300_000,
        "module.js is {} bytes: a dependency got bundled",
        module.len()
    );

    // The executable, named <executable>_linux_<arch>, can be run.
    let exe = executable_in(&dist);
    let meta = std::fs::metadata(&exe).unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_ne!(
            meta.permissions().mode() & 0o111,
            0,
            "{} is not executable",
            exe.display()
        );
    }
    assert!(meta.len() > 0);
}

#[test]
fn zip_holds_dist_under_a_folder_named_after_the_plugin() {
    let Some(dist) = dist() else { return };
    let version = json(&dist.join("plugin.json"))["info"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    let zip = root().join(format!("{PLUGIN_ID}-{version}.zip"));
    let names = support::zip::entries(&zip);
    let exe = executable_in(&dist);
    let exe_name = exe.file_name().unwrap().to_str().unwrap();
    for file in ["plugin.json", "module.js", "img/logo.svg", exe_name] {
        let entry = format!("{PLUGIN_ID}/{file}");
        assert!(
            names.iter().any(|(n, _)| *n == entry),
            "{} lacks {entry}: {names:?}",
            zip.display()
        );
    }
    assert!(
        names
            .iter()
            .all(|(n, _)| n.starts_with(&format!("{PLUGIN_ID}/"))),
        "every entry is under {PLUGIN_ID}/: {names:?}"
    );
    let (_, mode) = names
        .iter()
        .find(|(n, _)| n.ends_with(exe_name))
        .expect("executable entry");
    assert_ne!(mode & 0o111, 0, "the zipped executable lost its x bit");
}

#[tokio::test]
async fn packaged_executable_answers_check_health() {
    let Some(dist) = dist() else { return };
    let mongo = TestMongo::start().await;
    let plugin = PluginProcess::start_with(&executable_in(&dist), &[]).await;
    // The settings keys the config editor writes (pkg/src/components/ConfigEditor.tsx)
    // with TLS off, which writes none of the TLS keys.
    let ds = DataSource::new(&mongo.uri, &mongo.db_name)
        .with_json("connectTimeoutSeconds", 5.into())
        .with_json("queryTimeoutSeconds", 10.into())
        .with_json("defaultGranularity", "hour".into());

    let r = plugin.check_health(&ds).await;
    assert_eq!(r.status(), HealthStatus::Ok, "{}", r.message);
    let details: Value = serde_json::from_slice(&r.json_details).expect("details are JSON");
    assert_eq!(details["database"], mongo.db_name.as_str(), "{details}");
    assert!(details["serverVersion"].is_string(), "{details}");
}
