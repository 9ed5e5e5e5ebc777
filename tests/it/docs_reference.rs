//! The reference documents against the binary: every configuration key that the built
//! `authd` knows (as `authd check-config` prints them) and every migration it carries is
//! documented, so a key or a migration cannot be added without its row.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::authd_bin;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The text of `doc` from the heading line `heading` to the next heading of the same level.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let level = heading.split(' ').next().unwrap();
    let start = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no heading '{heading}'"))
        + 1;
    let rest = &doc[start + heading.len()..];
    let end = rest
        .find(&format!("\n{level} "))
        .map_or(doc.len(), |i| start + heading.len() + i);
    &doc[start..end]
}

/// `section.key` for every `key = value` line under a `[section]` header of TOML `text`
/// (commented lines skipped).
fn toml_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut current = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.to_string());
        } else if let (Some(section), Some((key, _))) = (&current, line.split_once('=')) {
            keys.insert(format!("{section}.{}", key.trim()));
        }
    }
    keys
}

/// Every key the binary knows: `authd check-config` prints the effective configuration,
/// every key with its value, in TOML. Run in an empty directory with no `AUTHD_*` variable,
/// so it shows the built-in defaults alone.
fn binary_keys() -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(authd_bin());
    cmd.arg("check-config").current_dir(dir.path());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AUTHD_")) {
        cmd.env_remove(k);
    }
    let out = cmd.output().expect("authd check-config runs");
    assert!(
        out.status.success(),
        "check-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys = toml_keys(&String::from_utf8(out.stdout).unwrap());
    // A sanity floor: the contract's sections, so a change in the output's shape cannot
    // make this test pass on an empty list.
    for known in [
        "server.bind",
        "database.url",
        "jwt.access_ttl",
        "rate_limit.window",
        "log.level",
    ] {
        assert!(
            keys.contains(known),
            "check-config did not print {known}: {keys:?}"
        );
    }
    keys
}

/// `AUTHD_JWT__ACCESS_TTL` for `jwt.access_ttl`.
fn env_name(key: &str) -> String {
    format!("AUTHD_{}", key.replacen('.', "__", 1).to_uppercase())
}

#[test]
fn every_config_key_of_the_binary_is_in_the_api_reference() {
    let api = read("docs/API.md");
    let table = section(&api, "## Configuration");
    let missing: Vec<String> = binary_keys()
        .into_iter()
        .filter(|k| !table.contains(&format!("`{k}`")) || !table.contains(&env_name(k)))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/API.md, \"Configuration\", lacks a row (the key and its variable) for: {missing:?}"
    );
}

#[test]
fn every_config_key_of_the_binary_is_in_both_commented_config_files() {
    // config/default.toml is the built-in defaults and the README's "every key"; the
    // packaged /etc/authd/authd.toml promises every key too.
    let keys = binary_keys();
    for file in ["config/default.toml", "packaging/authd.toml"] {
        let present = toml_keys(&read(file));
        let missing: Vec<&String> = keys.iter().filter(|k| !present.contains(*k)).collect();
        assert!(missing.is_empty(), "{file} lacks: {missing:?}");
        let unknown: Vec<&String> = present.iter().filter(|k| !keys.contains(*k)).collect();
        assert!(
            unknown.is_empty(),
            "{file} sets keys the binary does not know: {unknown:?}"
        );
    }
}

/// `V<n>__<name>` of every migration file in `migrations/<backend>/`.
fn migrations(backend: &str) -> BTreeSet<String> {
    let dir = repo().join("migrations").join(backend);
    let names: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".sql").map(str::to_string))
        .collect();
    assert!(
        names.iter().any(|n| n == "V1__initial_schema"),
        "{}: {names:?}",
        dir.display()
    );
    names
}

#[test]
fn every_migration_of_both_backends_is_in_the_api_reference() {
    let api = read("docs/API.md");
    let storage = section(&api, "## Storage");
    let mut all = migrations("sqlite");
    all.extend(migrations("postgres"));
    let missing: Vec<&String> = all
        .iter()
        .filter(|m| !storage.contains(&format!("`{m}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/API.md, \"Storage\", lacks a row for the migrations {missing:?}"
    );
}

#[test]
fn the_helpers_see_what_they_should() {
    // The parsers above, on a small input, so a silent parse failure cannot pass the tests.
    let keys = toml_keys("# [x]\n[server]\nbind = \"a\"\n# hsts = true\n[log]\nlevel = \"info\"\n");
    assert_eq!(
        keys.into_iter().collect::<Vec<_>>(),
        ["log.level", "server.bind"]
    );
    assert_eq!(
        env_name("rate_limit.redis_url"),
        "AUTHD_RATE_LIMIT__REDIS_URL"
    );
    let doc = "# t\n\n## A\na\n### A1\nb\n## B\nc\n";
    assert_eq!(section(doc, "## A"), "## A\na\n### A1\nb");
    assert!(Path::new(&repo()).join("docs/API.md").exists());
}

/// `authd man-pages DIR`: the page names written (`authd-users-list`, without `.1`), and the
/// `authd...(N)` references in their text (roff's `\-` read as `-`).
fn man_pages() -> (BTreeSet<String>, Vec<(String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(authd_bin())
        .arg("man-pages")
        .arg(dir.path())
        .output()
        .expect("authd man-pages runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pages = BTreeSet::new();
    let mut refs = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let page = name
            .strip_suffix(".1")
            .unwrap_or_else(|| panic!("{name}"))
            .to_string();
        let text = std::fs::read_to_string(&path).unwrap().replace("\\-", "-");
        for (i, _) in text.match_indices("authd") {
            let rest = &text[i..];
            let word_end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(rest.len());
            if rest[word_end..].starts_with("(1)") {
                refs.push((page.clone(), rest[..word_end].to_string()));
            }
        }
        pages.insert(page);
    }
    (pages, refs)
}

#[test]
fn every_man_page_reference_has_a_page() {
    let (pages, refs) = man_pages();
    for expected in [
        "authd",
        "authd-serve",
        "authd-users",
        "authd-users-list",
        "authd-keys-rotate",
    ] {
        assert!(pages.contains(expected), "no page {expected}: {pages:?}");
    }
    assert!(!refs.is_empty(), "authd(1) names no command pages");
    let dangling: Vec<&(String, String)> =
        refs.iter().filter(|(_, r)| !pages.contains(r)).collect();
    assert!(
        dangling.is_empty(),
        "(page, reference to no page): {dangling:?}"
    );
    // What the units and the docs send readers to: `man:authd-...(1)` and `man authd-...`.
    for file in [
        "packaging/systemd/authd.service",
        "packaging/systemd/authd-cleanup.service",
        "packaging/systemd/authd-cleanup.timer",
        "README.md",
        "docs/PACKAGING.md",
    ] {
        let text = read(file);
        for prefix in ["man:", "man "] {
            for (i, _) in text.match_indices(&format!("{prefix}authd")) {
                let rest = &text[i + prefix.len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .unwrap_or(rest.len());
                let page = &rest[..end];
                assert!(
                    pages.contains(page),
                    "{file} names the man page {page}, which does not exist"
                );
            }
        }
    }
}

#[test]
fn serve_help_names_the_address_variable() {
    let out = Command::new(authd_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    for needle in ["AUTHD_SERVER__BIND", "server.bind", "127.0.0.1:8080"] {
        assert!(
            help.contains(needle),
            "serve --help lacks {needle}:\n{help}"
        );
    }
}

#[test]
fn one_version_in_the_binary_the_changelog_and_the_api_description() {
    // The .deb takes its version from Cargo.toml too (cargo-deb: `<version>-1`);
    // packaging/test-deb.sh checks the built package against `authd --version`.
    let version = env!("CARGO_PKG_VERSION");
    let out = Command::new(authd_bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("authd {version}")
    );
    let changelog = read("CHANGELOG.md");
    let newest = changelog
        .lines()
        .find(|l| l.starts_with("## ["))
        .expect("CHANGELOG.md has a release heading");
    assert!(
        newest.starts_with(&format!("## [{version}]")),
        "CHANGELOG.md's newest release is '{newest}', the crate's version {version}"
    );
    assert!(
        changelog.contains("## [0.1.0]"),
        "CHANGELOG.md starts at 0.1.0"
    );
    let openapi = read("docs/openapi.yaml");
    assert!(
        openapi.contains(&format!("\n  version: {version}\n")),
        "docs/openapi.yaml's info.version is not {version}"
    );
    for licence in ["LICENSE-MIT", "LICENSE-APACHE"] {
        assert!(repo().join(licence).is_file(), "{licence} is missing");
    }
}
