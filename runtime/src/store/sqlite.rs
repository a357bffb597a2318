//! The embedded backend: one SQLite file per database (app) in the data
//! directory, in WAL mode with `synchronous = FULL`, so a write that
//! returned success survives a crash of the process or of the machine.
//!
//! Writes commit in groups: a write runs in a savepoint of an open
//! transaction, and the transaction commits (one fsync) once no other write
//! of the database is queued for the connection, or before any read. Each
//! write is answered only after its group's commit, so an acknowledged
//! write is durable as before; concurrent writers share the fsync.
//!
//! Documents are JSON text keyed by `(collection, _id)`. An index is a table
//! of order-preserving keys (see [`super::keys`]); a find whose filter
//! constrains an index's first field reads only the matching key range, and
//! every candidate is checked against the whole filter.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::counters::ChangeCounters;
use super::keys::{bracket_bounds, encode, index_keys, prefix_end};
use super::query::filter::Cond;
use super::query::shape::SortKey;
use super::query::update::{Padding, set};
use super::query::value::{Bracket, bracket};
use super::query::{Budget, Filter, Sort, new_id};
use super::{
    Change, DocumentStore, FindSpec, Namespace, Query, StoreError, UpdateOutcome, index_name,
};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS documents (
        collection TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,
        PRIMARY KEY (collection, id)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS indexes (
        collection TEXT NOT NULL, name TEXT NOT NULL, paths TEXT NOT NULL, is_unique INTEGER NOT NULL,
        PRIMARY KEY (collection, name)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS index_entries (
        collection TEXT NOT NULL, name TEXT NOT NULL, key BLOB NOT NULL, id TEXT NOT NULL,
        PRIMARY KEY (collection, name, key, id)) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS index_entries_by_id ON index_entries (collection, id);
";

/// The SQL that reads the candidates of one key range.
const RANGE_SQL: &str = "SELECT d.id, d.body FROM documents d WHERE d.collection = ?1 AND d.id IN (
    SELECT e.id FROM index_entries e WHERE e.collection = ?1 AND e.name = ?2 AND e.key >= ?3 AND e.key < ?4)
    ORDER BY d.id";
const SCAN_SQL: &str = "SELECT id, body FROM documents WHERE collection = ?1 ORDER BY id";

/// Most bytes of documents a sorted find holds while it sorts; past it the
/// find is `LimitExceeded` (MongoDB's in-memory sort has such a limit too).
pub const MAX_SORT_BYTES: usize = 64 * 1024 * 1024;

/// The embedded store.
pub struct SqliteStore {
    dir: PathBuf,
    /// One connection per database, used by one call at a time.
    databases: Mutex<HashMap<String, Arc<AppDatabase>>>,
    /// How long one call may run before it is `LimitExceeded`.
    budget: std::time::Duration,
    counters: ChangeCounters,
}

/// Blocking threads one database may hold at once; more calls wait as
/// futures, so one app's calls never fill the blocking pool.
const THREADS_PER_DATABASE: usize = 4;

/// A database's connection, and the blocking threads its calls may take.
struct AppDatabase {
    connection: Mutex<Database>,
    threads: Arc<tokio::sync::Semaphore>,
    /// Writes about to take the connection: while any is, an open group
    /// stays open for it to join.
    queued_writers: AtomicUsize,
    /// Signalled when a group commits or fails.
    group_done: Condvar,
}

struct Database {
    conn: Connection,
    /// Index specs per collection, read once.
    indexes: HashMap<String, Arc<Vec<IndexSpec>>>,
    groups: Groups,
}

/// The write groups of a connection, numbered in commit order.
#[derive(Default)]
struct Groups {
    /// The group whose transaction is open.
    open: Option<u64>,
    next: u64,
    /// Every group up to this one has finished.
    finished: u64,
    /// Recent groups whose commit failed, with why.
    failed: VecDeque<(u64, StoreError)>,
}

/// Failed groups remembered for the writes waiting on them; a group's
/// writers are at most the database's threads, so a few suffice.
const FAILED_GROUPS_KEPT: usize = 64;

#[derive(Debug, Clone)]
struct IndexSpec {
    name: String,
    paths: Vec<String>,
    unique: bool,
}

fn unavailable(err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {err}"))
}

impl SqliteStore {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: &Path, budget: std::time::Duration) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(unavailable)?;
        Ok(SqliteStore {
            dir: dir.to_path_buf(),
            databases: Mutex::new(HashMap::new()),
            budget,
            counters: ChangeCounters::open(&dir.join("change-counters"))?,
        })
    }

    /// The database's connection, opened (off the async threads) on first use.
    async fn database(&self, name: &str) -> Result<Arc<AppDatabase>, StoreError> {
        if let Some(db) = self
            .databases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(db.clone());
        }
        let path = self.dir.join(format!("{name}.sqlite3"));
        let opened = tokio::task::spawn_blocking(move || open_database(&path))
            .await
            .map_err(|e| StoreError::Unavailable(format!("embedded store task failed: {e}")))??;
        let mut databases = self.databases.lock().unwrap_or_else(|e| e.into_inner());
        // Two first calls may both open it; the first one kept wins.
        Ok(databases
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(AppDatabase {
                    connection: Mutex::new(opened),
                    threads: Arc::new(tokio::sync::Semaphore::new(THREADS_PER_DATABASE)),
                    queued_writers: AtomicUsize::new(0),
                    group_done: Condvar::new(),
                })
            })
            .clone())
    }

    /// Runs a read on the database's connection, off the async threads. An
    /// open write group commits first, so a read sees only durable writes.
    ///
    /// At most [`THREADS_PER_DATABASE`] calls of one database hold blocking
    /// threads (queued on its connection); the others wait as futures, so
    /// one app's slow calls never fill the blocking pool. The work's budget
    /// ends at the store's time limit, or as soon as the caller stops
    /// waiting (its invocation timed out): the blocking work is cancelled too.
    async fn run<T: Send + 'static>(
        &self,
        ns: Namespace<'_>,
        work: impl FnOnce(&mut Database, &str, &Budget) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.blocking(ns, move |db, collection, budget| {
            let mut conn = db.connection.lock().unwrap_or_else(|e| e.into_inner());
            if conn.groups.open.is_some() {
                conn.commit_group();
                db.group_done.notify_all();
            }
            // Cancelled or late while queued for the connection: stop here.
            budget.check()?;
            work(&mut conn, collection, budget)
        })
        .await
    }

    /// Runs a write in the open write group (opening one if none is), and
    /// answers once the group committed: the group commits when no other
    /// write is queued for the connection, else the last write to join it
    /// (or the next read) commits it.
    async fn run_write<T: Send + 'static>(
        &self,
        ns: Namespace<'_>,
        work: impl FnOnce(&mut Database, &str, &Budget) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.blocking(ns, move |db, collection, budget| {
            db.queued_writers.fetch_add(1, Ordering::SeqCst);
            let mut conn = db.connection.lock().unwrap_or_else(|e| e.into_inner());
            db.queued_writers.fetch_sub(1, Ordering::SeqCst);
            let joined = match conn.groups.open {
                Some(group) => Ok(group),
                None => conn.open_group(),
            };
            // Late or cancelled work does nothing, but may still be the one to commit.
            let result = match &joined {
                Ok(_) => budget
                    .check()
                    .map_err(StoreError::from)
                    .and_then(|()| work(&mut conn, collection, budget)),
                Err(err) => Err(err.clone()),
            };
            if conn.groups.open.is_some() && db.queued_writers.load(Ordering::SeqCst) == 0 {
                conn.commit_group();
                db.group_done.notify_all();
            }
            let group = joined?;
            let value = result?;
            while conn.groups.finished < group {
                conn = db.group_done.wait(conn).unwrap_or_else(|e| e.into_inner());
            }
            match conn.groups.failed.iter().find(|(g, _)| *g == group) {
                Some((_, err)) => Err(err.clone()),
                None => Ok(value),
            }
        })
        .await
    }

    /// Runs `work` off the async threads, holding one of the database's
    /// threads, with the call's budget.
    async fn blocking<T: Send + 'static>(
        &self,
        ns: Namespace<'_>,
        work: impl FnOnce(&AppDatabase, &str, &Budget) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.database(ns.database).await?;
        let collection = ns.collection.to_string();
        let deadline = Instant::now() + self.budget;
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let thread = tokio::time::timeout_at(deadline.into(), db.threads.clone().acquire_owned())
            .await
            .map_err(|_| {
                StoreError::LimitExceeded(
                    "the app's database stayed busy past the call's time budget".into(),
                )
            })?
            .map_err(|_| StoreError::Unavailable("the embedded store is closing".into()))?;
        let cancelled = cancel.0.clone();
        tokio::task::spawn_blocking(move || {
            let _thread = thread;
            let budget = Budget::new(deadline, cancelled);
            work(&db, &collection, &budget)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("embedded store task failed: {e}")))?
    }

    /// How many write groups (commits) database `name` made since it
    /// opened. For tests and diagnostics.
    pub fn groups_committed(&self, name: &str) -> u64 {
        self.databases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map_or(0, |db| {
                let conn = db.connection.lock().unwrap_or_else(|e| e.into_inner());
                conn.groups.finished - conn.groups.failed.len() as u64
            })
    }

    /// SQLite's plan for the key-range read a filter would use (`None`: a
    /// collection scan). For tests and diagnostics.
    pub async fn explain(
        &self,
        ns: Namespace<'_>,
        filter: &Value,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let filter = Filter::parse(filter)?;
        self.run(ns, move |db, coll, _| {
            let indexes = db.indexes_of(coll)?;
            let Some((index, _)) = plan(&filter, &indexes) else {
                return Ok(None);
            };
            let mut stmt = db
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {RANGE_SQL}"))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(
                    params![coll, index, Vec::<u8>::new(), Vec::<u8>::new()],
                    |r| r.get::<_, String>(3),
                )
                .map_err(unavailable)?;
            Ok(Some(rows.collect::<Result<_, _>>().map_err(unavailable)?))
        })
        .await
    }
}

/// Sets its flag when dropped: the future waiting for a blocking call was
/// dropped (or finished), so the call's budget ends.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn open_database(path: &Path) -> Result<Database, StoreError> {
    let conn = Connection::open(path).map_err(unavailable)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
    )
    .map_err(unavailable)?;
    conn.execute_batch(SCHEMA).map_err(unavailable)?;
    Ok(Database {
        conn,
        indexes: HashMap::new(),
        groups: Groups::default(),
    })
}

impl Database {
    /// Opens a write group: a transaction that takes the write lock at
    /// once, so no write in it fails half-way for want of it.
    fn open_group(&mut self) -> Result<u64, StoreError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(unavailable)?;
        self.groups.next += 1;
        self.groups.open = Some(self.groups.next);
        Ok(self.groups.next)
    }

    /// Commits the open group (one fsync for all its writes); on failure
    /// rolls it back, and its writes fail.
    fn commit_group(&mut self) {
        let Some(group) = self.groups.open.take() else {
            return;
        };
        if let Err(err) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            // Index specs read or made inside the group may be gone.
            self.indexes.clear();
            if self.groups.failed.len() == FAILED_GROUPS_KEPT {
                self.groups.failed.pop_front();
            }
            self.groups.failed.push_back((group, unavailable(err)));
        }
        self.groups.finished = group;
    }

    fn indexes_of(&mut self, coll: &str) -> Result<Arc<Vec<IndexSpec>>, StoreError> {
        if let Some(specs) = self.indexes.get(coll) {
            return Ok(specs.clone());
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, paths, is_unique FROM indexes WHERE collection = ?1 ORDER BY name",
            )
            .map_err(unavailable)?;
        let specs = stmt
            .query_map([coll], |row| {
                let paths: String = row.get(1)?;
                Ok(IndexSpec {
                    name: row.get(0)?,
                    paths: serde_json::from_str(&paths).unwrap_or_default(),
                    unique: row.get(2)?,
                })
            })
            .map_err(unavailable)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        let specs = Arc::new(specs);
        self.indexes.insert(coll.to_string(), specs.clone());
        Ok(specs)
    }
}

/// Key ranges `[start, end)` of an index.
type KeyRanges = Vec<(Vec<u8>, Vec<u8>)>;

/// The index and key ranges that hold every match of `filter`, if any index fits.
///
/// An index fits when the filter has a single scalar equality on its
/// leading fields (a key prefix), optionally followed by a range on the
/// next field; or an `$in` or a range on its first field. The index whose
/// ranges are narrowest by that measure wins.
fn plan(filter: &Filter, indexes: &[IndexSpec]) -> Option<(String, KeyRanges)> {
    let mut best: Option<(usize, String, KeyRanges)> = None;
    for index in indexes {
        let (prefix, fields) = equality_prefix(filter, &index.paths);
        let candidate = if fields > 0 {
            let next = index
                .paths
                .get(fields)
                .and_then(|path| comparison_range(&filter.conditions_on(path)));
            match next {
                Some((start, end)) => (
                    2 * fields + 1,
                    vec![([&prefix[..], &start].concat(), [&prefix[..], &end].concat())],
                ),
                None => {
                    let end = prefix_end(&prefix);
                    (2 * fields, vec![(prefix, end)])
                }
            }
        } else {
            let conds = filter.conditions_on(&index.paths[0]);
            if let Some(ranges) = equality_ranges(&conds) {
                (2, ranges)
            } else if let Some(range) = comparison_range(&conds) {
                (1, vec![range])
            } else {
                continue;
            }
        };
        if best
            .as_ref()
            .is_none_or(|(score, _, _)| candidate.0 > *score)
        {
            best = Some((candidate.0, index.name.clone(), candidate.1));
        }
    }
    best.map(|(_, name, ranges)| (name, ranges))
}

/// The key prefix of the filter's single scalar equalities on the leading
/// `paths`, and how many fields it covers.
fn equality_prefix(filter: &Filter, paths: &[String]) -> (Vec<u8>, usize) {
    let mut prefix = Vec::new();
    let mut fields = 0;
    for path in paths {
        let value = filter.conditions_on(path).iter().find_map(|c| match c {
            Cond::Eq(v) if indexable(v) => Some(v),
            _ => None,
        });
        let Some(value) = value else { break };
        encode(value, &mut prefix);
        fields += 1;
    }
    (prefix, fields)
}

/// For a filter made only of string or boolean equalities on the leading
/// fields of an index, the index and key range whose distinct ids are
/// exactly the matches: a count reads the index alone. (Null, numbers and
/// dates are left out: their keys can stand for values the filter does not
/// match, e.g. `[]` or integers past 2^53.)
fn covered_range(filter: &Filter, indexes: &[IndexSpec]) -> Option<(String, Vec<u8>, Vec<u8>)> {
    let parts: Vec<&Filter> = match filter {
        Filter::And(all) => all.iter().collect(),
        single => vec![single],
    };
    let mut wanted: Vec<(&str, &Value)> = Vec::with_capacity(parts.len());
    for part in parts {
        let Filter::Field { path, conds } = part else {
            return None;
        };
        let [Cond::Eq(value @ (Value::String(_) | Value::Bool(_)))] = conds.as_slice() else {
            return None;
        };
        wanted.push((path, value));
    }
    indexes.iter().find_map(|index| {
        if index.paths.len() < wanted.len() {
            return None;
        }
        let mut prefix = Vec::new();
        for path in &index.paths[..wanted.len()] {
            let (_, value) = wanted.iter().find(|(p, _)| p == path)?;
            encode(value, &mut prefix);
        }
        let end = prefix_end(&prefix);
        Some((index.name.clone(), prefix, end))
    })
}

/// The `_id`s every match must have, when the filter names them: those
/// are read by primary key.
fn id_lookup(filter: &Filter) -> Option<Vec<&str>> {
    filter.conditions_on("_id").iter().find_map(|c| match c {
        Cond::Eq(Value::String(id)) => Some(vec![id.as_str()]),
        Cond::In(list) => list.iter().map(Value::as_str).collect(),
        _ => None,
    })
}

/// Values an index can look up by equality: scalars and dates.
fn indexable(v: &Value) -> bool {
    !matches!(bracket(v), Bracket::Object | Bracket::Array)
}

fn equality_ranges(conds: &[&Cond]) -> Option<KeyRanges> {
    let values: Vec<&Value> = conds.iter().find_map(|c| match c {
        Cond::Eq(v) if indexable(v) => Some(vec![v]),
        Cond::In(list) if !list.is_empty() && list.iter().all(indexable) => {
            Some(list.iter().collect())
        }
        _ => None,
    })?;
    Some(
        values
            .into_iter()
            .map(|v| {
                let mut key = Vec::new();
                encode(v, &mut key);
                let end = prefix_end(&key);
                (key, end)
            })
            .collect(),
    )
}

fn comparison_range(conds: &[&Cond]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut range: Option<(Bracket, Vec<u8>, Vec<u8>)> = None;
    for cond in conds {
        let (v, lower, inclusive) = match cond {
            Cond::Gt(v) => (v, true, false),
            Cond::Gte(v) => (v, true, true),
            Cond::Lt(v) => (v, false, false),
            Cond::Lte(v) => (v, false, true),
            _ => continue,
        };
        let b = bracket(v);
        if !indexable(v) || b == Bracket::Null || range.as_ref().is_some_and(|r| r.0 != b) {
            continue;
        }
        let (start, end) = bracket_bounds(b);
        let r = range.get_or_insert((b, start, end));
        let mut key = Vec::new();
        encode(v, &mut key);
        match (lower, inclusive) {
            (true, true) => r.1 = r.1.clone().max(key),
            (true, false) => r.1 = r.1.clone().max(prefix_end(&key)),
            (false, true) => r.2 = r.2.clone().min(prefix_end(&key)),
            (false, false) => r.2 = r.2.clone().min(key),
        }
    }
    range.map(|(_, start, end)| (start, end))
}

/// Calls `visit` with each document matching `filter` (its `_id`, its
/// size as JSON text, and the document), in `_id` order except across the
/// ranges of an `$in`; stops when `visit` returns false. Every candidate is
/// charged to `budget`.
fn each_match(
    conn: &Connection,
    coll: &str,
    filter: &Filter,
    indexes: &[IndexSpec],
    budget: &Budget,
    mut visit: impl FnMut(String, usize, Value) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let ids = id_lookup(filter);
    let ranges = match ids {
        Some(_) => None,
        None => plan(filter, indexes),
    };
    // Several ids or key ranges can yield one document twice.
    let several = ids.as_ref().is_some_and(|i| i.len() > 1)
        || ranges.as_ref().is_some_and(|(_, r)| r.len() > 1);
    let mut seen = std::collections::HashSet::new();
    let mut check = |id: String, body: String| -> Result<bool, StoreError> {
        budget.charge(1 + body.len() / 64)?;
        let doc: Value = serde_json::from_str(&body).map_err(unavailable)?;
        if !filter.matches(&doc, budget)? || (several && !seen.insert(id.clone())) {
            return Ok(true);
        }
        visit(id, body.len(), doc)
    };
    let mut rows_of = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> Result<bool, StoreError> {
        let mut stmt = conn.prepare_cached(sql).map_err(unavailable)?;
        let mut rows = stmt.query(params).map_err(unavailable)?;
        while let Some(row) = rows.next().map_err(unavailable)? {
            let (id, body) = (
                row.get(0).map_err(unavailable)?,
                row.get(1).map_err(unavailable)?,
            );
            if !check(id, body)? {
                return Ok(false);
            }
        }
        Ok(true)
    };
    if let Some(ids) = ids {
        for id in ids {
            budget.charge(1)?;
            if !rows_of(
                "SELECT id, body FROM documents WHERE collection = ?1 AND id = ?2",
                params![coll, id],
            )? {
                break;
            }
        }
        return Ok(());
    }
    match ranges {
        Some((index, ranges)) => {
            for (start, end) in ranges {
                budget.charge(1)?;
                if !rows_of(RANGE_SQL, params![coll, index, start, end])? {
                    break;
                }
            }
        }
        None => {
            rows_of(SCAN_SQL, params![coll])?;
        }
    }
    Ok(())
}

/// The documents matching `filter`, ordered by `_id`; stops after `stop_after` when given.
fn matching(
    conn: &Connection,
    coll: &str,
    filter: &Filter,
    indexes: &[IndexSpec],
    budget: &Budget,
    stop_after: Option<usize>,
) -> Result<Vec<(String, Value)>, StoreError> {
    let mut found = Vec::new();
    each_match(conn, coll, filter, indexes, budget, |id, _, doc| {
        found.push((id, doc));
        Ok(stop_after.is_none_or(|n| found.len() < n))
    })?;
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// The first `keep` matches in `sort` order. Holds at most `2 * keep`
/// documents (and [`MAX_SORT_BYTES`]) at a time: when full, it sorts and
/// drops all but the first `keep`, so the work is O(n log keep).
fn sorted_matches(
    conn: &Connection,
    coll: &str,
    filter: &Filter,
    indexes: &[IndexSpec],
    budget: &Budget,
    sort: &Sort,
    keep: usize,
) -> Result<Vec<Value>, StoreError> {
    let mut held: Vec<(SortKey, usize, Value)> = Vec::new();
    let mut bytes = 0usize;
    let trim = |held: &mut Vec<(SortKey, usize, Value)>, bytes: &mut usize| {
        held.sort_by(|a, b| sort.compare(&a.0, &b.0));
        for (_, size, _) in held.drain(keep.min(held.len())..) {
            *bytes -= size;
        }
    };
    each_match(conn, coll, filter, indexes, budget, |_, size, doc| {
        let key = sort.key(&doc, budget)?;
        bytes += size;
        held.push((key, size, doc));
        if held.len() >= keep.saturating_mul(2).max(64) || bytes > MAX_SORT_BYTES {
            budget.charge(held.len())?;
            trim(&mut held, &mut bytes);
            if bytes > MAX_SORT_BYTES {
                return Err(StoreError::LimitExceeded(format!(
                    "the sorted find holds over {MAX_SORT_BYTES} bytes of documents; add a limit, a narrower filter, or page with a range on the sort field"
                )));
            }
        }
        Ok(true)
    })?;
    trim(&mut held, &mut bytes);
    Ok(held.into_iter().map(|(_, _, doc)| doc).collect())
}

/// Writes a document and its index keys, refusing a unique-key clash.
fn write(
    conn: &Connection,
    coll: &str,
    indexes: &[IndexSpec],
    id: &str,
    doc: &Value,
    budget: &Budget,
) -> Result<(), StoreError> {
    execute(
        conn,
        "DELETE FROM index_entries WHERE collection = ?1 AND id = ?2",
        params![coll, id],
    )?;
    for index in indexes {
        write_keys(conn, coll, index, id, doc, budget)?;
    }
    execute(
        conn,
        "INSERT INTO documents (collection, id, body) VALUES (?1, ?2, ?3)
         ON CONFLICT (collection, id) DO UPDATE SET body = excluded.body",
        params![coll, id, doc.to_string()],
    )?;
    Ok(())
}

/// Writes the keys `doc` gives to `index`, refusing a unique-key clash.
fn write_keys(
    conn: &Connection,
    coll: &str,
    index: &IndexSpec,
    id: &str,
    doc: &Value,
    budget: &Budget,
) -> Result<(), StoreError> {
    for key in index_keys(doc, &index.paths, budget)? {
        if index.unique {
            let clash: Option<String> = conn
                .prepare_cached(
                    "SELECT id FROM index_entries WHERE collection = ?1 AND name = ?2 AND key = ?3 AND id <> ?4 LIMIT 1",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![coll, index.name, key, id], |r| r.get(0))
                        .optional()
                })
                .map_err(unavailable)?;
            if clash.is_some() {
                return Err(StoreError::Conflict(format!(
                    "another document has the same {} (unique index {})",
                    index.paths.join(", "),
                    index.name
                )));
            }
        }
        execute(
            conn,
            "INSERT OR IGNORE INTO index_entries (collection, name, key, id) VALUES (?1, ?2, ?3, ?4)",
            params![coll, index.name, key, id],
        )?;
    }
    Ok(())
}

/// One write inside its group: released into the group on `commit`,
/// rolled back alone when dropped.
fn begin(conn: &mut Connection) -> Result<rusqlite::Savepoint<'_>, StoreError> {
    conn.savepoint().map_err(unavailable)
}

fn remove(conn: &Connection, coll: &str, id: &str) -> Result<(), StoreError> {
    execute(
        conn,
        "DELETE FROM index_entries WHERE collection = ?1 AND id = ?2",
        params![coll, id],
    )?;
    execute(
        conn,
        "DELETE FROM documents WHERE collection = ?1 AND id = ?2",
        params![coll, id],
    )?;
    Ok(())
}

/// Runs one statement from the connection's statement cache: parsing the
/// SQL again on every write cost more than the write itself.
fn execute(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<usize, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute(params))
        .map_err(unavailable)
}

fn exists(conn: &Connection, coll: &str, id: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM documents WHERE collection = ?1 AND id = ?2")
        .and_then(|mut stmt| stmt.query_row(params![coll, id], |_| Ok(())).optional())
        .map(|r| r.is_some())
        .map_err(unavailable)
}

/// Writes a document whose `_id` must be new; returns the `_id`.
fn insert_new(
    conn: &Connection,
    coll: &str,
    indexes: &[IndexSpec],
    doc: &Value,
    budget: &Budget,
) -> Result<String, StoreError> {
    let id = id_of(doc);
    if exists(conn, coll, &id)? {
        return Err(StoreError::Conflict(format!(
            "a document with _id `{id}` exists"
        )));
    }
    write(conn, coll, indexes, &id, doc, budget)?;
    Ok(id)
}

fn id_of(doc: &Value) -> String {
    doc.get("_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The document an upsert inserts: the filter's equalities, then the update.
fn upserted(filter: &Filter, change: &Change, budget: &Budget) -> Result<Value, StoreError> {
    let mut doc = Value::Object(Default::default());
    let mut padding = Padding::default();
    for (path, value) in filter.equalities() {
        set(&mut doc, path, value.clone(), &mut padding)?;
    }
    change.update.apply(&mut doc, true, now_millis(), budget)?;
    with_id_first(&mut doc, None);
    super::query::check_document(&doc)?;
    Ok(doc)
}

/// Puts `_id` first (MongoDB keeps it first): `id`, else the document's
/// own, else a new one.
fn with_id_first(doc: &mut Value, id: Option<Value>) {
    let Value::Object(map) = doc else { return };
    let id = id
        .or_else(|| map.shift_remove("_id"))
        .unwrap_or_else(|| Value::from(new_id()));
    map.shift_remove("_id");
    map.shift_insert(0, "_id".into(), id);
}

/// The `_id` an upserting replace takes from its filter (`{_id: "x"}`).
fn filter_id(filter: &Filter) -> Option<Value> {
    filter
        .equalities()
        .into_iter()
        .find(|(path, value)| *path == "_id" && value.is_string())
        .map(|(_, value)| value.clone())
}

/// Applies `change` to the matches (the first, unless `multi`), or upserts.
/// Returns the outcome and the (before, after) of the first match.
fn update_in(
    db: &mut Database,
    coll: &str,
    query: &Query,
    change: &Change,
    upsert: bool,
    multi: bool,
    budget: &Budget,
) -> Result<(UpdateOutcome, Option<(Value, Value)>), StoreError> {
    let indexes = db.indexes_of(coll)?;
    let tx = begin(&mut db.conn)?;
    let matches = matching(
        &tx,
        coll,
        &query.filter,
        &indexes,
        budget,
        (!multi).then_some(1),
    )?;
    let mut outcome = UpdateOutcome::default();
    let mut first = None;
    if matches.is_empty() && upsert {
        let doc = upserted(&query.filter, change, budget)?;
        outcome.upserted_id = Some(insert_new(&tx, coll, &indexes, &doc, budget)?);
        first = Some((Value::Null, doc));
    }
    let now = now_millis();
    for (id, mut doc) in matches {
        let before = doc.clone();
        outcome.matched += 1;
        if change.update.apply(&mut doc, false, now, budget)? {
            super::query::check_document(&doc)?;
            write(&tx, coll, &indexes, &id, &doc, budget)?;
            outcome.modified += 1;
        }
        first.get_or_insert((before, doc));
    }
    tx.commit().map_err(unavailable)?;
    Ok((outcome, first))
}

#[async_trait]
impl DocumentStore for SqliteStore {
    async fn insert(&self, ns: Namespace<'_>, docs: Vec<Value>) -> Result<(), StoreError> {
        self.run_write(ns, move |db, coll, budget| {
            let indexes = db.indexes_of(coll)?;
            let tx = begin(&mut db.conn)?;
            for doc in &docs {
                insert_new(&tx, coll, &indexes, doc, budget)?;
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn find(
        &self,
        ns: Namespace<'_>,
        query: &Query,
        spec: &FindSpec,
    ) -> Result<Vec<Value>, StoreError> {
        let filter = query.filter.clone();
        let sort = spec.sort.as_ref().map(|(_, s)| s.clone());
        let (skip, limit) = (spec.skip as usize, spec.limit.map(|l| l as usize));
        self.run(ns, move |db, coll, budget| {
            let indexes = db.indexes_of(coll)?;
            let end = limit.map_or(usize::MAX, |l| skip.saturating_add(l));
            let docs = match &sort {
                Some(sort) => sorted_matches(&db.conn, coll, &filter, &indexes, budget, sort, end)?,
                // Without a sort, results come in `_id` order and reading can stop early.
                None => matching(
                    &db.conn,
                    coll,
                    &filter,
                    &indexes,
                    budget,
                    limit.map(|_| end),
                )?
                .into_iter()
                .map(|(_, d)| d)
                .collect(),
            };
            Ok(docs.into_iter().skip(skip).collect())
        })
        .await
    }

    async fn update(
        &self,
        ns: Namespace<'_>,
        query: &Query,
        change: &Change,
        upsert: bool,
        multi: bool,
    ) -> Result<UpdateOutcome, StoreError> {
        let (query, change) = (query.clone(), change.clone());
        self.run_write(ns, move |db, coll, budget| {
            update_in(db, coll, &query, &change, upsert, multi, budget).map(|(o, _)| o)
        })
        .await
    }

    async fn replace(
        &self,
        ns: Namespace<'_>,
        query: &Query,
        replacement: Value,
        upsert: bool,
    ) -> Result<UpdateOutcome, StoreError> {
        let query = query.clone();
        self.run_write(ns, move |db, coll, budget| {
            let indexes = db.indexes_of(coll)?;
            let tx = begin(&mut db.conn)?;
            let found = matching(&tx, coll, &query.filter, &indexes, budget, Some(1))?;
            let mut outcome = UpdateOutcome::default();
            let mut doc = replacement;
            match found.into_iter().next() {
                Some((id, old)) => {
                    if doc
                        .get("_id")
                        .is_some_and(|new| Some(new) != old.get("_id"))
                    {
                        return Err(StoreError::InvalidInput("_id cannot be changed".into()));
                    }
                    with_id_first(&mut doc, Some(Value::from(id.clone())));
                    outcome.matched = 1;
                    if doc != old {
                        write(&tx, coll, &indexes, &id, &doc, budget)?;
                        outcome.modified = 1;
                    }
                }
                None if upsert => {
                    let wanted = filter_id(&query.filter);
                    if let (Some(own), Some(wanted)) = (doc.get("_id"), &wanted)
                        && own != wanted
                    {
                        return Err(StoreError::InvalidInput(
                            "the replacement's _id differs from the filter's".into(),
                        ));
                    }
                    with_id_first(&mut doc, wanted);
                    outcome.upserted_id = Some(insert_new(&tx, coll, &indexes, &doc, budget)?);
                }
                None => {}
            }
            tx.commit().map_err(unavailable)?;
            Ok(outcome)
        })
        .await
    }

    async fn find_one_and_update(
        &self,
        ns: Namespace<'_>,
        query: &Query,
        change: &Change,
        return_new: bool,
        upsert: bool,
    ) -> Result<Option<Value>, StoreError> {
        let (query, change) = (query.clone(), change.clone());
        self.run_write(ns, move |db, coll, budget| {
            let (_, first) = update_in(db, coll, &query, &change, upsert, false, budget)?;
            Ok(first.and_then(|(before, after)| {
                if return_new {
                    Some(after)
                } else {
                    Some(before).filter(|b| !b.is_null())
                }
            }))
        })
        .await
    }

    async fn delete(
        &self,
        ns: Namespace<'_>,
        query: &Query,
        multi: bool,
    ) -> Result<u64, StoreError> {
        let filter = query.filter.clone();
        self.run_write(ns, move |db, coll, budget| {
            let indexes = db.indexes_of(coll)?;
            let tx = begin(&mut db.conn)?;
            let found = matching(&tx, coll, &filter, &indexes, budget, (!multi).then_some(1))?;
            for (id, _) in &found {
                remove(&tx, coll, id)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(found.len() as u64)
        })
        .await
    }

    async fn count(&self, ns: Namespace<'_>, query: &Query) -> Result<u64, StoreError> {
        let filter = query.filter.clone();
        self.run(ns, move |db, coll, budget| {
            let indexes = db.indexes_of(coll)?;
            if let Some((index, start, end)) = covered_range(&filter, &indexes) {
                return db
                    .conn
                    .prepare_cached(
                        "SELECT COUNT(DISTINCT id) FROM index_entries WHERE collection = ?1 AND name = ?2 AND key >= ?3 AND key < ?4",
                    )
                    .and_then(|mut stmt| {
                        stmt.query_row(params![coll, index, start, end], |r| r.get::<_, i64>(0))
                    })
                    .map(|n| n as u64)
                    .map_err(unavailable);
            }
            let mut count = 0u64;
            each_match(&db.conn, coll, &filter, &indexes, budget, |_, _, _| {
                count += 1;
                Ok(true)
            })?;
            Ok(count)
        })
        .await
    }

    async fn create_index(
        &self,
        ns: Namespace<'_>,
        keys: &[(String, i32)],
        unique: bool,
    ) -> Result<(), StoreError> {
        let name = index_name(keys);
        let paths: Vec<String> = keys.iter().map(|(p, _)| p.clone()).collect();
        self.run_write(ns, move |db, coll, budget| {
            let existing = db.indexes_of(coll)?;
            if let Some(found) = existing.iter().find(|i| i.name == name) {
                if found.unique != unique {
                    return Err(StoreError::Conflict(format!(
                        "index {name} exists with unique = {}",
                        found.unique
                    )));
                }
                return Ok(());
            }
            let spec = IndexSpec {
                name: name.clone(),
                paths,
                unique,
            };
            let tx = begin(&mut db.conn)?;
            execute(
                &tx,
                "INSERT INTO indexes (collection, name, paths, is_unique) VALUES (?1, ?2, ?3, ?4)",
                params![
                    coll,
                    name,
                    serde_json::to_string(&spec.paths).expect("strings"),
                    unique
                ],
            )?;
            // Only index_entries is written while documents are read.
            {
                let mut stmt = tx.prepare(SCAN_SQL).map_err(unavailable)?;
                let mut rows = stmt.query([coll]).map_err(unavailable)?;
                while let Some(row) = rows.next().map_err(unavailable)? {
                    let id: String = row.get(0).map_err(unavailable)?;
                    let body: String = row.get(1).map_err(unavailable)?;
                    budget.charge(1 + body.len() / 64)?;
                    let doc: Value = serde_json::from_str(&body).map_err(unavailable)?;
                    write_keys(&tx, coll, &spec, &id, &doc, budget)?;
                }
            }
            let mut all = existing.as_ref().clone();
            all.push(spec);
            tx.commit().map_err(unavailable)?;
            db.indexes.insert(coll.to_string(), Arc::new(all));
            Ok(())
        })
        .await
    }

    fn change_counters(&self) -> Option<&ChangeCounters> {
        Some(&self.counters)
    }

    async fn drop_collection(&self, ns: Namespace<'_>) -> Result<(), StoreError> {
        self.run_write(ns, move |db, coll, _| {
            let tx = begin(&mut db.conn)?;
            for table in ["documents", "indexes", "index_entries"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE collection = ?1"),
                    [coll],
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)?;
            db.indexes.remove(coll);
            Ok(())
        })
        .await
    }
}
