//! Store layer (PostgreSQL): the pooled connection and the handle every query goes through.
//!
//! Two round trips per request are the price of talking to a database server, and on a busy
//! machine each one is a context switch to a PostgreSQL backend. The pool keeps them down:
//! - **Prepared statements are cached per connection** (`Statements`): the first use of a
//!   query on a connection parses it (one round trip), every later use only binds and
//!   executes it (one round trip, and the server plans it once).
//! - **A connection is checked at check-out only after it idled** (`VALIDATE_AFTER_IDLE`): one
//!   just given back by a request that used it is handed out as it is, while one that sat in
//!   the pool (through a database restart or a network cut, say) first answers an empty query.
//!   A connection the driver found closed is dropped when it returns (`has_broken`); one
//!   that broke unnoticed fails its next use and is dropped then (`super::PostgresStore::read`
//!   and `write` pass over such connections where that is safe).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use postgres::types::ToSql;
use postgres::{Client, GenericClient, NoTls, Row, SimpleQueryMessage, Statement};
use r2d2::ManageConnection;
use r2d2_postgres::PostgresConnectionManager;

use super::PgResult;

/// A connection that sat in the pool at least this long answers an empty query before it is
/// handed out; one used more recently is trusted (and dropped if it fails in use).
pub(super) const VALIDATE_AFTER_IDLE: Duration = Duration::from_secs(1);

/// At most this many prepared statements are kept per connection (authd's queries are a
/// fixed set of a few dozen; the cap only bounds a mistake).
const MAX_STATEMENTS: usize = 256;

/// One pooled connection: the client, its prepared statements by SQL text, and when it was
/// last used successfully.
pub(super) struct PgConn {
    pub(super) client: Client,
    pub(super) statements: Statements,
    pub(super) used_at: Instant,
}

/// The prepared statements of one connection, by their SQL text.
#[derive(Default)]
pub(super) struct Statements(HashMap<String, Statement>);

impl Statements {
    /// Forgets every statement (after an error: a schema change can make a cached plan fail,
    /// and a fresh prepare is cheap).
    pub(super) fn clear(&mut self) {
        self.0.clear();
    }
}

/// r2d2's manager for `PgConn`: `r2d2_postgres` connects; validation skips recently used
/// connections (see the module documentation).
#[derive(Debug)]
pub(super) struct Manager(pub(super) PostgresConnectionManager<NoTls>);

impl ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> PgResult<PgConn> {
        Ok(PgConn {
            client: self.0.connect()?,
            statements: Statements::default(),
            used_at: Instant::now(),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> PgResult<()> {
        if conn.used_at.elapsed() < VALIDATE_AFTER_IDLE {
            return Ok(());
        }
        self.0.is_valid(&mut conn.client)?;
        conn.used_at = Instant::now();
        Ok(())
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        self.0.has_broken(&mut conn.client)
    }
}

/// A client (a connection, or a transaction on one) with its connection's prepared
/// statements: the store's functions query through this, never through the client itself.
/// Parameters are `$1`, `$2`...; errors are the driver's (see `super::map_err`).
pub(super) struct Db<'a, C> {
    client: &'a mut C,
    statements: &'a mut Statements,
}

impl<'a, C: GenericClient> Db<'a, C> {
    pub(super) fn new(client: &'a mut C, statements: &'a mut Statements) -> Self {
        Db { client, statements }
    }

    /// The statement for `sql`, prepared on this connection once.
    fn prepared(&mut self, sql: &str) -> PgResult<Statement> {
        if let Some(statement) = self.statements.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        if self.statements.0.len() < MAX_STATEMENTS {
            self.statements.0.insert(sql.to_owned(), statement.clone());
        }
        Ok(statement)
    }

    /// Every row `sql` returns.
    pub(super) fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> PgResult<Vec<Row>> {
        let statement = self.prepared(sql)?;
        self.client.query(&statement, params)
    }

    /// The one row `sql` returns (an error if none or several).
    pub(super) fn query_one(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> PgResult<Row> {
        let statement = self.prepared(sql)?;
        self.client.query_one(&statement, params)
    }

    /// The row `sql` returns, if any (an error if several).
    pub(super) fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> PgResult<Option<Row>> {
        let statement = self.prepared(sql)?;
        self.client.query_opt(&statement, params)
    }

    /// Runs `sql`; the number of rows it changed.
    pub(super) fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> PgResult<u64> {
        let statement = self.prepared(sql)?;
        self.client.execute(&statement, params)
    }

    /// Runs statements without parameters through the simple protocol (nothing prepared).
    pub(super) fn batch_execute(&mut self, sql: &str) -> PgResult<()> {
        self.client.batch_execute(sql)
    }

    /// Runs `sql` through the simple protocol (nothing prepared).
    pub(super) fn simple_query(&mut self, sql: &str) -> PgResult<Vec<SimpleQueryMessage>> {
        self.client.simple_query(sql)
    }
}
