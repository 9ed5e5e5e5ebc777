//! The benchmark harness runs end to end: `authd-bench --smoke` exercises every scenario and
//! writes its JSON. Only that it works is checked, never how fast anything is.

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_smoke_runs_every_scenario_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.json");
    let run = Command::new(env!("CARGO_BIN_EXE_authd-bench"))
        .args(["--smoke", "--out"])
        .arg(&out)
        .output()
        .expect("authd-bench runs");
    assert!(
        run.status.success(),
        "authd-bench --smoke failed ({}):\nstdout:\n{}\nstderr:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let table = String::from_utf8_lossy(&run.stdout);
    for scenario in [
        "login",
        "profile",
        "refresh",
        "isolation",
        "scale",
        "memory",
        "enumeration",
        "mfa",
        "soak",
    ] {
        assert!(table.contains(scenario), "no {scenario} row in:\n{table}");
    }

    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let scenarios = &doc["scenarios"];
    let number = |v: &Value, what: &str| {
        assert!(v.is_number(), "{what} is not a number: {v}");
    };
    for load in ["login", "profile", "refresh", "isolation", "scale", "mfa"] {
        number(
            &scenarios[load]["throughput_rps"],
            &format!("{load}.throughput_rps"),
        );
    }
    // Every run got the answers it expected (how many, and how fast, is not checked).
    let answered = |run: &Value, what: &str| {
        number(&run["throughput_rps"], &format!("{what} throughput"));
        assert!(
            run["answered"].as_u64() > Some(0),
            "{what}: no answer: {run}"
        );
        assert_eq!(
            run["errors"].as_u64(),
            Some(0),
            "{what}: failed requests: {run}"
        );
    };
    answered(&scenarios["login"]["run"], "login");
    answered(&scenarios["profile"]["run"], "profile");
    answered(&scenarios["profile"]["bare"], "bare");
    answered(&scenarios["refresh"]["run"], "refresh");
    for run in ["profile_unloaded", "profile_loaded", "login_flood"] {
        answered(&scenarios["isolation"][run], run);
    }
    // MFA: both logins answered (the TOTP one as whole exchanges: password, then code).
    answered(&scenarios["mfa"]["run"], "password+TOTP login");
    answered(&scenarios["mfa"]["password_run"], "password login");
    number(&scenarios["mfa"]["cost_ratio"], "mfa cost ratio");
    let steps = scenarios["scale"]["steps"].as_array().expect("scale steps");
    assert_eq!(steps.len(), 3);
    for step in steps {
        answered(&step["refresh"], "scale refresh");
        answered(&step["profile"], "scale profile");
    }
    // Memory has no throughput; its figures are the server's RSS and start-up time.
    number(
        &scenarios["memory"]["idle"]["peak_rss_bytes"],
        "idle peak RSS",
    );
    number(&scenarios["memory"]["start_to_ready_ms"], "start to ready");
    // Enumeration: both medians measured, and the two kinds of failure answered identically.
    let enumeration = &scenarios["enumeration"];
    number(
        &enumeration["wrong_password_median_ms"],
        "wrong-password median",
    );
    number(
        &enumeration["unknown_email_median_ms"],
        "unknown-email median",
    );
    assert_eq!(enumeration["identical_bodies"], true, "{enumeration}");
    // Soak: the mixed maximum, then the paced mix, each with all three kinds answered; ten
    // slices, and the server's memory sampled at the end of each.
    let soak = &scenarios["soak"];
    answered(&soak["max_run"], "soak maximum");
    answered(&soak["run"], "soak");
    for kind in ["profile", "refresh", "login"] {
        assert!(
            soak["answered"][kind].as_u64() > Some(0),
            "soak {kind}: {soak}"
        );
    }
    assert_eq!(soak["slices"].as_array().map(Vec::len), Some(10), "{soak}");
    let rss = soak["rss_bytes_per_slice"].as_array().expect("soak RSS");
    assert!(
        rss.len() == 10 && rss.iter().all(Value::is_number),
        "{soak}"
    );
    number(&soak["database_bytes"]["after"], "soak database size");
    for (name, s) in scenarios.as_object().unwrap() {
        let checks = s["checks"].as_array().expect("checks");
        assert!(!checks.is_empty(), "{name} has no checks");
        for c in checks {
            assert!(c["pass"].is_boolean() && c["target"].is_string(), "{c}");
        }
    }
    number(&doc["machine"]["cores"], "machine.cores");
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));

    // `--table` renders these results as the published table: a column for the file, a
    // row per check.
    let table = bench_table(std::slice::from_ref(&out));
    let checks: usize = scenarios
        .as_object()
        .unwrap()
        .values()
        .map(|s| s["checks"].as_array().unwrap().len())
        .sum();
    assert_eq!(
        table.lines().filter(|l| l.starts_with("| ")).count(),
        checks + 1,
        "{table}"
    );
    assert!(
        table.contains(&format!("| {} (", env!("CARGO_PKG_VERSION"))),
        "{table}"
    );
    let bad = dir.path().join("not.json");
    std::fs::write(&bad, "{}").unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_authd-bench"))
        .arg("--table")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not an authd-bench result"), "{err}");
}

/// `authd-bench --table FILES`: its standard output.
fn bench_table(files: &[std::path::PathBuf]) -> String {
    let run = Command::new(env!("CARGO_BIN_EXE_authd-bench"))
        .arg("--table")
        .args(files)
        .output()
        .expect("authd-bench runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8(run.stdout).unwrap()
}

/// docs/PERFORMANCE.md's "Published results" table is what `authd-bench --table` makes of the
/// committed `bench/results/<version>.json` files (oldest version first): a new result file
/// without its table, or a table edited by hand, fails here.
#[test]
fn the_published_results_table_is_generated_from_the_committed_results() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<(Vec<u64>, std::path::PathBuf)> =
        std::fs::read_dir(root.join("bench/results"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter_map(|p| {
                let stem = p.file_stem()?.to_str()?.to_string();
                let version: Option<Vec<u64>> = stem.split('.').map(|n| n.parse().ok()).collect();
                (p.extension()? == "json").then_some(())?;
                Some((version?, p))
            })
            .collect();
    files.sort();
    assert!(!files.is_empty(), "no bench/results/<version>.json");
    let files: Vec<_> = files.into_iter().map(|(_, p)| p).collect();
    let table = bench_table(&files);
    let doc = std::fs::read_to_string(root.join("docs/PERFORMANCE.md")).unwrap();
    let begin =
        "<!-- published results: authd-bench --table bench/results/<version>.json ... -->\n";
    let end = "<!-- end of published results -->";
    let from = doc
        .find(begin)
        .expect("the published results' start marker")
        + begin.len();
    let to = from
        + doc[from..]
            .find(end)
            .expect("the published results' end marker");
    assert_eq!(
        doc[from..to].trim(),
        table.trim(),
        "docs/PERFORMANCE.md's published results differ from authd-bench --table; paste:\n{table}"
    );
}
