//! A scratch PostgreSQL database per fixture: created on the server a `--database` URL names
//! (`authd_bench_<random>`), dropped when the handle drops (also on an error or a panic).

use anyhow::{ensure, Context};

/// A database this run created; dropped (with any connections left) on drop.
pub struct PgDatabase {
    /// The URL the bench was given: where `CREATE` and `DROP DATABASE` run.
    admin_url: String,
    pub name: String,
    /// The URL of the new database (the given one with its database name replaced).
    pub url: String,
}

impl PgDatabase {
    /// Creates `authd_bench_<tag>_<random>` on the server `admin_url` names.
    pub fn create(admin_url: &str, tag: &str) -> anyhow::Result<Self> {
        let tag: String = tag
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let name = format!("authd_bench_{tag}_{:08x}", rand::random::<u32>());
        let url = with_database(admin_url, &name)?;
        let mut client = connect(admin_url)?;
        // The name is ours (letters, digits, underscores): no quoting issue.
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .with_context(|| format!("creating database {name}"))?;
        Ok(PgDatabase {
            admin_url: admin_url.to_string(),
            name,
            url,
        })
    }

    /// `pg_database_size` of this database (bytes on disk: tables, indexes, their free
    /// space; not the server's WAL). `None` when it cannot be read.
    pub fn size_bytes(&self) -> Option<u64> {
        let mut client = connect(&self.url).ok()?;
        let row = client
            .query_one("SELECT pg_database_size(current_database())", &[])
            .ok()?;
        u64::try_from(row.get::<_, i64>(0)).ok()
    }

    /// The database's URL with `synchronous_commit = off` for its sessions: for seeding only
    /// (the server is not running; a crash would only lose the bench's own rows).
    pub fn seeding_url(&self) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-c%20synchronous_commit%3Doff", self.url)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let dropped = connect(&self.admin_url).and_then(|mut c| {
            c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .map_err(Into::into)
        });
        if let Err(e) = dropped {
            eprintln!(
                "authd-bench: warning: could not drop database {}: {e:#}",
                self.name
            );
        }
    }
}

fn connect(url: &str) -> anyhow::Result<postgres::Client> {
    postgres::Client::connect(url, postgres::NoTls)
        .with_context(|| format!("connecting to {}", redact(url)))
}

/// `url` naming database `name` instead of its own (query parameters kept).
pub fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .context("--database must be a postgres://... URL")?;
    ensure!(
        matches!(scheme, "postgres" | "postgresql"),
        "--database must be a postgres://... URL"
    );
    let (base, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = base.split('/').next().unwrap_or(base);
    let mut out = format!("{scheme}://{authority}/{name}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgresql://h", "x").unwrap(),
            "postgresql://h/x"
        );
        assert!(with_database("sqlite://a.db", "x").is_err());
        assert_eq!(redact("postgres://u:p@h/d"), "postgres://u:***@h/d");
    }
}
