//! The one place statements meet a database: each query is written once
//! (SQLite's `?N` parameters), with a PostgreSQL text beside it only where
//! the two dialects really differ, and runs on either backend through the
//! same few calls. Values and rows cross as plain integers and strings, so
//! nothing above this file knows which database it talks to.

use std::cell::RefCell;
use std::collections::HashMap;

use postgres::types::{ToSql, Type};

/// A statement: its SQLite text, and its PostgreSQL text when that is not
/// the same text with `$N` for `?N`.
pub struct Sql {
    pub lite: &'static str,
    pub pg: Option<&'static str>,
}

/// A statement whose text suits both databases.
pub const fn same(lite: &'static str) -> Sql {
    Sql { lite, pg: None }
}

/// A statement that differs by dialect (say why where it is written).
pub const fn split(lite: &'static str, pg: &'static str) -> Sql {
    Sql { lite, pg: Some(pg) }
}

/// A parameter. Text bound to a PostgreSQL `bytea` column (message bodies,
/// which may hold NUL characters that PostgreSQL text cannot) is sent as
/// its UTF-8 bytes.
#[derive(Debug, Clone, Copy)]
pub enum Value<'v> {
    Int(i64),
    Text(&'v str),
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl<'v> From<&'v str> for Value<'v> {
    fn from(v: &'v str) -> Self {
        Value::Text(v)
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(match self {
            Value::Int(i) => (*i).into(),
            Value::Text(s) => (*s).into(),
        })
    }
}

/// One column of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Null,
    Int(i64),
    Text(String),
}

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(Vec<Field>);

impl Row {
    /// Column `i` as an integer (0 for NULL or text, which no query of ours
    /// asks for as an integer).
    pub fn int(&self, i: usize) -> i64 {
        match self.0.get(i) {
            Some(Field::Int(v)) => *v,
            _ => 0,
        }
    }

    /// Column `i` as text ("" for NULL or an integer).
    pub fn text(&self, i: usize) -> String {
        match self.0.get(i) {
            Some(Field::Text(s)) => s.clone(),
            _ => String::new(),
        }
    }
}

/// A PostgreSQL session and its prepared statements, keyed by their text
/// (each is prepared once per session).
pub struct PgConn {
    pub client: postgres::Client,
    statements: HashMap<&'static str, postgres::Statement>,
}

impl PgConn {
    pub fn new(client: postgres::Client) -> PgConn {
        PgConn {
            client,
            statements: HashMap::new(),
        }
    }

    fn prepared(&mut self, sql: &Sql) -> Result<postgres::Statement, postgres::Error> {
        let key = sql.pg.unwrap_or(sql.lite);
        if let Some(st) = self.statements.get(key) {
            return Ok(st.clone());
        }
        let text = match sql.pg {
            Some(pg) => pg.to_owned(),
            None => dollar_params(sql.lite),
        };
        let st = self.client.prepare(&text)?;
        self.statements.insert(key, st.clone());
        Ok(st)
    }
}

type PgParams<'r> = [&'r (dyn ToSql + Sync)];

impl PgConn {
    /// Prepare `sql` (once per session), convert `params` to the types
    /// PostgreSQL inferred, and hand both to `call`.
    fn run<T>(
        &mut self,
        sql: &Sql,
        params: &[Value],
        call: impl FnOnce(
            &mut postgres::Client,
            &postgres::Statement,
            &PgParams,
        ) -> Result<T, postgres::Error>,
    ) -> SqlResult<T> {
        let st = self.prepared(sql).map_err(pg_error)?;
        let owned = pg_params(&st, params);
        let refs: Vec<&(dyn ToSql + Sync)> =
            owned.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        call(&mut self.client, &st, &refs).map_err(pg_error)
    }
}

/// `?N` -> `$N`: SQLite's numbered parameters in PostgreSQL's spelling. Our
/// statements hold no `?` inside string literals.
pub fn dollar_params(lite: &str) -> String {
    let mut out = String::with_capacity(lite.len());
    let mut chars = lite.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// A connection the store's queries run on: borrowed for one job or one read.
#[derive(Clone, Copy)]
pub enum Link<'a> {
    Lite(&'a rusqlite::Connection),
    Pg(&'a RefCell<PgConn>),
}

/// What a statement failed with, as text for the log (never a value).
pub type SqlResult<T> = Result<T, String>;

impl Link<'_> {
    /// Statements without parameters or results (transaction control).
    pub fn batch(&self, sql: &str) -> SqlResult<()> {
        match self {
            Link::Lite(c) => c.execute_batch(sql).map_err(|e| e.to_string()),
            Link::Pg(c) => c.borrow_mut().client.batch_execute(sql).map_err(pg_error),
        }
    }

    /// Run a statement; the number of rows it changed.
    pub fn exec(&self, sql: &Sql, params: &[Value]) -> SqlResult<u64> {
        match self {
            Link::Lite(c) => {
                let mut st = c.prepare_cached(sql.lite).map_err(|e| e.to_string())?;
                st.execute(rusqlite::params_from_iter(params.iter()))
                    .map(|n| n as u64)
                    .map_err(|e| e.to_string())
            }
            Link::Pg(c) => c
                .borrow_mut()
                .run(sql, params, |client, st, refs| client.execute(st, refs)),
        }
    }

    /// Run a query; every row it returns.
    pub fn rows(&self, sql: &Sql, params: &[Value]) -> SqlResult<Vec<Row>> {
        match self {
            Link::Lite(c) => {
                let mut st = c.prepare_cached(sql.lite).map_err(|e| e.to_string())?;
                let n = st.column_count();
                let rows = st
                    .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                        (0..n).map(|i| lite_field(r.get_ref(i)?)).collect()
                    })
                    .map_err(|e| e.to_string())?;
                rows.map(|r| r.map(Row).map_err(|e| e.to_string()))
                    .collect()
            }
            Link::Pg(c) => c
                .borrow_mut()
                .run(sql, params, |client, st, refs| client.query(st, refs))?
                .iter()
                .map(pg_row)
                .collect(),
        }
    }

    /// Run a query; its first row, if any.
    pub fn row(&self, sql: &Sql, params: &[Value]) -> SqlResult<Option<Row>> {
        self.rows(sql, params).map(|rows| rows.into_iter().next())
    }
}

fn lite_field(v: rusqlite::types::ValueRef<'_>) -> rusqlite::Result<Field> {
    use rusqlite::types::ValueRef;
    Ok(match v {
        ValueRef::Null => Field::Null,
        ValueRef::Integer(i) => Field::Int(i),
        ValueRef::Real(f) => Field::Int(f as i64),
        ValueRef::Text(t) | ValueRef::Blob(t) => {
            Field::Text(String::from_utf8_lossy(t).into_owned())
        }
    })
}

/// A parameter converted to the type PostgreSQL inferred for its slot. The
/// client logs parameters at debug level through their `Debug`, so text
/// shows as its length only: message bodies never reach a log line.
enum PgParam<'v> {
    Int8(i64),
    Int4(i32),
    Text(&'v str),
    Bytes(&'v [u8]),
}

impl std::fmt::Debug for PgParam<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgParam::Int8(v) => write!(f, "{v}"),
            PgParam::Int4(v) => write!(f, "{v}"),
            PgParam::Text(s) => write!(f, "<{} bytes>", s.len()),
            PgParam::Bytes(b) => write!(f, "<{} bytes>", b.len()),
        }
    }
}

impl ToSql for PgParam<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            PgParam::Int8(v) => v.to_sql(ty, out),
            PgParam::Int4(v) => v.to_sql(ty, out),
            PgParam::Text(v) => v.to_sql(ty, out),
            PgParam::Bytes(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty)
            || <i32 as ToSql>::accepts(ty)
            || <&str as ToSql>::accepts(ty)
            || <&[u8] as ToSql>::accepts(ty)
    }

    postgres::types::to_sql_checked!();
}

fn pg_params<'v>(st: &postgres::Statement, params: &[Value<'v>]) -> Vec<PgParam<'v>> {
    params
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let ty = st.params().get(i);
            match *v {
                Value::Int(n) if ty == Some(&Type::INT4) => {
                    PgParam::Int4(n.clamp(i32::MIN as i64, i32::MAX as i64) as i32)
                }
                Value::Int(n) => PgParam::Int8(n),
                Value::Text(s) if ty == Some(&Type::BYTEA) => PgParam::Bytes(s.as_bytes()),
                Value::Text(s) => PgParam::Text(s),
            }
        })
        .collect()
}

fn pg_row(r: &postgres::Row) -> SqlResult<Row> {
    let mut out = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let f = match *col.type_() {
            Type::INT8 => r
                .try_get::<_, Option<i64>>(i)
                .map(|v| v.map_or(Field::Null, Field::Int)),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)
                .map(|v| v.map_or(Field::Null, |v| Field::Int(v.into()))),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)
                .map(|v| v.map_or(Field::Null, |v| Field::Int(v.into()))),
            Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i).map(|v| {
                v.map_or(Field::Null, |b| {
                    Field::Text(String::from_utf8_lossy(&b).into_owned())
                })
            }),
            _ => r
                .try_get::<_, Option<String>>(i)
                .map(|v| v.map_or(Field::Null, Field::Text)),
        };
        out.push(f.map_err(pg_error)?);
    }
    Ok(Row(out))
}

/// A PostgreSQL error as one log line: the server's own message and code
/// when it sent one (never the statement's parameters).
pub fn pg_error(e: postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        // With its causes: a failed TLS handshake says why (an unknown
        // CA, a name the certificate does not carry).
        None => {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                let c_text = c.to_string();
                if !text.contains(&c_text) {
                    text.push_str(": ");
                    text.push_str(&c_text);
                }
                cause = c.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_show_their_length_never_their_text() {
        let shown = format!(
            "{:?}",
            [
                PgParam::Text("secret body"),
                PgParam::Bytes(b"secret"),
                PgParam::Int8(7)
            ]
        );
        assert_eq!(shown, "[<11 bytes>, <6 bytes>, 7]");
    }

    #[test]
    fn numbered_parameters_become_dollars_and_nothing_else_changes() {
        assert_eq!(
            dollar_params("SELECT ?1, ?12 FROM t WHERE a = ?2 AND b <> '?'"),
            "SELECT $1, $12 FROM t WHERE a = $2 AND b <> '?'"
        );
    }
}
