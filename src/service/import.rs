//! Service layer: `import-users`: accounts brought over from another system with their bcrypt
//! hashes (JSON Lines, one user a line). Every line is checked before anything is written, and
//! the users are then inserted in one transaction; no bcrypt work is done (the hashes are
//! upgraded to the configured cost at each user's next login). A hash costlier than
//! `crypto::password::import_max_cost` is a bad line: every wrong guess against it would
//! spend that much work.

use std::collections::HashMap;
use std::sync::Arc;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::audit::{Event, Record};
use super::Core;
use crate::blocking::blocking;
use crate::crypto::password::{bcrypt_cost, import_max_cost, IMPORT_COST_FLOOR};
use crate::domain::time::{now_ms, Millis};
use crate::domain::{validate, ClientInfo, NewUser, Role};
use crate::error::AppError;
use crate::store::ImportOutcome;

/// The fields a line may hold.
const FIELDS: [&str; 4] = ["email", "passwordHash", "name", "role"];

/// How to import.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    /// Skip lines whose email already has an account (else such a line fails the import).
    pub skip_existing: bool,
    /// Validate and count only; write nothing.
    pub dry_run: bool,
}

/// What an import did (or, on a dry run, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    pub imported: usize,
    pub skipped: usize,
}

/// A line that cannot be imported, and every reason why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number in the file.
    pub line: usize,
    pub problems: Vec<String>,
}

/// Why nothing was imported.
#[derive(Debug)]
pub enum ImportError {
    /// These lines are bad (every one is listed).
    BadLines(Vec<BadLine>),
    /// These emails (with their line numbers) already have accounts, and skipping them was
    /// not asked for.
    Existing(Vec<(usize, String)>),
    /// The database (or the runtime) failed.
    App(AppError),
}

impl From<AppError> for ImportError {
    fn from(e: AppError) -> Self {
        ImportError::App(e)
    }
}

#[derive(Clone)]
pub struct Import {
    core: Arc<Core>,
}

impl Import {
    pub fn new(core: Arc<Core>) -> Self {
        Import { core }
    }

    /// Imports the users of `jsonl` (the file's bytes). Lines holding only white space are
    /// ignored (a trailing newline, blank separators); line numbers count every line.
    /// Records one `user_import` audit event per run that wrote something.
    pub async fn run(
        &self,
        jsonl: Vec<u8>,
        options: ImportOptions,
        client: &ClientInfo,
    ) -> Result<ImportReport, ImportError> {
        let now = now_ms();
        let max_cost = import_max_cost(self.core.settings.password.bcrypt_cost);
        let (users, lines) = blocking(move || parse(&jsonl, now, max_cost))
            .await?
            .map_err(ImportError::BadLines)?;
        let outcome = self
            .core
            .db(move |s| s.import_users(users, options.skip_existing, options.dry_run))
            .await?;
        let report = match outcome {
            ImportOutcome::Imported { imported, skipped } => ImportReport { imported, skipped },
            ImportOutcome::Existing(emails) => {
                let by_email: HashMap<&str, usize> =
                    lines.iter().map(|(e, l)| (e.as_str(), *l)).collect();
                let mut named: Vec<(usize, String)> = emails
                    .into_iter()
                    .map(|e| (by_email.get(e.as_str()).copied().unwrap_or(0), e))
                    .collect();
                named.sort();
                return Err(ImportError::Existing(named));
            }
        };
        if !options.dry_run {
            let reason = format!(
                "imported {}, skipped {} existing",
                report.imported, report.skipped
            );
            self.core
                .audit(Record {
                    event: Event::UserImport,
                    user_id: None,
                    email: None,
                    client,
                    success: true,
                    reason: Some(&reason),
                })
                .await;
        }
        Ok(report)
    }
}

/// Every line checked (a hash above `max_cost` is bad); the users to insert and each one's
/// (email, line number), or every bad line.
#[allow(clippy::type_complexity)]
fn parse(
    jsonl: &[u8],
    now: Millis,
    max_cost: u32,
) -> Result<(Vec<NewUser>, Vec<(String, usize)>), Vec<BadLine>> {
    let jsonl = jsonl.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(jsonl);
    let mut users = Vec::new();
    let mut lines = Vec::new();
    let mut bad = Vec::new();
    let mut first_line_of: HashMap<String, usize> = HashMap::new();
    for (i, raw) in jsonl.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match user_of_line(raw, now, max_cost) {
            Ok(user) => {
                if let Some(first) = first_line_of.get(&user.email) {
                    bad.push(BadLine {
                        line,
                        problems: vec![format!("email repeats line {first}")],
                    });
                    continue;
                }
                first_line_of.insert(user.email.clone(), line);
                lines.push((user.email.clone(), line));
                users.push(user);
            }
            Err((email, problems)) => {
                // A valid email on a bad line still counts for duplicates further down.
                let mut problems = problems;
                if let Some(email) = email {
                    match first_line_of.get(&email) {
                        Some(first) => problems.push(format!("email repeats line {first}")),
                        None => {
                            first_line_of.insert(email, line);
                        }
                    }
                }
                bad.push(BadLine { line, problems });
            }
        }
    }
    if bad.is_empty() {
        Ok((users, lines))
    } else {
        Err(bad)
    }
}

/// One line as a new user, or its problems (with its normalised email when that is valid).
#[allow(clippy::type_complexity)]
fn user_of_line(
    raw: &[u8],
    now: Millis,
    max_cost: u32,
) -> Result<NewUser, (Option<String>, Vec<String>)> {
    let obj = match serde_json::from_slice::<UniqueKeys>(raw) {
        Ok(UniqueKeys(obj)) => obj,
        Err(e) if e.to_string().starts_with("duplicate key") => {
            return Err((None, vec!["is not a JSON object with unique keys".into()]))
        }
        Err(_) => return Err((None, vec!["is not a JSON object".into()])),
    };
    let mut problems = Vec::new();
    for key in obj.keys() {
        if !FIELDS.contains(&key.as_str()) {
            let shown: String = key.chars().filter(|c| !c.is_control()).take(64).collect();
            problems.push(format!("unknown field '{shown}'"));
        }
    }
    let email = match obj.get("email") {
        None | Some(Value::Null) => {
            problems.push("lacks email".into());
            None
        }
        Some(Value::String(s)) => validate::email(s)
            .map_err(|e| problems.push(format!("email {}", e.message)))
            .ok(),
        Some(_) => {
            problems.push("email must be a string".into());
            None
        }
    };
    let hash = match obj.get("passwordHash") {
        None | Some(Value::Null) => {
            problems.push("lacks passwordHash".into());
            None
        }
        Some(Value::String(s)) => match bcrypt_cost(s) {
            Some(cost) if cost <= max_cost => Some(s.clone()),
            Some(cost) => {
                problems.push(format!(
                    "passwordHash has bcrypt cost {cost}, above the {max_cost} import accepts \
                     (the larger of password.bcrypt_cost and {IMPORT_COST_FLOOR})"
                ));
                None
            }
            None => {
                problems.push(format!(
                    "passwordHash is not a bcrypt hash ($2a$, $2b$ or $2y$, cost 4 to {max_cost})"
                ));
                None
            }
        },
        Some(_) => {
            problems.push(format!(
                "passwordHash is not a bcrypt hash ($2a$, $2b$ or $2y$, cost 4 to {max_cost})"
            ));
            None
        }
    };
    let name = match obj.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => validate::name(Some(s))
            .map_err(|e| problems.push(format!("name {}", e.message)))
            .ok()
            .flatten(),
        Some(_) => {
            problems.push("name must be a string".into());
            None
        }
    };
    let role = match obj.get("role") {
        None | Some(Value::Null) => Role::User,
        Some(Value::String(s)) if s == "user" => Role::User,
        Some(Value::String(s)) if s == "admin" => Role::Admin,
        Some(_) => {
            problems.push("role must be user or admin".into());
            Role::User
        }
    };
    match (email, hash) {
        (Some(email), Some(password_hash)) if problems.is_empty() => Ok(NewUser {
            id: Uuid::new_v4(),
            email,
            name,
            role,
            password_hash,
            created_at: now,
            email_verified: true,
        }),
        (email, _) => Err((email, problems)),
    }
}

/// A JSON object whose keys are unique (a repeated key is an error, not "the last one wins").
struct UniqueKeys(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
                let mut out = Map::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("duplicate key '{k}'")));
                    }
                    out.insert(k, v);
                }
                Ok(UniqueKeys(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2b$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie";

    fn problems(jsonl: &str) -> Vec<(usize, Vec<String>)> {
        parse(jsonl.as_bytes(), 0, 14)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|b| (b.line, b.problems))
            .collect()
    }

    #[test]
    fn good_lines_become_users_and_blank_lines_are_ignored() {
        let jsonl = format!(
            "\u{feff}{{\"email\":\" Ann@X.io \",\"passwordHash\":\"{HASH}\",\"name\":\" Ann \",\"role\":\"admin\"}}\r\n\n  \n{{\"email\":\"bob@x.io\",\"passwordHash\":\"{HASH}\",\"name\":null}}\n"
        );
        let (users, lines) = parse(jsonl.as_bytes(), 7, 14).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].email, "ann@x.io");
        assert_eq!(users[0].name.as_deref(), Some("Ann"));
        assert_eq!(users[0].role, Role::Admin);
        assert_eq!(users[0].created_at, 7);
        assert_eq!(users[1].role, Role::User);
        assert_eq!(users[1].name, None);
        assert_eq!(lines, [("ann@x.io".into(), 1), ("bob@x.io".into(), 4)]);
    }

    #[test]
    fn every_bad_line_is_named_with_every_problem() {
        let ok = |e: &str| format!("{{\"email\":\"{e}\",\"passwordHash\":\"{HASH}\"}}");
        let jsonl = [
            ok("a@x.io"),
            "[1,2]".into(),
            "{\"email\":\"b@x.io\"}".into(),
            format!("{{\"email\":\"c@x.io\",\"passwordHash\":\"{HASH}\",\"isAdmin\":true}}"),
            "{\"email\":\"not-an-email\",\"passwordHash\":\"$2x$04$abc\"}".to_string(),
            format!("{{\"email\":\"d@x.io\",\"passwordHash\":\"{HASH}\",\"role\":\"root\"}}"),
            format!("{{\"email\":\"e@x.io\",\"passwordHash\":\"{HASH}\",\"name\":\"a\\nb\"}}"),
            ok("A@X.IO"),
            format!("{{\"email\":\"f@x.io\",\"email\":\"g@x.io\",\"passwordHash\":\"{HASH}\"}}"),
            "not json".into(),
            ok("h@x.io"),
        ]
        .join("\n");
        let bad = problems(&jsonl);
        let numbers: Vec<usize> = bad.iter().map(|(l, _)| *l).collect();
        assert_eq!(numbers, [2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(bad[1].1, ["lacks passwordHash"]);
        assert_eq!(bad[2].1, ["unknown field 'isAdmin'"]);
        assert_eq!(bad[3].1.len(), 2, "{:?}", bad[3]);
        assert_eq!(bad[4].1, ["role must be user or admin"]);
        assert_eq!(bad[6].1, ["email repeats line 1"]);
    }

    #[test]
    fn an_empty_file_imports_nothing() {
        let (users, _) = parse(b"", 0, 14).unwrap();
        assert!(users.is_empty());
        let (users, _) = parse(b"\n\n", 0, 14).unwrap();
        assert!(users.is_empty());
    }
}
