//! The small SQL surface both backends share, so the mapping between records and rows
//! (`rows`), the vault's storage (`vault_rows`) and the group-commit writer are written
//! once and run on SQLite and on PostgreSQL.
//!
//! Statements are written with SQLite's placeholders (`?1`, or `?` numbered in order);
//! the PostgreSQL connection rewrites them to `$n` once per statement text. Values cross
//! as four plain kinds (null, integer, text, bytes): every integer column is 64-bit on
//! both backends and booleans are stored as 0 or 1, so a row reads the same everywhere.

use crate::{Result, StoreError};

/// One statement argument.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Bytes(&'a [u8]),
}

/// A value that can be bound as a statement argument.
pub trait ToArg {
    fn arg(&self) -> Arg<'_>;
}

impl ToArg for str {
    fn arg(&self) -> Arg<'_> {
        Arg::Text(self)
    }
}
impl ToArg for String {
    fn arg(&self) -> Arg<'_> {
        Arg::Text(self)
    }
}
impl ToArg for [u8] {
    fn arg(&self) -> Arg<'_> {
        Arg::Bytes(self)
    }
}
impl ToArg for Vec<u8> {
    fn arg(&self) -> Arg<'_> {
        Arg::Bytes(self)
    }
}
impl<const N: usize> ToArg for [u8; N] {
    fn arg(&self) -> Arg<'_> {
        Arg::Bytes(self)
    }
}
impl ToArg for bool {
    fn arg(&self) -> Arg<'_> {
        Arg::Int(i64::from(*self))
    }
}
impl<T: ToArg + ?Sized> ToArg for &T {
    fn arg(&self) -> Arg<'_> {
        (**self).arg()
    }
}
impl<T: ToArg> ToArg for Option<T> {
    fn arg(&self) -> Arg<'_> {
        self.as_ref().map_or(Arg::Null, ToArg::arg)
    }
}
impl ToArg for Arg<'_> {
    fn arg(&self) -> Arg<'_> {
        *self
    }
}

macro_rules! int_arg {
    ($($t:ty),*) => {$(
        impl ToArg for $t {
            fn arg(&self) -> Arg<'_> {
                // Every stored integer fits an i64: counts, sizes and sequence numbers
                // stay far below 2^63.
                Arg::Int(*self as i64)
            }
        }
    )*};
}
int_arg!(i64, u8, u16, u32, u64, i32, usize);

/// Statement arguments: `args![a, b]` is `&[&a as &dyn ToArg, &b]`.
macro_rules! args {
    () => { &[] as &[&dyn $crate::sql::ToArg] };
    ($($a:expr),+ $(,)?) => { &[$(&$a as &dyn $crate::sql::ToArg),+] as &[&dyn $crate::sql::ToArg] };
}
pub(crate) use args;

/// One column of a result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// A value kept beyond the statement that gave it (a held write's argument).
impl From<Arg<'_>> for Cell {
    fn from(a: Arg<'_>) -> Cell {
        match a {
            Arg::Null => Cell::Null,
            Arg::Int(i) => Cell::Int(i),
            Arg::Text(s) => Cell::Text(s.to_owned()),
            Arg::Bytes(b) => Cell::Bytes(b.to_vec()),
        }
    }
}

impl ToArg for Cell {
    fn arg(&self) -> Arg<'_> {
        match self {
            Cell::Null => Arg::Null,
            Cell::Int(i) => Arg::Int(*i),
            Cell::Text(s) => Arg::Text(s),
            Cell::Bytes(b) => Arg::Bytes(b),
        }
    }
}

/// A result row, read column by column.
pub trait Row {
    fn cell(&self, index: usize) -> Result<Cell>;
}

impl dyn Row + '_ {
    pub fn get<T: FromCell>(&self, index: usize) -> Result<T> {
        T::from_cell(self.cell(index)?).map_err(|e| StoreError::Corrupt(format!("column {index}: {e}")))
    }
}

/// A Rust value read from one column.
pub trait FromCell: Sized {
    fn from_cell(cell: Cell) -> Result<Self, String>;
}

impl FromCell for String {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        match cell {
            Cell::Text(s) => Ok(s),
            // A backend may keep free text as UTF-8 bytes (PostgreSQL, for text with NUL).
            Cell::Bytes(b) => String::from_utf8(b).map_err(|e| format!("expected UTF-8 text: {e}")),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}
impl FromCell for Vec<u8> {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        match cell {
            Cell::Bytes(b) => Ok(b),
            Cell::Text(s) => Ok(s.into_bytes()),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}
impl FromCell for [u8; 32] {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        let bytes = Vec::<u8>::from_cell(cell)?;
        let len = bytes.len();
        bytes.try_into().map_err(|_| format!("expected 32 bytes, found {len}"))
    }
}
impl FromCell for bool {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        i64::from_cell(cell).map(|i| i != 0)
    }
}
impl<T: FromCell> FromCell for Option<T> {
    fn from_cell(cell: Cell) -> Result<Self, String> {
        match cell {
            Cell::Null => Ok(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

macro_rules! int_cell {
    ($($t:ty),*) => {$(
        impl FromCell for $t {
            fn from_cell(cell: Cell) -> Result<Self, String> {
                match cell {
                    Cell::Int(i) => <$t>::try_from(i).map_err(|_| format!("{i} does not fit {}", stringify!($t))),
                    other => Err(format!("expected an integer, found {other:?}")),
                }
            }
        }
    )*};
}
int_cell!(i64, u8, u16, u32, u64);

/// Makes the error of a write or check that found no row: a closure, so that the
/// message is written only when it is needed (a held write needs it at once).
pub type Refusal<'a> = &'a dyn Fn() -> StoreError;

/// A connection either backend provides.
pub trait Db {
    /// Run one statement; the number of rows it changed.
    fn execute(&self, sql: &str, args: &[&dyn ToArg]) -> Result<u64>;
    /// Run one query and hand each row to `each`.
    fn query(&self, sql: &str, args: &[&dyn ToArg], each: &mut dyn FnMut(&dyn Row) -> Result<()>) -> Result<()>;
    /// Run several statements without arguments (transaction control, DDL).
    fn batch(&self, sql: &str) -> Result<()>;

    /// Run a write whose outcome is only checked, never read: with `refused`, a
    /// statement that changes no row fails with the error it makes (made only then, on
    /// a backend that runs the statement at once). A backend may hold it and
    /// send it with the statements after it (PostgreSQL pipelines them: one round trip
    /// for many); its failure is then reported by the next statement that waits for an
    /// answer, or by [`Db::flush`]. SQLite runs it at once.
    fn execute_later(&self, sql: &str, args: &[&dyn ToArg], refused: Option<Refusal<'_>>) -> Result<()> {
        let changed = self.execute(sql, args)?;
        match refused {
            Some(refused) if changed == 0 => Err(refused()),
            _ => Ok(()),
        }
    }

    /// A row for an append-only table that no held statement reads back (a decision, a
    /// violation, a vault entry): held like [`Db::execute_later`] without a check, and a
    /// backend may send the rows given for one `sql` together, as multi-row inserts at
    /// the place of the first (PostgreSQL). `sql` is `INSERT INTO table (columns)
    /// VALUES (?1, ..., ?n)`, with nothing after; any other statement is sent row by row.
    /// As such rows may go ahead of held checks given before them, a transaction whose
    /// row fails (a duplicate id) may be refused with that error rather than a check's.
    fn insert_row_later(&self, sql: &str, args: &[&dyn ToArg]) -> Result<()> {
        self.execute_later(sql, args, None)
    }

    /// A query that must find at least one row, or fail with the error `refused` makes;
    /// held and sent like [`Db::execute_later`].
    fn expect_row_later(&self, sql: &str, args: &[&dyn ToArg], refused: Refusal<'_>) -> Result<()> {
        let mut found = false;
        self.query(sql, args, &mut |_| {
            found = true;
            Ok(())
        })?;
        if found { Ok(()) } else { Err(refused()) }
    }

    /// Wait for every statement held by `execute_later` and `expect_row_later`: the
    /// first failure among them, in the order they were given.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// Drop the held statements unsent: the transaction they belong to is being rolled
    /// back.
    fn discard(&self) {}

    /// Whether the connection is known to be unusable (the server closed it): known
    /// only once a statement has failed on it.
    fn is_broken(&self) -> bool {
        false
    }
}

impl dyn Db + '_ {
    /// Every row, each mapped by `f`.
    pub fn all<T>(&self, sql: &str, args: &[&dyn ToArg], f: impl Fn(&dyn Row) -> Result<T>) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.query(sql, args, &mut |r| {
            out.push(f(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row, if any, mapped by `f`.
    pub fn first<T>(&self, sql: &str, args: &[&dyn ToArg], f: impl Fn(&dyn Row) -> Result<T>) -> Result<Option<T>> {
        let mut out = None;
        self.query(sql, args, &mut |r| {
            if out.is_none() {
                out = Some(f(r)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The first column of the first row (e.g. a `COUNT(*)`), if there is a row.
    pub fn value<T: FromCell>(&self, sql: &str, args: &[&dyn ToArg]) -> Result<Option<T>> {
        self.first(sql, args, |r| r.get::<T>(0))
    }
}

/// SQLite's placeholders (`?7`, or bare `?` numbered in order) as PostgreSQL's (`$7`).
/// Question marks inside quoted literals are left alone.
pub fn postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 1u32;
    let mut in_quote = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_quote = !in_quote;
                out.push(c);
            }
            '?' if !in_quote => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push('$');
                if digits.is_empty() {
                    out.push_str(&next.to_string());
                    next += 1;
                } else {
                    out.push_str(&digits);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The most rows one multi-row insert carries.
const MAX_ROWS_PER_INSERT: usize = 64;

/// `rows` for the single-row insert `single`, as statements to run in order: multi-row
/// inserts of 64, 32, ... 1 rows (so a few statements per table whatever the number of
/// rows), each with its rows' arguments one after the other; or, when `single` is not
/// a plain single-row insert (see `multi_row_insert`), `single` once per row.
pub fn row_chunks(single: &str, rows: Vec<Vec<Cell>>) -> Vec<(String, Vec<Cell>)> {
    let mut out = Vec::new();
    let mut rows = rows.into_iter();
    while rows.len() > 0 {
        let n = 1 << MAX_ROWS_PER_INSERT.min(rows.len()).ilog2(); // the largest power of two not above
        let chunk: Vec<Vec<Cell>> = rows.by_ref().take(n).collect();
        let cols = chunk[0].len();
        // Rows of different lengths cannot share one statement's numbering.
        let same_length = chunk.iter().all(|r| r.len() == cols);
        match multi_row_insert(single, cols, n).filter(|_| same_length) {
            Some(multi) => out.push((multi, chunk.into_iter().flatten().collect())),
            None => out.extend(chunk.into_iter().map(|args| (single.to_owned(), args))),
        }
    }
    out
}

/// `INSERT INTO t (a, b) VALUES (?1, ?2)` (or `?`) for `rows` rows: `... VALUES
/// (?1,?2),(?3,?4),...`. `None` unless `single` is exactly such an insert of `cols`
/// values numbered in order, with nothing after its one `VALUES` list.
fn multi_row_insert(single: &str, cols: usize, rows: usize) -> Option<String> {
    if single.contains(['$', '\'']) {
        return None; // literals or placeholders of another kind: not a plain insert
    }
    let numbered_sql = postgres_placeholders(single).replace('$', "?");
    let at = numbered_sql.rfind("VALUES")?;
    let (head, tail) = numbered_sql.split_at(at);
    let tail: String = tail["VALUES".len()..].chars().filter(|c| !c.is_whitespace()).collect();
    let numbered = |first: usize| format!("({})", (first..first + cols).map(|i| format!("?{i}")).collect::<Vec<_>>().join(","));
    // `INSERT INTO name (columns)` and nothing else before the one `VALUES` list.
    let plain_head = head.trim_start().strip_prefix("INSERT INTO").is_some_and(|rest| {
        let rest = rest.trim();
        rest.ends_with(')') && rest.matches('(').count() == 1 && !rest.to_ascii_uppercase().contains("SELECT")
    });
    if cols == 0 || !plain_head || tail != numbered(1) {
        return None;
    }
    let values: Vec<String> = (0..rows).map(|r| numbered(1 + r * cols)).collect();
    Some(format!("{head}VALUES {}", values.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_row_inserts_become_multi_row_ones_and_nothing_else_does() {
        assert_eq!(
            multi_row_insert("INSERT INTO t (a, b)\n VALUES (?1, ?2)", 2, 3).as_deref(),
            Some("INSERT INTO t (a, b)\n VALUES (?1,?2),(?3,?4),(?5,?6)")
        );
        assert_eq!(multi_row_insert("INSERT INTO t (a) VALUES (?)", 1, 2).as_deref(), Some("INSERT INTO t (a) VALUES (?1),(?2)"));
        for not_plain in [
            "INSERT INTO t (a, b) VALUES (?2, ?1)",
            "INSERT INTO t (a, b) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            "INSERT INTO t (a, b) VALUES (?1, (SELECT 1))",
            "UPDATE t SET a = ?1 WHERE b IN (SELECT 1 FROM u) -- VALUES (?1, ?2)",
            "INSERT INTO t (a, b) VALUES ($1, $2)",
            "INSERT INTO t (a, b) SELECT 1, 2 UNION ALL VALUES (?1, ?2)",
            "INSERT INTO t VALUES (?1, ?2)",
            "INSERT INTO t (a, b) VALUES (?1, ?2) -- 'x'",
        ] {
            assert_eq!(multi_row_insert(not_plain, 2, 2), None, "{not_plain}");
        }
        assert_eq!(multi_row_insert("INSERT INTO t (a, b) VALUES (?1, ?2)", 3, 2), None, "three values given for two columns");
    }

    #[test]
    fn rows_go_in_chunks_of_powers_of_two() {
        let rows = |n: i64| (0..n).map(|i| vec![Cell::Int(i), Cell::Int(-i)]).collect::<Vec<_>>();
        let sizes = |n| row_chunks("INSERT INTO t (a, b) VALUES (?1, ?2)", rows(n)).iter().map(|(_, args)| args.len() / 2).collect::<Vec<_>>();
        assert_eq!(sizes(1), vec![1]);
        assert_eq!(sizes(13), vec![8, 4, 1]);
        assert_eq!(sizes(150), vec![64, 64, 16, 4, 2]);
        let chunks = row_chunks("INSERT INTO t (a, b) VALUES (?1, ?2)", rows(3));
        assert_eq!(chunks[0].0, "INSERT INTO t (a, b) VALUES (?1,?2),(?3,?4)");
        assert_eq!(chunks[0].1, vec![Cell::Int(0), Cell::Int(0), Cell::Int(1), Cell::Int(-1)], "each row's arguments in order");
        let odd = row_chunks("INSERT INTO t (a, b) VALUES (?1, ?2) ON CONFLICT DO NOTHING", rows(2));
        assert_eq!(odd.len(), 2, "not a plain insert: row by row");
        let uneven = row_chunks("INSERT INTO t (a, b) VALUES (?1, ?2)", vec![vec![Cell::Int(1), Cell::Int(2)], vec![Cell::Int(3)]]);
        assert_eq!(uneven.len(), 2, "rows of different lengths: row by row");
    }

    #[test]
    fn placeholders_are_rewritten_outside_literals() {
        assert_eq!(postgres_placeholders("a = ?1 AND b = ?12"), "a = $1 AND b = $12");
        assert_eq!(postgres_placeholders("a = ? AND b = ? LIMIT ?"), "a = $1 AND b = $2 LIMIT $3");
        assert_eq!(postgres_placeholders("x = '?' AND y = ?2"), "x = '?' AND y = $2");
        assert_eq!(postgres_placeholders("s = 'it''s ?' OR t = ?"), "s = 'it''s ?' OR t = $1");
    }

    #[test]
    fn cells_convert_or_name_the_mismatch() {
        assert_eq!(u8::from_cell(Cell::Int(42)), Ok(42));
        assert!(u8::from_cell(Cell::Int(300)).unwrap_err().contains("does not fit"));
        assert_eq!(Option::<i64>::from_cell(Cell::Null), Ok(None));
        assert!(String::from_cell(Cell::Int(1)).unwrap_err().contains("expected text"));
        assert!(<[u8; 32]>::from_cell(Cell::Bytes(vec![0; 31])).unwrap_err().contains("32 bytes"));
        assert_eq!(bool::from_cell(Cell::Int(1)), Ok(true));
    }
}
