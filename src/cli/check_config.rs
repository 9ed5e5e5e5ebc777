//! CLI: `authd check-config`: validate the configuration and print the effective values,
//! every secret redacted. Exit 1 names each bad key.

use std::sync::Arc;

use super::CliError;
use crate::config::Settings;
use crate::domain::terminal::{self, Shown};

pub async fn run(settings: Arc<Settings>) -> Result<(), CliError> {
    for w in &settings.warnings {
        eprintln!("warning: {}", Shown(w));
    }
    print!("{}", toml_for_terminal(&settings.to_redacted_toml()));
    Ok(())
}

/// The effective configuration with every character a terminal must not receive as it is
/// written as a TOML escape (`\uXXXX`, `\UXXXXXXXX`), so the output is still TOML holding the
/// same values. Only string values can hold such a character, and they are basic strings
/// whose controls and backslashes `to_redacted_toml` has already escaped; what is left are
/// C1 controls and format characters (bidi overrides, zero-width characters).
fn toml_for_terminal(toml: &str) -> String {
    let mut out = String::with_capacity(toml.len());
    for c in toml.chars() {
        match c {
            '\n' => out.push(c),
            c if terminal::is_unsafe(c) && (c as u32) <= 0xFFFF => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c if terminal::is_unsafe(c) => out.push_str(&format!("\\U{:08X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_characters_become_toml_escapes_of_the_same_value() {
        let line = format!(
            "issuer = {}\n",
            serde_json::to_string("a\x1b[2J\u{9b}\u{202e}\u{e0041}\\b").unwrap()
        );
        let shown = toml_for_terminal(&line);
        assert!(!shown.chars().any(|c| c != '\n' && terminal::is_unsafe(c)));
        let parsed = ::config::Config::builder()
            .add_source(::config::File::from_str(&shown, ::config::FileFormat::Toml))
            .build()
            .unwrap();
        assert_eq!(
            parsed.get_string("issuer").unwrap(),
            "a\x1b[2J\u{9b}\u{202e}\u{e0041}\\b"
        );
    }
}
