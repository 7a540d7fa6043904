//! Grafana's plugin validator (github.com/grafana/plugin-validator), check by check,
//! for the parts of it that apply to this plugin and can run without the network or
//! its Go tool chain. `docs/catalog.md` lists every analyzer: what it checks, whether
//! it applies, and which test here stands for it (the names in brackets below are the
//! validator's analyzers).
//!
//! Checks on the repository always run; checks on the packaged plugin (`dist/` and
//! the zip that `scripts/package.sh` builds, `scripts/test.sh` runs it first) print a
//! note and pass when there is no `dist/`, like `tests/dist_plugin.rs`.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use support::plugin_harness::PLUGIN_ID;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn plugin_json() -> Value {
    json(&root().join("plugin.json"))
}

fn dist() -> Option<PathBuf> {
    let dist = root().join("dist");
    if dist.join("plugin.json").is_file() {
        Some(dist)
    } else {
        eprintln!("note: no dist/; run scripts/package.sh (scripts/test.sh does) to check the packaged plugin");
        None
    }
}

/// Semantic version `MAJOR.MINOR.PATCH[-pre][+build]`.
fn is_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// [license] The validator accepts a license file it recognises (with at least 90 %
/// confidence) as Apache-2.0 or AGPL-3.0; ours is the Apache License 2.0 text,
/// unabridged, and the manifests say the same.
#[test]
fn license_is_the_apache_2_0_text_and_the_manifests_agree() {
    let text = read(&root().join("LICENSE"));
    for marker in [
        "Apache License",
        "Version 2.0, January 2004",
        "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
        "9. Accepting Warranty or Additional Liability.",
        "END OF TERMS AND CONDITIONS",
        "APPENDIX: How to apply the Apache License to your work.",
    ] {
        assert!(text.contains(marker), "LICENSE lacks {marker:?}");
    }
    // The full text is about 11,350 bytes; an abridged one would not be recognised.
    assert!(
        text.len() > 11_000,
        "LICENSE is {} bytes: not the whole license",
        text.len()
    );
    let manifest = read(&root().join("Cargo.toml"));
    assert!(
        manifest.contains("\nlicense = \"Apache-2.0\"\n"),
        "Cargo.toml license"
    );
    assert_eq!(
        json(&root().join("pkg/package.json"))["license"],
        "Apache-2.0"
    );
}

/// [metadatavalid, typesuffix, pluginname, discoverability, logos, metadatapaths,
/// screenshots, version, restrictivedep, grafanadependency, backendbinary, org]
#[test]
fn plugin_json_passes_the_validators_metadata_checks() {
    let p = plugin_json();
    // metadatavalid (the JSON schema's required fields, as far as we use them).
    for key in ["id", "type", "name", "info", "dependencies"] {
        assert!(!p[key].is_null(), "plugin.json lacks {key}");
    }
    let id = p["id"].as_str().unwrap();
    assert_eq!(id, PLUGIN_ID);
    // org: the id starts with the Grafana Cloud organisation that will publish it.
    let parts: Vec<&str> = id.split('-').collect();
    assert!(
        parts.len() >= 3 && parts.iter().all(|s| !s.is_empty()),
        "{id}: <org>-<name>-<type>"
    );
    // typesuffix: the id ends with the plugin type.
    assert_eq!(
        parts.last(),
        p["type"].as_str().as_ref(),
        "the id must end with the type"
    );
    // pluginname: a human-friendly name, not the id.
    let name = p["name"].as_str().unwrap();
    assert!(!name.is_empty() && name != id);
    // discoverability
    assert!(!p["info"]["description"]
        .as_str()
        .unwrap_or("")
        .trim()
        .is_empty());
    assert!(p["info"]["keywords"]
        .as_array()
        .is_some_and(|k| !k.is_empty()));
    assert!(!p["info"]["author"]["name"]
        .as_str()
        .unwrap_or("")
        .is_empty());
    // version: valid semver (that it is above the published one needs grafana.com).
    let version = p["info"]["version"].as_str().unwrap();
    assert!(is_semver(version), "version {version} is not semver");
    assert!(p["info"]["updated"]
        .as_str()
        .is_some_and(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok()));
    // restrictivedep / grafanadependency: a lower bound, not one release or its patches.
    let dep = p["dependencies"]["grafanaDependency"].as_str().unwrap();
    let bound = dep
        .strip_prefix(">=")
        .unwrap_or_else(|| panic!("grafanaDependency {dep} should be >=x.y.z"));
    assert!(is_semver(bound), "grafanaDependency {dep}");
    // backendbinary: alerting and an executable need backend: true, and back.
    assert_eq!(p["backend"], true);
    assert!(!p["executable"].as_str().unwrap_or("").is_empty());
    // logos, metadatapaths, screenshots: non-empty relative paths of files we ship.
    let mut paths: Vec<String> = ["small", "large"]
        .iter()
        .map(|k| p["info"]["logos"][k].as_str().unwrap_or("").to_string())
        .collect();
    let shots = p["info"]["screenshots"].as_array().expect("screenshots");
    assert!(
        !shots.is_empty(),
        "the catalog shows screenshots: list some"
    );
    for s in shots {
        assert!(
            !s["name"].as_str().unwrap_or("").is_empty(),
            "{s}: a screenshot needs a name"
        );
        paths.push(s["path"].as_str().unwrap_or("").to_string());
    }
    for path in &paths {
        assert!(!path.trim().is_empty(), "empty path in plugin.json");
        assert!(
            !path.starts_with('.') && !path.starts_with('/') && !path.contains("://"),
            "{path}: relative to plugin.json, not starting with . or /"
        );
        assert!(root().join(path).is_file(), "{path} does not exist");
    }
    // Links (brokenlinks fetches them; that needs the network): at least absolute https.
    for l in p["info"]["links"].as_array().into_iter().flatten() {
        assert!(
            l["url"].as_str().is_some_and(|u| u.starts_with("https://")),
            "{l}"
        );
    }
}

/// [screenshots] The screenshots listed are exactly the ones the browser test renders
/// (`pkg/browser/screenshots.mjs`, `shoot(page, '<name>.png')` into docs/img/).
#[test]
fn screenshots_are_the_ones_the_browser_test_renders() {
    let script = read(&root().join("pkg/browser/screenshots.mjs"));
    let rendered: BTreeSet<String> = script
        .split("shoot(page, '")
        .skip(1)
        .filter_map(|rest| rest.split('\'').next())
        .map(|name| format!("docs/img/{name}"))
        .collect();
    assert!(rendered.len() >= 4, "{rendered:?}");
    let listed: BTreeSet<String> = plugin_json()["info"]["screenshots"]
        .as_array()
        .expect("screenshots")
        .iter()
        .map(|s| s["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, rendered);
}

/// [packagejson] The frontend's package.json version is plugin.json's.
#[test]
fn package_json_version_is_plugin_json_version() {
    let pkg = json(&root().join("pkg/package.json"));
    assert_eq!(pkg["version"], plugin_json()["info"]["version"]);
    assert_eq!(pkg["name"], PLUGIN_ID);
}

/// [changelog] CHANGELOG.md exists, is not empty, and is kept: an Unreleased section
/// and one for the version plugin.json announces.
#[test]
fn changelog_is_kept() {
    let text = read(&root().join("CHANGELOG.md"));
    assert!(!text.trim().is_empty());
    assert!(text.contains("## [Unreleased]"), "no Unreleased section");
    let version = plugin_json()["info"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.contains(&format!("## [{version}]")),
        "no section for {version}"
    );
}

/// [readme, templatereadme, jargon] A README of our own, without the words the
/// validator takes for developer jargon.
#[test]
fn readme_is_ours_and_free_of_the_validators_jargon() {
    let text = read(&root().join("README.md"));
    assert!(!text.starts_with("# Grafana Data Source Backend Plugin Template"));
    assert!(!text.starts_with("# Grafana Data Source Plugin Template"));
    for word in ["yarn", "nodejs"] {
        assert!(!text.contains(word), "README.md contains {word:?}");
    }
}

/// [unsafesvg] The logo is an SVG without scripts, event handlers or external references.
#[test]
fn logo_svg_is_safe() {
    for logo in ["small", "large"] {
        let path = plugin_json()["info"]["logos"][logo]
            .as_str()
            .unwrap()
            .to_string();
        let svg = read(&root().join(&path)).to_lowercase();
        assert!(svg.contains("<svg"), "{path} is not an SVG");
        for bad in [
            "<script",
            "javascript:",
            "<foreignobject",
            "href=\"http",
            "<iframe",
            "<embed",
            "<object",
        ] {
            assert!(!svg.contains(bad), "{path} contains {bad}");
        }
        let handler = svg.split_whitespace().find(|w| {
            w.starts_with("on")
                && w.contains('=')
                && w[2..]
                    .split('=')
                    .next()
                    .is_some_and(|n| n.chars().all(|c| c.is_ascii_alphabetic()))
        });
        assert!(
            handler.is_none(),
            "{path} has an event handler: {handler:?}"
        );
    }
}

/// Files of `dir`, relative, with their Unix modes.
fn files(dir: &Path) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = e.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                stack.push(path);
            } else {
                #[cfg(unix)]
                let mode = {
                    use std::os::unix::fs::PermissionsExt;
                    meta.permissions().mode() & 0o7777
                };
                #[cfg(not(unix))]
                let mode = 0o644;
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((rel, mode));
            }
        }
    }
    out.sort();
    out
}

/// [archive, archivename, backendbinary, binarypermissions, backenddebug, modulejs,
/// readme, changelog, license, logos, screenshots, includesnested, signature] on the
/// zip and on dist/.
#[test]
fn the_packaged_plugin_passes_the_validators_archive_checks() {
    let Some(dist) = dist() else { return };
    let p = json(&dist.join("plugin.json"));
    let version = p["info"]["version"].as_str().unwrap();
    let exe = p["executable"].as_str().unwrap();
    let zip = root().join(format!("{PLUGIN_ID}-{version}.zip"));

    // archive + archivename: one top folder, named after the id, not holding a dist/.
    let entries = support::zip::entries(&zip);
    assert!(!entries.is_empty(), "{} is empty", zip.display());
    let tops: BTreeSet<&str> = entries
        .iter()
        .map(|(n, _)| n.split('/').next().unwrap())
        .collect();
    assert_eq!(
        tops,
        BTreeSet::from([PLUGIN_ID]),
        "one top folder named after the plugin id"
    );
    assert!(!entries
        .iter()
        .any(|(n, _)| n.starts_with(&format!("{PLUGIN_ID}/dist/"))));

    // The zip holds exactly dist/, with the same modes.
    let in_dist = files(&dist);
    let in_zip: Vec<(String, u32)> = entries
        .iter()
        .filter(|(n, _)| !n.ends_with('/'))
        .map(|(n, m)| {
            (
                n.trim_start_matches(&format!("{PLUGIN_ID}/")).to_string(),
                m & 0o7777,
            )
        })
        .collect();
    let mut in_zip_sorted = in_zip.clone();
    in_zip_sorted.sort();
    assert_eq!(
        in_zip_sorted, in_dist,
        "the zip is not dist/: rerun scripts/package.sh"
    );

    for (name, mode) in &in_dist {
        let base = name.rsplit('/').next().unwrap();
        // binarypermissions: every file named like the executable is exactly 0755.
        if base.starts_with(exe) {
            assert_eq!(
                *mode, 0o755,
                "{name} has mode {mode:o}; the validator wants exactly 0755"
            );
        }
        // backenddebug: no files of a backend started in debug (standalone) mode.
        assert!(
            base != "standalone.txt" && base != "pid.txt",
            "{name} is a debug file"
        );
        // No editor or OS leftovers either.
        assert!(
            !base.starts_with('.') && !base.ends_with('~'),
            "{name} should not ship"
        );
        // includesnested: no nested plugin.json.
        assert!(
            name == "plugin.json" || base != "plugin.json",
            "nested plugin {name}"
        );
    }
    // backendbinary: at least one of the binaries Grafana looks for.
    let suffixes = [
        "_linux_amd64",
        "_linux_arm64",
        "_darwin_amd64",
        "_darwin_arm64",
        "_windows_amd64.exe",
    ];
    assert!(
        in_dist
            .iter()
            .any(|(n, _)| suffixes.iter().any(|s| *n == format!("{exe}{s}"))),
        "no {exe}_<os>_<arch> in dist/"
    );
    // modulejs, readme, changelog, license, logos, screenshots: present where plugin.json says.
    let mut required = vec![
        "module.js".to_string(),
        "README.md".into(),
        "CHANGELOG.md".into(),
        "LICENSE".into(),
    ];
    for logo in ["small", "large"] {
        required.push(p["info"]["logos"][logo].as_str().unwrap().to_string());
    }
    for s in p["info"]["screenshots"].as_array().unwrap() {
        required.push(s["path"].as_str().unwrap().to_string());
    }
    for r in required {
        assert!(in_dist.iter().any(|(n, _)| *n == r), "dist/ lacks {r}");
    }
    assert_eq!(read(&dist.join("LICENSE")), read(&root().join("LICENSE")));
    // signature: unsigned (no MANIFEST.txt) until Grafana signs it; README says how.
    assert!(
        !dist.join("MANIFEST.txt").exists(),
        "a MANIFEST.txt from an earlier signing would no longer match"
    );
}

/// [trackingscripts, jssourcemap, legacyplatform] module.js: no tracking scripts, no
/// Angular plugin SDK, and a source map whose sources are our frontend's sources.
#[test]
fn module_js_has_no_tracking_and_its_source_map_matches_the_sources() {
    let Some(dist) = dist() else { return };
    let module = read(&dist.join("module.js"));
    for tracker in [
        "https://www.google-analytics.com",
        "https://api-js.mixpanel.com",
        "https://mixpanel.com",
    ] {
        assert!(!module.contains(tracker), "module.js contains {tracker}");
    }
    assert!(
        !module.contains("app/plugins/sdk") && !module.contains("\"angular\""),
        "module.js uses the Angular plugin SDK"
    );

    // The validator compares the map's sources with `<source>/src` of the code it is
    // given; for this repository that is `pkg/` (with pkg/package.json).
    let map = json(&dist.join("module.js.map"));
    let sources = map["sources"].as_array().expect("sources in module.js.map");
    let contents = map["sourcesContent"]
        .as_array()
        .expect("sourcesContent in module.js.map");
    assert_eq!(sources.len(), contents.len());
    let mut ours = 0;
    for (s, c) in sources.iter().zip(contents) {
        let s = s.as_str().unwrap();
        if s.contains("node_modules") {
            continue;
        }
        let Some(at) = s.find("src/") else { continue };
        let file = root().join("pkg").join(&s[at..]);
        assert!(
            file.is_file(),
            "module.js.map names {s}, not a file under pkg/src"
        );
        // Not assert_eq: the whole file twice says less than its name.
        assert!(
            c.as_str().unwrap_or("") == read(&file),
            "module.js.map holds another {s} than pkg/{}: rebuild (scripts/package.sh)",
            &s[at..]
        );
        ours += 1;
    }
    assert!(ours >= 5, "only {ours} of our sources in module.js.map");
}

/// [brokenlinks] The catalog shows README.md alone, so its links must be absolute:
/// scripts/package.sh makes them so, on the "Source code" link of plugin.json; each
/// then names a file of this repository. (Fetching them needs the network.)
#[test]
fn packaged_readme_links_are_absolute_and_name_files_of_the_repository() {
    let Some(dist) = dist() else { return };
    let readme = read(&dist.join("README.md"));
    let repo = plugin_json()["info"]["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "Source code")
        .and_then(|l| l["url"].as_str())
        .expect("a Source code link in plugin.json")
        .trim_end_matches('/')
        .to_string();
    let mut checked = 0;
    for piece in readme.split("](").skip(1) {
        let target = piece.split([')', ' ']).next().unwrap();
        if target.starts_with('#') || target.starts_with("mailto:") {
            continue;
        }
        assert!(
            target.starts_with("https://") || target.starts_with("http://"),
            "dist/README.md has a relative link: {target}"
        );
        for kind in ["/raw/main/", "/blob/main/"] {
            if let Some(path) = target.strip_prefix(&format!("{repo}{kind}")) {
                let path = path.split('#').next().unwrap();
                assert!(
                    root().join(path).exists(),
                    "dist/README.md links {target}, but there is no {path}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "only {checked} links into the repository");
}
