//! Store layer: copying a whole SQLite installation into a fresh PostgreSQL database
//! (`authd migrate-data`). The one place that knows both backends' schemas at once.
//!
//! Every table of the schema is copied (whatever migrations add later: a table the source
//! has and the target lacks, or a column that differs, is refused, never skipped), in one
//! PostgreSQL transaction that first locks every target table, refuses a target that holds
//! data, and checks each table's row count before it commits. Values are converted by the
//! target column's type (SQLite's TEXT uuids, 0/1 booleans, INTEGER times and BLOB keys), so
//! user ids, session ids, refresh-token hashes, audit ids and signing keys are the same rows
//! afterwards: tokens issued before the move keep working.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use postgres::types::ToSql;
use rusqlite::types::ValueRef;
use rusqlite::OpenFlags;
use uuid::Uuid;

use super::{migrations::TABLE as MIGRATIONS_TABLE, StoreError, StoreOptions, StoreResult};

/// Tables whose rows the migrations themselves write (e.g. the key set's generation counter):
/// a freshly migrated target already holds them, so they are replaced by the source's rows
/// instead of counting as data.
pub(crate) const SEEDED_BY_MIGRATIONS: &[&str] = &["signing_key_generation", "audit_chain"];

/// Most parameters one INSERT may carry (PostgreSQL's limit is 65535).
const MAX_PARAMS: usize = 30_000;

/// Rows copied per table, in the order they were copied.
#[derive(Debug, Clone, Default)]
pub struct TransferReport {
    pub tables: Vec<(String, u64)>,
    /// Migrations applied to the target before the copy.
    pub migrations_applied: usize,
}

/// Copies the SQLite database at `sqlite_url` (`sqlite://PATH`, at this binary's schema
/// version, left untouched) into the PostgreSQL database at `postgres_url` (migrated here
/// first; must hold no data). All or nothing: one transaction on the target.
///
/// Errors: `Migration` when either schema is not this binary's, `Other` for a non-empty
/// target, a schema mismatch or a value that does not convert, `Unavailable` when a database
/// cannot be reached.
pub fn sqlite_to_postgres(
    sqlite_url: &str,
    postgres_url: &str,
    options: &StoreOptions,
) -> StoreResult<TransferReport> {
    let path = match sqlite_url.split_once(':') {
        Some(("sqlite", rest)) => rest.strip_prefix("//").unwrap_or(rest),
        _ => {
            return Err(StoreError::Other(format!(
                "--from must be a sqlite:// URL, not '{}'",
                crate::config::redact_url(sqlite_url)
            )))
        }
    };
    if !matches!(
        postgres_url.split_once(':'),
        Some(("postgres" | "postgresql", _))
    ) {
        return Err(StoreError::Other(
            "--to (or database.url when --to is not given) must be a postgres:// or \
             postgresql:// URL"
                .into(),
        ));
    }
    if !Path::new(path).is_file() {
        return Err(StoreError::Other(format!(
            "no SQLite database at {path} (--from)"
        )));
    }

    // The source must be at exactly this binary's schema (it is never migrated here: it is
    // the copy the operator falls back to).
    let source = super::open(sqlite_url, options)?;
    let checked = source.check_schema();
    source.close();
    drop(source);
    checked.map_err(|e| {
        StoreError::Migration(format!(
            "the SQLite database is not at this authd's schema ({e}); run `authd migrate` \
             with database.url = {sqlite_url} first"
        ))
    })?;
    let target = super::open(postgres_url, options)?;
    let applied = target.migrate()?.len();
    target.check_schema()?;
    drop(target);

    let mut src = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Unavailable(format!("cannot open {path}: {e}")))?;
    src.busy_timeout(options.busy_timeout).map_err(sqlite_err)?;
    let tables = copy_into_postgres(&mut src, postgres_url)?;
    Ok(TransferReport {
        tables,
        migrations_applied: applied,
    })
}

/// Copies every table of the SQLite database on `src` (at this binary's schema) into the
/// PostgreSQL database at `postgres_url` (migrated to this binary's schema, holding no data),
/// in one PostgreSQL transaction read from one SQLite snapshot; returns the rows per table in
/// the order copied. Shared by `migrate-data` and `restore` (`store::backup`).
pub(crate) fn copy_into_postgres(
    src: &mut rusqlite::Connection,
    postgres_url: &str,
) -> StoreResult<Vec<(String, u64)>> {
    let mut config: postgres::Config = postgres_url
        .parse()
        .map_err(|e| StoreError::Other(format!("not a valid PostgreSQL URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    let mut dst = config
        .connect(postgres::NoTls)
        .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;

    // One read transaction on the source: every table is read from the same snapshot.
    let src_tx = src.transaction().map_err(sqlite_err)?;
    let mut tx = dst.transaction().map_err(pg_err)?;
    let plan = plan(&src_tx, &mut tx)?;
    let list = plan.order.join(", ");
    // Race: an instance started on the target (or a second migrate-data) writing between the
    // emptiness check and the commit; it waits for this transaction instead.
    tx.batch_execute(&format!("LOCK TABLE {list} IN ACCESS EXCLUSIVE MODE"))
        .map_err(pg_err)?;
    for table in &plan.order {
        let rows: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .map_err(pg_err)?
            .get(0);
        if SEEDED_BY_MIGRATIONS.contains(&table.as_str()) {
            continue;
        }
        if rows > 0 {
            return Err(StoreError::Other(format!(
                "the target database is not empty (table {table} has {rows} rows); \
                 authd copies only into a database that holds no data"
            )));
        }
    }
    for table in SEEDED_BY_MIGRATIONS
        .iter()
        .filter(|t| plan.order.iter().any(|o| o == *t))
    {
        tx.batch_execute(&format!("DELETE FROM {table}"))
            .map_err(pg_err)?;
    }

    let mut tables = Vec::new();
    for table in &plan.order {
        let columns = &plan.columns[table];
        let copied = copy_table(&src_tx, &mut tx, table, columns)?;
        let expected: i64 = src_tx
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .map_err(sqlite_err)?;
        let landed: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .map_err(pg_err)?
            .get(0);
        if landed != expected || copied != expected as u64 {
            return Err(StoreError::Other(format!(
                "table {table}: the source has {expected} rows but {landed} arrived; nothing \
                 was committed"
            )));
        }
        // Identity columns continue after the copied ids.
        for c in columns.iter().filter(|c| c.identity) {
            tx.batch_execute(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{col}'), \
                 COALESCE((SELECT max({col}) FROM {table}), 0) + 1, false)",
                col = c.name
            ))
            .map_err(pg_err)?;
        }
        tables.push((table.clone(), landed as u64));
    }
    tx.commit().map_err(pg_err)?;
    Ok(tables)
}

/// A target column: its name, PostgreSQL type name and whether it is an identity column.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    pg_type: String,
    identity: bool,
}

/// Which tables to copy, in an order that inserts referenced rows first, with their columns.
struct Plan {
    order: Vec<String>,
    columns: BTreeMap<String, Vec<Column>>,
}

/// Compares the two schemas (same tables, same column names) and orders the tables by their
/// foreign keys.
fn plan(src: &rusqlite::Transaction<'_>, dst: &mut postgres::Transaction<'_>) -> StoreResult<Plan> {
    let mut stmt = src
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' \
             ESCAPE '\\' AND name <> ?1",
        )
        .map_err(sqlite_err)?;
    let src_tables: BTreeSet<String> = stmt
        .query_map([MIGRATIONS_TABLE], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(sqlite_err)?;
    let dst_tables: BTreeSet<String> = dst
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
               AND table_name <> $1",
            &[&MIGRATIONS_TABLE],
        )
        .map_err(pg_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if src_tables != dst_tables {
        let only_src: Vec<_> = src_tables.difference(&dst_tables).collect();
        let only_dst: Vec<_> = dst_tables.difference(&src_tables).collect();
        return Err(StoreError::Other(format!(
            "the two schemas differ (only in SQLite: {only_src:?}; only in PostgreSQL: \
             {only_dst:?}); both must be at this authd's schema"
        )));
    }
    let mut columns = BTreeMap::new();
    for table in &src_tables {
        let mut stmt = src
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .map_err(sqlite_err)?;
        let src_cols: BTreeSet<String> = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(sqlite_err)?;
        let dst_cols: Vec<Column> = dst
            .query(
                "SELECT column_name::text, data_type::text, is_identity::text = 'YES' \
                 FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 \
                 ORDER BY ordinal_position",
                &[table],
            )
            .map_err(pg_err)?
            .iter()
            .map(|r| Column {
                name: r.get(0),
                pg_type: r.get(1),
                identity: r.get(2),
            })
            .collect();
        let dst_names: BTreeSet<String> = dst_cols.iter().map(|c| c.name.clone()).collect();
        if src_cols != dst_names {
            return Err(StoreError::Other(format!(
                "table {table} has columns {src_cols:?} in SQLite but {dst_names:?} in \
                 PostgreSQL"
            )));
        }
        columns.insert(table.clone(), dst_cols);
    }
    // Referenced tables first (Kahn's algorithm over the target's foreign keys; ties by name).
    let edges: Vec<(String, String)> = dst
        .query(
            "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text \
             FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
             WHERE c.contype = 'f' AND n.nspname = current_schema()",
            &[],
        )
        .map_err(pg_err)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .filter(|(from, to): &(String, String)| from != to)
        .collect();
    let mut left: BTreeSet<String> = src_tables;
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
    Ok(Plan { order, columns })
}

/// A value read from SQLite, converted for its PostgreSQL column.
type PgValue = Box<dyn ToSql + Sync>;

/// Copies every row of `table` in multi-row INSERTs; returns how many.
fn copy_table(
    src: &rusqlite::Transaction<'_>,
    dst: &mut postgres::Transaction<'_>,
    table: &str,
    columns: &[Column],
) -> StoreResult<u64> {
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let overriding = if columns.iter().any(|c| c.identity) {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    let per_batch = (MAX_PARAMS / columns.len().max(1)).max(1);
    let mut stmt = src
        .prepare(&format!("SELECT {} FROM {table}", names.join(", ")))
        .map_err(sqlite_err)?;
    let mut rows = stmt.query([]).map_err(sqlite_err)?;
    let mut batch: Vec<PgValue> = Vec::new();
    let mut in_batch = 0usize;
    let mut copied = 0u64;
    let flush = |dst: &mut postgres::Transaction<'_>, batch: &mut Vec<PgValue>, n: usize| {
        if n == 0 {
            return Ok(());
        }
        let width = columns.len();
        let tuples: Vec<String> = (0..n)
            .map(|r| {
                let ps: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
                format!("({})", ps.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO {table} ({}){overriding} VALUES {}",
            names.join(", "),
            tuples.join(", ")
        );
        let params: Vec<&(dyn ToSql + Sync)> = batch.iter().map(|b| b.as_ref()).collect();
        dst.execute(sql.as_str(), &params).map_err(pg_err)?;
        batch.clear();
        Ok::<(), StoreError>(())
    };
    while let Some(row) = rows.next().map_err(sqlite_err)? {
        for (i, c) in columns.iter().enumerate() {
            let v = row.get_ref(i).map_err(sqlite_err)?;
            batch.push(convert(v, c).map_err(|why| {
                StoreError::Other(format!("table {table}, column {}: {why}", c.name))
            })?);
        }
        in_batch += 1;
        copied += 1;
        if in_batch == per_batch {
            flush(dst, &mut batch, in_batch)?;
            in_batch = 0;
        }
    }
    flush(dst, &mut batch, in_batch)?;
    Ok(copied)
}

/// Converts one SQLite value for a PostgreSQL column of type `c.pg_type`.
fn convert(v: ValueRef<'_>, c: &Column) -> Result<PgValue, String> {
    let null = matches!(v, ValueRef::Null);
    let int = || match v {
        ValueRef::Integer(i) => Ok(i),
        other => Err(format!(
            "expected an integer, found {:?}",
            other.data_type()
        )),
    };
    // PostgreSQL's text cannot hold NUL (SQLite's can): stored as U+FFFD, as the PostgreSQL
    // backend stores free text.
    let text = || match v {
        ValueRef::Text(t) => std::str::from_utf8(t)
            .map(|s| s.replace('\0', "\u{FFFD}"))
            .map_err(|e| format!("text is not UTF-8: {e}")),
        other => Err(format!("expected text, found {:?}", other.data_type())),
    };
    Ok(match c.pg_type.as_str() {
        "uuid" => Box::new(if null {
            None
        } else {
            Some(Uuid::parse_str(&text()?).map_err(|e| format!("not a uuid: {e}"))?)
        }),
        "boolean" => Box::new(if null { None } else { Some(int()? != 0) }),
        "bigint" => Box::new(if null { None } else { Some(int()?) }),
        "integer" => Box::new(if null {
            None
        } else {
            Some(i32::try_from(int()?).map_err(|_| "integer out of range".to_string())?)
        }),
        "smallint" => Box::new(if null {
            None
        } else {
            Some(i16::try_from(int()?).map_err(|_| "integer out of range".to_string())?)
        }),
        "text" | "character varying" => Box::new(if null { None } else { Some(text()?) }),
        "bytea" => Box::new(match v {
            ValueRef::Null => None,
            ValueRef::Blob(b) => Some(b.to_vec()),
            other => return Err(format!("expected a blob, found {:?}", other.data_type())),
        }),
        other => return Err(format!("no conversion into PostgreSQL type {other}")),
    })
}

pub(crate) fn sqlite_err(e: rusqlite::Error) -> StoreError {
    StoreError::Other(format!("reading the SQLite database: {e}"))
}

pub(crate) fn pg_err(e: postgres::Error) -> StoreError {
    let text = match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => match std::error::Error::source(&e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    };
    if e.is_closed() || e.as_db_error().is_none() && text.contains("connect") {
        StoreError::Unavailable(format!("PostgreSQL: {text}"))
    } else {
        StoreError::Other(format!("writing to PostgreSQL: {text}"))
    }
}
