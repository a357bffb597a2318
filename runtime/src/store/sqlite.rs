//! The embedded backend: one SQLite file per database (app) in the data
//! directory, in WAL mode with `synchronous = FULL`, so a write that
//! returned success survives a crash of the process or of the machine.
//!
//! Documents are JSON text keyed by `(collection, _id)`. An index is a table
//! of order-preserving keys (see [`super::keys`]); a find whose filter
//! constrains an index's first field reads only the matching key range, and
//! every candidate is checked against the whole filter.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;

use super::keys::{bracket_bounds, encode, index_keys, prefix_end};
use super::query::filter::Cond;
use super::query::value::{Bracket, bracket};
use super::query::{Filter, new_id, update::set};
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

/// The embedded store.
pub struct SqliteStore {
    dir: PathBuf,
    databases: Mutex<HashMap<String, Arc<Mutex<Database>>>>,
    /// How long one call may run before it is `LimitExceeded`.
    budget: std::time::Duration,
}

struct Database {
    conn: Connection,
    /// Index specs per collection, read once.
    indexes: HashMap<String, Arc<Vec<IndexSpec>>>,
}

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
        })
    }

    fn database(&self, name: &str) -> Result<Arc<Mutex<Database>>, StoreError> {
        let mut databases = self.databases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = databases.get(name) {
            return Ok(db.clone());
        }
        let conn =
            Connection::open(self.dir.join(format!("{name}.sqlite3"))).map_err(unavailable)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
        )
        .map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        let db = Arc::new(Mutex::new(Database {
            conn,
            indexes: HashMap::new(),
        }));
        databases.insert(name.to_string(), db.clone());
        Ok(db)
    }

    /// Runs `work` on the database's connection, off the async threads.
    async fn run<T: Send + 'static>(
        &self,
        ns: Namespace<'_>,
        work: impl FnOnce(&mut Database, &str, Instant) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.database(ns.database)?;
        let collection = ns.collection.to_string();
        let deadline = Instant::now() + self.budget;
        tokio::task::spawn_blocking(move || {
            let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
            work(&mut db, &collection, deadline)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("embedded store task failed: {e}")))?
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

impl Database {
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

/// The index and key ranges that hold every match of `filter`, if any index fits.
fn plan(filter: &Filter, indexes: &[IndexSpec]) -> Option<(String, Vec<(Vec<u8>, Vec<u8>)>)> {
    let mut best: Option<(String, Vec<(Vec<u8>, Vec<u8>)>)> = None;
    for index in indexes {
        let conds = filter.conditions_on(&index.paths[0]);
        if let Some(ranges) = equality_ranges(&conds) {
            return Some((index.name.clone(), ranges));
        }
        if best.is_none()
            && let Some(range) = comparison_range(&conds)
        {
            best = Some((index.name.clone(), vec![range]));
        }
    }
    best
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

fn equality_ranges(conds: &[&Cond]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
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

/// The documents matching `filter`, ordered by `_id`; stops after `stop_after` when given.
fn matching(
    conn: &Connection,
    coll: &str,
    filter: &Filter,
    indexes: &[IndexSpec],
    deadline: Instant,
    stop_after: Option<usize>,
) -> Result<Vec<(String, Value)>, StoreError> {
    let mut found = BTreeMap::new();
    let check = |id: String,
                 body: String,
                 found: &mut BTreeMap<String, Value>|
     -> Result<bool, StoreError> {
        if Instant::now() > deadline {
            return Err(StoreError::LimitExceeded(
                "the query ran past its time budget; add an index or narrow the filter".into(),
            ));
        }
        let doc: Value = serde_json::from_str(&body).map_err(unavailable)?;
        if filter.matches(&doc) {
            found.insert(id, doc);
        }
        Ok(stop_after.is_some_and(|n| found.len() >= n))
    };
    if let Some(ids) = id_lookup(filter) {
        let mut stmt = conn
            .prepare_cached("SELECT id, body FROM documents WHERE collection = ?1 AND id = ?2")
            .map_err(unavailable)?;
        for id in ids {
            let row = stmt
                .query_row(params![coll, id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(unavailable)?;
            if let Some((id, body)) = row
                && check(id, body, &mut found)?
            {
                break;
            }
        }
        return Ok(found.into_iter().collect());
    }
    match plan(filter, indexes) {
        Some((index, ranges)) => {
            let mut stmt = conn.prepare_cached(RANGE_SQL).map_err(unavailable)?;
            for (start, end) in ranges {
                let mut rows = stmt
                    .query(params![coll, index, start, end])
                    .map_err(unavailable)?;
                while let Some(row) = rows.next().map_err(unavailable)? {
                    if check(
                        row.get(0).map_err(unavailable)?,
                        row.get(1).map_err(unavailable)?,
                        &mut found,
                    )? {
                        break;
                    }
                }
            }
        }
        None => {
            let mut stmt = conn.prepare_cached(SCAN_SQL).map_err(unavailable)?;
            let mut rows = stmt.query([coll]).map_err(unavailable)?;
            while let Some(row) = rows.next().map_err(unavailable)? {
                if check(
                    row.get(0).map_err(unavailable)?,
                    row.get(1).map_err(unavailable)?,
                    &mut found,
                )? {
                    break;
                }
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// Writes a document and its index keys, refusing a unique-key clash.
fn write(
    conn: &Connection,
    coll: &str,
    indexes: &[IndexSpec],
    id: &str,
    doc: &Value,
) -> Result<(), StoreError> {
    execute(
        conn,
        "DELETE FROM index_entries WHERE collection = ?1 AND id = ?2",
        params![coll, id],
    )?;
    for index in indexes {
        for key in index_keys(doc, &index.paths) {
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
    }
    execute(
        conn,
        "INSERT INTO documents (collection, id, body) VALUES (?1, ?2, ?3)
         ON CONFLICT (collection, id) DO UPDATE SET body = excluded.body",
        params![coll, id, doc.to_string()],
    )?;
    Ok(())
}

/// A write transaction: it takes the database's write lock at once, so it
/// never fails half-way for want of it.
fn begin(conn: &mut Connection) -> Result<rusqlite::Transaction<'_>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)
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
) -> Result<String, StoreError> {
    let id = id_of(doc);
    if exists(conn, coll, &id)? {
        return Err(StoreError::Conflict(format!(
            "a document with _id `{id}` exists"
        )));
    }
    write(conn, coll, indexes, &id, doc)?;
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
fn upserted(filter: &Filter, change: &Change) -> Result<Value, StoreError> {
    let mut doc = Value::Object(Default::default());
    for (path, value) in filter.equalities() {
        set(&mut doc, path, value.clone())?;
    }
    change.update.apply(&mut doc, true, now_millis())?;
    if doc.get("_id").is_none() {
        set(&mut doc, "_id", Value::from(new_id()))?;
    }
    super::query::check_document(&doc)?;
    Ok(doc)
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
    deadline: Instant,
) -> Result<(UpdateOutcome, Option<(Value, Value)>), StoreError> {
    let indexes = db.indexes_of(coll)?;
    let tx = begin(&mut db.conn)?;
    let matches = matching(
        &tx,
        coll,
        &query.filter,
        &indexes,
        deadline,
        (!multi).then_some(1),
    )?;
    let mut outcome = UpdateOutcome::default();
    let mut first = None;
    if matches.is_empty() && upsert {
        let doc = upserted(&query.filter, change)?;
        outcome.upserted_id = Some(insert_new(&tx, coll, &indexes, &doc)?);
        first = Some((Value::Null, doc));
    }
    let now = now_millis();
    for (id, mut doc) in matches {
        let before = doc.clone();
        outcome.matched += 1;
        if change.update.apply(&mut doc, false, now)? {
            super::query::check_document(&doc)?;
            write(&tx, coll, &indexes, &id, &doc)?;
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
        self.run(ns, move |db, coll, _| {
            let indexes = db.indexes_of(coll)?;
            let tx = begin(&mut db.conn)?;
            for doc in &docs {
                insert_new(&tx, coll, &indexes, doc)?;
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
        self.run(ns, move |db, coll, deadline| {
            let indexes = db.indexes_of(coll)?;
            // Without a sort, results come in `_id` order and reading can stop early.
            let stop = match (&sort, limit) {
                (None, Some(l)) => Some(skip.saturating_add(l)),
                _ => None,
            };
            let mut docs: Vec<Value> = matching(&db.conn, coll, &filter, &indexes, deadline, stop)?
                .into_iter()
                .map(|(_, d)| d)
                .collect();
            if let Some(sort) = &sort {
                docs.sort_by(|a, b| sort.compare(a, b));
            }
            Ok(docs
                .into_iter()
                .skip(skip)
                .take(limit.unwrap_or(usize::MAX))
                .collect())
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
        self.run(ns, move |db, coll, deadline| {
            update_in(db, coll, &query, &change, upsert, multi, deadline).map(|(o, _)| o)
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
        self.run(ns, move |db, coll, deadline| {
            let indexes = db.indexes_of(coll)?;
            let tx = begin(&mut db.conn)?;
            let found = matching(&tx, coll, &query.filter, &indexes, deadline, Some(1))?;
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
                    set(&mut doc, "_id", Value::from(id.clone()))?;
                    outcome.matched = 1;
                    if doc != old {
                        write(&tx, coll, &indexes, &id, &doc)?;
                        outcome.modified = 1;
                    }
                }
                None if upsert => {
                    if doc.get("_id").is_none() {
                        set(&mut doc, "_id", Value::from(new_id()))?;
                    }
                    outcome.upserted_id = Some(insert_new(&tx, coll, &indexes, &doc)?);
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
        self.run(ns, move |db, coll, deadline| {
            let (_, first) = update_in(db, coll, &query, &change, upsert, false, deadline)?;
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
        self.run(ns, move |db, coll, deadline| {
            let indexes = db.indexes_of(coll)?;
            let tx = begin(&mut db.conn)?;
            let found = matching(
                &tx,
                coll,
                &filter,
                &indexes,
                deadline,
                (!multi).then_some(1),
            )?;
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
        self.run(ns, move |db, coll, deadline| {
            let indexes = db.indexes_of(coll)?;
            Ok(matching(&db.conn, coll, &filter, &indexes, deadline, None)?.len() as u64)
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
        self.run(ns, move |db, coll, _| {
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
            let docs = {
                let mut stmt = tx.prepare(SCAN_SQL).map_err(unavailable)?;
                stmt.query_map([coll], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?
            };
            let mut all = existing.as_ref().clone();
            all.push(spec);
            for (id, body) in docs {
                let doc: Value = serde_json::from_str(&body).map_err(unavailable)?;
                write(&tx, coll, &all, &id, &doc)?;
            }
            tx.commit().map_err(unavailable)?;
            db.indexes.insert(coll.to_string(), Arc::new(all));
            Ok(())
        })
        .await
    }

    async fn drop_collection(&self, ns: Namespace<'_>) -> Result<(), StoreError> {
        self.run(ns, move |db, coll, _| {
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
