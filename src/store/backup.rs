//! Store layer: `authd backup` and `authd restore` (CONTRACT 12.4). A backup is a SQLite file
//! at this binary's schema, whichever backend it was taken from, so one file restores into
//! either backend.
//!
//! The copy is generic: tables and columns are read from the schemas themselves (every table
//! but refinery's history, which each side writes by running its own migrations), values are
//! converted by the target column's type (UUID <-> TEXT, BOOLEAN <-> INTEGER 0/1, BYTEA <->
//! BLOB, BIGINT/INTEGER <-> INTEGER, TEXT), and tables are filled in an order that satisfies
//! their foreign keys. A table a later migration adds is carried without a change here.
//!
//! - Backup from SQLite: `VACUUM INTO` on a connection of its own: one read transaction, a
//!   consistent snapshot, while writers go on (WAL).
//! - Backup from PostgreSQL: one `REPEATABLE READ READ ONLY` transaction reads every table
//!   into a new SQLite file made by authd's SQLite migrations.
//! - Either way the file is written under a temporary name in the target's directory (mode
//!   0600), checked (`verify`), fsynced, then renamed: nothing half-written ever carries the
//!   target's name.
//! - Restore: the target (either backend) must hold no data; it is migrated, then filled in
//!   one transaction that checks each table's row count before it commits.

use crate::domain::audit_chain::Verdict;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::migrations::TABLE as MIGRATIONS_TABLE;
use super::sqlite::migrations as sqlite_migrations;
use super::transfer::{self, pg_err, SEEDED_BY_MIGRATIONS};
use super::{StoreError, StoreOptions, StoreResult};

/// What a backup wrote: the rows of each table (by name) and the file's SHA-256 (hex).
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub tables: Vec<(String, u64)>,
    pub sha256: String,
}

/// What `verify` found in a backup that passed every check.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The schema version (the newest migration recorded), equal to this binary's.
    pub schema_version: i64,
    /// Rows per table, by table name.
    pub tables: Vec<(String, u64)>,
    /// What the audit chain check said.
    pub audit_chain: AuditChain,
}

/// The audit chain inside a backup (CONTRACT 12.2), as far as this build can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditChain {
    /// The schema has no chain columns: nothing to check.
    Absent,
    /// The chain verified; the text says how far (`N events sealed, head SEQ:HASH`).
    Verified(String),
}

/// What a restore did: rows per table in the order restored, and migrations applied to the
/// target first.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub tables: Vec<(String, u64)>,
    pub migrations_applied: usize,
}

/// Writes a consistent copy of the database at `url` (either backend, at exactly this
/// binary's schema) to `file` as a SQLite database, while servers keep using it. Refuses an
/// existing `file` unless `force`.
///
/// Errors: `Migration` when the source's schema is not this binary's; `Unavailable` when the
/// source cannot be reached; `Other` for an existing file, a write that fails (a full disk),
/// or a copy that does not verify. On any error nothing is left under `file`'s name (an
/// existing file replaced with `force` stays as it was).
pub fn backup(
    url: &str,
    options: &StoreOptions,
    file: &Path,
    force: bool,
) -> StoreResult<BackupReport> {
    let shown = file.display().to_string();
    match std::fs::symlink_metadata(file) {
        Ok(m) if m.is_dir() => {
            return Err(StoreError::Other(format!("{shown} is a directory")));
        }
        Ok(_) if !force => {
            return Err(StoreError::Other(format!(
                "{shown} exists; pass --force to replace it"
            )));
        }
        _ => {}
    }
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .ok_or_else(|| StoreError::Other(format!("{shown} names no file")))?
        .to_string_lossy()
        .into_owned();
    let partial = Partial {
        path: dir.join(format!(".{name}.partial-{}", std::process::id())),
    };
    partial.create().map_err(|e| {
        StoreError::Other(format!("cannot write in {}: {}", dir.display(), io_why(&e)))
    })?;
    let written = match url.split_once(':') {
        Some(("sqlite", rest)) => from_sqlite(
            rest.strip_prefix("//").unwrap_or(rest),
            options,
            &partial.path,
        ),
        Some(("postgres" | "postgresql", _)) => from_postgres(url, options, &partial.path),
        _ => Err(StoreError::Other(format!(
            "database.url '{}' names no backend authd knows",
            crate::config::redact_url(url)
        ))),
    };
    written.map_err(|e| match e {
        StoreError::Other(m) => match m.strip_prefix("writing the backup: ") {
            Some(why) => StoreError::Other(format!(
                "cannot write the backup {shown}: {why}; nothing was written under that name"
            )),
            None => StoreError::Other(m),
        },
        other => other,
    })?;
    let verified = verify(&partial.path).map_err(|e| {
        StoreError::Other(format!(
            "the copy did not verify ({e}); nothing was written under {shown}"
        ))
    })?;
    let sha256 = sync_and_hash(&partial.path).map_err(|e| {
        StoreError::Other(format!(
            "cannot write the backup {shown}: {}; nothing was written under that name",
            io_why(&e)
        ))
    })?;
    std::fs::rename(&partial.path, file).map_err(|e| {
        StoreError::Other(format!("cannot rename the copy to {shown}: {}", io_why(&e)))
    })?;
    partial.disarm();
    // The rename itself is durable once the directory is.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(BackupReport {
        tables: verified.tables,
        sha256,
    })
}

/// The temporary file a backup is written to; removed (with any journal SQLite left beside
/// it) unless disarmed after the rename.
struct Partial {
    path: PathBuf,
}

impl Partial {
    /// Creates the file empty, readable by its owner only (a backup holds password hashes
    /// and signing keys); SQLite's journals beside it get the same mode.
    fn create(&self) -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        opts.open(&self.path).map(drop)
    }

    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        for suffix in ["-journal", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

/// fsyncs the file and returns its SHA-256 (hex).
fn sync_and_hash(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    f.sync_all()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn io_why(e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull {
        "the disk is full".into()
    } else {
        e.to_string()
    }
}

/// A failure writing the backup file (the full disk case): the caller names the file.
fn write_err(e: rusqlite::Error) -> StoreError {
    let why = match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
            "the disk is full".to_string()
        }
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::SystemIoFailure => {
            format!("{e} (is the disk full?)")
        }
        _ => e.to_string(),
    };
    StoreError::Other(format!("writing the backup: {why}"))
}

fn read_err(e: rusqlite::Error) -> StoreError {
    StoreError::Other(format!("reading the SQLite database: {e}"))
}

/// A connection to an existing SQLite database (never creating one), set up to wait for
/// writers like authd's own connections.
fn open_existing(path: &str, options: &StoreOptions) -> StoreResult<Connection> {
    if !Path::new(path).is_file() {
        return Err(StoreError::Other(format!("no SQLite database at {path}")));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Unavailable(format!("cannot open {path}: {e}")))?;
    conn.busy_timeout(options.busy_timeout).map_err(read_err)?;
    Ok(conn)
}

/// The source must be at exactly this binary's schema: a backup is always restorable by the
/// binary that made it.
fn check_source_schema(url: &str, options: &StoreOptions) -> StoreResult<()> {
    let store = super::open(url, options)?;
    let checked = store.check_schema();
    drop(store);
    checked.map_err(|e| match e {
        StoreError::Migration(m) => StoreError::Migration(format!(
            "the database is not at this authd's schema ({m}); back it up with the authd \
             that runs it"
        )),
        other => other,
    })
}

fn from_sqlite(path: &str, options: &StoreOptions, out: &Path) -> StoreResult<()> {
    let conn = open_existing(path, options)?;
    check_source_schema(&format!("sqlite://{path}"), options)?;
    // One read transaction: a consistent snapshot; in WAL mode writers are not held up.
    conn.execute("VACUUM INTO ?1", [out.to_string_lossy()])
        .map_err(|e| match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::SystemIoFailure
                        | rusqlite::ErrorCode::CannotOpen
                ) =>
            {
                write_err(e)
            }
            _ => read_err(e),
        })?;
    drop(conn);
    // A file of its own: no WAL beside it.
    let out_conn = Connection::open(out).map_err(write_err)?;
    out_conn
        .query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))
        .map_err(write_err)?;
    Ok(())
}

/// A PostgreSQL connection of its own (not pooled: one long read transaction).
fn pg_connect(url: &str) -> StoreResult<postgres::Client> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Other(format!("not a valid PostgreSQL URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("authd backup");
    }
    config
        .connect(postgres::NoTls)
        .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))
}

/// Tables (other than the migration history) and their columns' PostgreSQL types.
fn pg_tables(
    c: &mut impl postgres::GenericClient,
) -> StoreResult<BTreeMap<String, Vec<(String, String)>>> {
    let rows = c
        .query(
            "SELECT c.table_name::text, c.column_name::text, c.data_type::text \
             FROM information_schema.columns c JOIN information_schema.tables t \
               ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
             WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' \
               AND c.table_name <> $1 \
             ORDER BY c.table_name, c.ordinal_position",
            &[&MIGRATIONS_TABLE],
        )
        .map_err(pg_err)?;
    let mut tables: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for r in rows {
        tables
            .entry(r.get(0))
            .or_default()
            .push((r.get(1), r.get(2)));
    }
    Ok(tables)
}

fn from_postgres(url: &str, options: &StoreOptions, out: &Path) -> StoreResult<()> {
    check_source_schema(url, options)?;
    let mut out_conn = Connection::open(out).map_err(write_err)?;
    out_conn
        .execute_batch("PRAGMA foreign_keys = ON;")
        .map_err(write_err)?;
    sqlite_migrations::apply_all(&mut out_conn)
        .map_err(|e| StoreError::Other(format!("writing the backup: {e}")))?;
    let target_tables = sqlite_tables(&out_conn, "main").map_err(write_err)?;
    let order = sqlite_fk_order(&out_conn, "main", &target_tables)?;

    let mut client = pg_connect(url)?;
    // One snapshot for every table: a backup taken while servers write is consistent.
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(pg_err)?;
    // The schema again, inside the snapshot (a migration may have run since the check).
    let newest: Option<i64> = tx
        .query_one(
            &format!("SELECT max(version)::bigint FROM {MIGRATIONS_TABLE}"),
            &[],
        )
        .map_err(pg_err)?
        .get(0);
    let ours = sqlite_migrations::known().last().map(|k| k.0);
    if newest != ours {
        return Err(StoreError::Migration(format!(
            "the database's schema moved to version {newest:?} during the backup; this authd \
             is at {ours:?}"
        )));
    }
    let source = pg_tables(&mut tx)?;
    let source_names: BTreeSet<&String> = source.keys().collect();
    let target_names: BTreeSet<&String> = target_tables.keys().collect();
    if source_names != target_names {
        return Err(StoreError::Other(format!(
            "the PostgreSQL tables {source_names:?} differ from this authd's SQLite schema \
             {target_names:?}"
        )));
    }

    let wtx = out_conn.transaction().map_err(write_err)?;
    for table in SEEDED_BY_MIGRATIONS {
        if target_tables.contains_key(*table) {
            wtx.execute(&format!("DELETE FROM {table}"), [])
                .map_err(write_err)?;
        }
    }
    for table in &order {
        let columns = &source[table];
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        let ours: BTreeSet<&str> = target_tables[table].iter().map(String::as_str).collect();
        if ours != names.iter().copied().collect() {
            return Err(StoreError::Other(format!(
                "table {table} has columns {names:?} in PostgreSQL but {ours:?} in this \
                 authd's SQLite schema"
            )));
        }
        let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
        let mut insert = wtx
            .prepare(&format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                names.join(", "),
                placeholders.join(", ")
            ))
            .map_err(write_err)?;
        let select = format!("SELECT {} FROM {table}", names.join(", "));
        let mut rows = tx
            .query_raw(select.as_str(), std::iter::empty::<i32>())
            .map_err(pg_err)?;
        while let Some(row) = rows.next().map_err(pg_err)? {
            let mut values = Vec::with_capacity(columns.len());
            for (i, (name, pg_type)) in columns.iter().enumerate() {
                values.push(from_pg(&row, i, pg_type).map_err(|why| {
                    StoreError::Other(format!("table {table}, column {name}: {why}"))
                })?);
            }
            insert
                .execute(rusqlite::params_from_iter(values))
                .map_err(write_err)?;
        }
    }
    wtx.commit().map_err(write_err)?;
    tx.commit().map_err(pg_err)?;
    Ok(())
}

/// One PostgreSQL value as the SQLite schema stores it.
fn from_pg(row: &postgres::Row, i: usize, pg_type: &str) -> Result<Value, String> {
    let e = |e: postgres::Error| e.to_string();
    Ok(match pg_type {
        "uuid" => row
            .try_get::<_, Option<Uuid>>(i)
            .map_err(e)?
            .map_or(Value::Null, |u| Value::Text(u.to_string())),
        "boolean" => row
            .try_get::<_, Option<bool>>(i)
            .map_err(e)?
            .map_or(Value::Null, |b| Value::Integer(i64::from(b))),
        "bigint" => row
            .try_get::<_, Option<i64>>(i)
            .map_err(e)?
            .map_or(Value::Null, Value::Integer),
        "integer" => row
            .try_get::<_, Option<i32>>(i)
            .map_err(e)?
            .map_or(Value::Null, |n| Value::Integer(n.into())),
        "smallint" => row
            .try_get::<_, Option<i16>>(i)
            .map_err(e)?
            .map_or(Value::Null, |n| Value::Integer(n.into())),
        "text" | "character varying" => row
            .try_get::<_, Option<String>>(i)
            .map_err(e)?
            .map_or(Value::Null, Value::Text),
        "bytea" => row
            .try_get::<_, Option<Vec<u8>>>(i)
            .map_err(e)?
            .map_or(Value::Null, Value::Blob),
        other => return Err(format!("no conversion from PostgreSQL type {other}")),
    })
}

/// Tables of the SQLite `schema` (other than SQLite's own and the migration history) with
/// their column names.
fn sqlite_tables(
    conn: &Connection,
    schema: &str,
) -> rusqlite::Result<BTreeMap<String, Vec<String>>> {
    let names: Vec<String> = conn
        .prepare(&format!(
            "SELECT name FROM {schema}.sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> ?1"
        ))?
        .query_map([MIGRATIONS_TABLE], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut tables = BTreeMap::new();
    for name in names {
        let cols: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info(?1, ?2) ORDER BY cid")?
            .query_map([name.as_str(), schema], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        tables.insert(name, cols);
    }
    Ok(tables)
}

/// The tables in an order that inserts referenced rows first (Kahn's algorithm over the
/// foreign keys of `schema`; ties by name).
fn sqlite_fk_order(
    conn: &Connection,
    schema: &str,
    tables: &BTreeMap<String, Vec<String>>,
) -> StoreResult<Vec<String>> {
    let mut edges = Vec::new();
    for t in tables.keys() {
        let parents: Vec<String> = conn
            .prepare("SELECT \"table\" FROM pragma_foreign_key_list(?1, ?2)")
            .and_then(|mut s| {
                s.query_map([t.as_str(), schema], |r| r.get(0))?
                    .collect::<Result<_, _>>()
            })
            .map_err(read_err)?;
        edges.extend(
            parents
                .into_iter()
                .filter(|p| p != t)
                .map(|p| (t.clone(), p)),
        );
    }
    let mut left: BTreeSet<String> = tables.keys().cloned().collect();
    let mut order = Vec::new();
    while !left.is_empty() {
        let ready = left
            .iter()
            .find(|t| {
                !edges
                    .iter()
                    .any(|(from, to)| from == *t && left.contains(to))
            })
            .cloned()
            .ok_or_else(|| StoreError::Other("the tables' foreign keys form a cycle".into()))?;
        left.remove(&ready);
        order.push(ready);
    }
    Ok(order)
}

/// The SQLite file header's first 16 bytes.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Checks a backup without changing it: a SQLite file, whole (as long as its header says),
/// `integrity_check`, its schema exactly this binary's (a newer one is named as such), the
/// row count of every table, and the audit chain inside it when its schema has one.
///
/// Errors: `Other` with one line saying what is wrong.
pub fn verify(file: &Path) -> StoreResult<Verified> {
    let shown = file.display().to_string();
    let bad = |why: String| StoreError::Other(format!("{shown}: {why}"));
    let meta = std::fs::metadata(file).map_err(|e| bad(format!("cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(bad("not a file".into()));
    }
    let mut header = [0u8; 100];
    let got = std::fs::File::open(file)
        .and_then(|mut f| {
            let mut n = 0;
            while n < header.len() {
                let r = f.read(&mut header[n..])?;
                if r == 0 {
                    break;
                }
                n += r;
            }
            Ok(n)
        })
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    if got < 16 || &header[..16] != SQLITE_MAGIC {
        return Err(bad("not a SQLite database (not an authd backup)".into()));
    }
    if got < header.len() {
        return Err(bad("truncated (shorter than a SQLite header)".into()));
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536u64,
        n => u64::from(n),
    };
    let pages = u64::from(u32::from_be_bytes([
        header[28], header[29], header[30], header[31],
    ]));
    if meta.len() < page_size * pages || meta.len() % page_size.max(1) != 0 {
        return Err(bad(format!(
            "truncated ({} bytes, its header says {} pages of {page_size} bytes)",
            meta.len(),
            pages
        )));
    }
    let mut conn = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| bad(format!("cannot open it: {e}")))?;
    let damaged = |e: rusqlite::Error| bad(format!("damaged ({e})"));
    let problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check(5)")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(damaged)?;
    if problems != ["ok"] {
        return Err(bad(format!(
            "damaged (integrity_check: {})",
            problems.join("; ")
        )));
    }
    let schema_version = check_backup_schema(&mut conn).map_err(&bad)?;
    let tables = sqlite_tables(&conn, "main").map_err(damaged)?;
    let mut counts = Vec::new();
    for t in tables.keys() {
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
            .map_err(damaged)?;
        counts.push((t.clone(), n as u64));
    }
    let audit_chain = verify_audit_chain(&conn, &tables)
        .map_err(|why| bad(format!("the audit chain inside it is broken: {why}")))?;
    Ok(Verified {
        schema_version,
        tables: counts,
        audit_chain,
    })
}

/// The backup's schema version, when it is exactly this binary's; else why not.
fn check_backup_schema(conn: &mut Connection) -> Result<i64, String> {
    let recorded = sqlite_migrations::recorded(conn).map_err(|e| format!("damaged ({e})"))?;
    let known = sqlite_migrations::known();
    let ours = known.last().map_or(0, |k| k.0);
    let Some(newest) = recorded.last() else {
        return Err("not an authd backup (it has no schema history)".into());
    };
    for (version, name, checksum) in &recorded {
        match known.iter().find(|k| k.0 == *version) {
            None => {
                return Err(format!(
                    "its schema is version {} (V{version}__{name}), newer than this authd's \
                     ({ours}); restore it with a newer authd",
                    newest.0
                ))
            }
            Some(k) if k.2 != *checksum => {
                return Err(format!(
                    "its migration V{version}__{name} differs from this authd's (checksum \
                     mismatch)"
                ))
            }
            Some(_) => {}
        }
    }
    if newest.0 < ours || recorded.len() != known.len() {
        return Err(format!(
            "its schema is version {}, older than this authd's ({ours}); restore it with \
             the authd version that wrote it, then upgrade",
            newest.0
        ));
    }
    Ok(newest.0)
}

/// The audit chain inside a backup (CONTRACT 12.2): when `audit_events` has the chain's
/// columns (`seq` and `hash`), the chain is walked on `conn` (a read-only connection to the
/// backup) by the same verifier as `authd audit verify`; a broken chain is an error naming
/// the first event that does not match.
fn verify_audit_chain(
    conn: &Connection,
    tables: &BTreeMap<String, Vec<String>>,
) -> Result<AuditChain, String> {
    let has_chain = tables
        .get("audit_events")
        .is_some_and(|cols| cols.iter().any(|c| c == "seq") && cols.iter().any(|c| c == "hash"));
    if !has_chain {
        return Ok(AuditChain::Absent);
    }
    let report = crate::store::sqlite::audit_chain::verify(conn, None)
        .map_err(|e| format!("cannot walk the audit chain: {e}"))?;
    match report.verdict {
        Verdict::Ok {
            sealed,
            head_seq,
            head_hash,
            ..
        } => Ok(AuditChain::Verified(format!(
            "{sealed} events sealed, head {head_seq}:{head_hash}"
        ))),
        Verdict::Broken { seq, why } => Err(format!("audit chain broken at seq {seq}: {why}")),
    }
}

/// Restores the backup `file` (checked by `verify` first) into the database at `url`
/// (either backend), which must hold no data: no tables, or authd's schema with no rows.
/// The target is migrated to this binary's schema, then filled in one transaction that
/// checks every table's row count before it commits: interrupted, nothing is written.
///
/// Errors: `Other` for a bad backup or a target that holds data (nothing written);
/// `Migration` for a target at a schema this binary cannot bring up; `Unavailable` when the
/// target cannot be reached.
pub fn restore(file: &Path, url: &str, options: &StoreOptions) -> StoreResult<RestoreReport> {
    verify(file)?;
    let pg = match url.split_once(':') {
        Some(("sqlite", _)) => false,
        Some(("postgres" | "postgresql", _)) => true,
        _ => {
            return Err(StoreError::Other(format!(
                "database.url '{}' names no backend authd knows",
                crate::config::redact_url(url)
            )))
        }
    };
    // Refused before anything is written, migrations included.
    if pg {
        let mut c = pg_connect(url)?;
        let has_history = c
            .query_one(
                "SELECT count(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = $1",
                &[&MIGRATIONS_TABLE],
            )
            .map_err(pg_err)?
            .get::<_, i64>(0)
            > 0;
        let tables: Vec<String> = pg_tables(&mut c)?.into_keys().collect();
        let mut counts = Vec::new();
        for t in &tables {
            let n: i64 = c
                .query_one(&format!("SELECT count(*) FROM \"{t}\""), &[])
                .map_err(pg_err)?
                .get(0);
            counts.push((t.clone(), n as u64));
        }
        refuse_unless_empty(has_history, &counts)?;
    } else {
        let path = sqlite_path(url);
        if Path::new(path).exists() {
            let conn = open_existing(path, options)?;
            let tables = sqlite_tables(&conn, "main").map_err(read_err)?;
            let has_history = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [MIGRATIONS_TABLE],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(read_err)?
                > 0;
            let mut counts = Vec::new();
            for t in tables.keys() {
                let n: i64 = conn
                    .query_row(&format!("SELECT count(*) FROM \"{t}\""), [], |r| r.get(0))
                    .map_err(read_err)?;
                counts.push((t.clone(), n as u64));
            }
            refuse_unless_empty(has_history, &counts)?;
        }
    }
    let target = super::open(url, options)?;
    let applied = target.migrate()?.len();
    target.check_schema()?;
    target.close();
    drop(target);

    let mut src = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Other(format!("cannot open {}: {e}", file.display())))?;
    let tables = if pg {
        transfer::copy_into_postgres(&mut src, url)?
    } else {
        drop(src);
        into_sqlite(file, sqlite_path(url), options)?
    };
    Ok(RestoreReport {
        tables,
        migrations_applied: applied,
    })
}

fn sqlite_path(url: &str) -> &str {
    let rest = url.strip_prefix("sqlite:").unwrap_or(url);
    rest.strip_prefix("//").unwrap_or(rest)
}

/// A restore target holds no data: no tables at all, or authd's (its migration history
/// present) with no rows but those the migrations seed.
fn refuse_unless_empty(has_history: bool, counts: &[(String, u64)]) -> StoreResult<()> {
    if counts.is_empty() {
        return Ok(());
    }
    if !has_history {
        return Err(StoreError::Other(format!(
            "the target database is not empty: it holds tables that are not authd's ({}); \
             restore only into an empty database",
            counts
                .iter()
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if let Some((t, n)) = counts
        .iter()
        .find(|(t, n)| *n > 0 && !SEEDED_BY_MIGRATIONS.contains(&t.as_str()))
    {
        return Err(StoreError::Other(format!(
            "the target database is not empty (table {t} has {n} rows); restore only into \
             an empty database"
        )));
    }
    Ok(())
}

/// Fills the SQLite database at `path` (migrated, empty) from the backup in one write
/// transaction.
fn into_sqlite(file: &Path, path: &str, options: &StoreOptions) -> StoreResult<Vec<(String, u64)>> {
    let mut conn = open_existing(path, options)?;
    conn.execute_batch("PRAGMA foreign_keys = ON;")
        .map_err(read_err)?;
    conn.execute("ATTACH DATABASE ?1 AS backup", [file.to_string_lossy()])
        .map_err(|e| StoreError::Other(format!("cannot open {}: {e}", file.display())))?;
    let target = sqlite_tables(&conn, "main").map_err(read_err)?;
    let source = sqlite_tables(&conn, "backup").map_err(read_err)?;
    if target.keys().ne(source.keys()) {
        return Err(StoreError::Other(format!(
            "the backup's tables {:?} differ from this authd's {:?}",
            source.keys().collect::<Vec<_>>(),
            target.keys().collect::<Vec<_>>()
        )));
    }
    let order = sqlite_fk_order(&conn, "main", &target)?;
    // Race: a server started on the target writing between the emptiness check and the
    // commit; IMMEDIATE takes the write lock first, so it waits for this transaction.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(read_err)?;
    let mut report = Vec::new();
    for table in &order {
        let n: i64 = tx
            .query_row(&format!("SELECT count(*) FROM main.{table}"), [], |r| {
                r.get(0)
            })
            .map_err(read_err)?;
        if SEEDED_BY_MIGRATIONS.contains(&table.as_str()) {
            tx.execute(&format!("DELETE FROM main.{table}"), [])
                .map_err(read_err)?;
        } else if n > 0 {
            return Err(StoreError::Other(format!(
                "the target database is not empty (table {table} has {n} rows); restore \
                 only into an empty database"
            )));
        }
    }
    for table in &order {
        let cols = &target[table];
        let theirs: BTreeSet<&String> = source[table].iter().collect();
        if theirs != cols.iter().collect() {
            return Err(StoreError::Other(format!(
                "table {table} has columns {:?} in the backup but {cols:?} here",
                source[table]
            )));
        }
        let list = cols.join(", ");
        let copied = tx
            .execute(
                &format!("INSERT INTO main.{table} ({list}) SELECT {list} FROM backup.{table}"),
                [],
            )
            .map_err(|e| {
                StoreError::Other(format!("restoring table {table}: {e}; nothing was written"))
            })?;
        let (expected, landed): (i64, i64) = tx
            .query_row(
                &format!(
                    "SELECT (SELECT count(*) FROM backup.{table}), \
                     (SELECT count(*) FROM main.{table})"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(read_err)?;
        if expected != landed || copied as i64 != expected {
            return Err(StoreError::Other(format!(
                "table {table}: the backup has {expected} rows but {landed} arrived; nothing \
                 was committed"
            )));
        }
        report.push((table.clone(), landed as u64));
    }
    tx.commit().map_err(read_err)?;
    conn.execute("DETACH DATABASE backup", [])
        .map_err(read_err)?;
    Ok(report)
}
