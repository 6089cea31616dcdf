//! The table definitions a database plugin has read, shared by every session of one
//! database instance, and the names it recently found to name no table. What a
//! definition holds, and how it is read, is the plugin's own: this only keeps them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// How long a table found missing is taken to be missing without asking the server
/// again: long enough that a stream of messages for it costs a query now and then rather
/// than one each, short enough that a table created meanwhile is soon written to.
pub const MISSING_FOR: Duration = Duration::from_secs(2);

/// The most names remembered as missing; past it, expired ones are dropped, and if none
/// has expired, all of them (messages naming ever new tables must not grow it).
const MAX_MISSING: usize = 1024;

/// The tables read so far, keyed by the name operations use; and the names recently
/// found to name no table.
#[derive(Debug)]
pub struct Catalog<T> {
    tables: Mutex<HashMap<String, Arc<T>>>,
    missing: Mutex<HashMap<String, Instant>>,
}

impl<T> Default for Catalog<T> {
    fn default() -> Self {
        Catalog {
            tables: Mutex::default(),
            missing: Mutex::default(),
        }
    }
}

impl<T> Catalog<T> {
    /// The definition of `name`, if read.
    pub fn get(&self, name: &str) -> Option<Arc<T>> {
        lock(&self.tables).get(name).cloned()
    }

    /// Keeps the definition of `name`, which is then no longer missing.
    pub fn insert(&self, name: &str, table: Arc<T>) {
        lock(&self.missing).remove(name);
        lock(&self.tables).insert(name.to_string(), table);
    }

    /// Whether `name` was found missing less than [`MISSING_FOR`] ago.
    pub fn is_missing(&self, name: &str) -> bool {
        lock(&self.missing)
            .get(name)
            .is_some_and(|at| at.elapsed() < MISSING_FOR)
    }

    /// Remembers that `name` names no table, for [`MISSING_FOR`].
    pub fn insert_missing(&self, name: &str) {
        let mut missing = lock(&self.missing);
        if missing.len() >= MAX_MISSING {
            missing.retain(|_, at| at.elapsed() < MISSING_FOR);
            if missing.len() >= MAX_MISSING {
                missing.clear();
            }
        }
        missing.insert(name.to_string(), Instant::now());
    }

    /// Forgets `names`, so they are read again: their definition changed under us.
    pub fn forget<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut tables = lock(&self.tables);
        let mut missing = lock(&self.missing);
        for name in names {
            tables.remove(name);
            missing.remove(name);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_kept_until_forgotten_and_missing_ones_expire() {
        let catalog = Catalog::default();
        catalog.insert_missing("t");
        assert!(catalog.is_missing("t"));
        catalog.insert("t", Arc::new(7));
        assert!(!catalog.is_missing("t"));
        assert_eq!(catalog.get("t").as_deref(), Some(&7));
        catalog.forget(["t"]);
        assert_eq!(catalog.get("t"), None);

        catalog.insert_missing("gone");
        let long_ago = Instant::now()
            .checked_sub(MISSING_FOR)
            .expect("a clock older than that");
        lock(&catalog.missing).insert("gone".into(), long_ago);
        assert!(!catalog.is_missing("gone"));
    }

    #[test]
    fn the_missing_names_are_bounded() {
        let catalog: Catalog<()> = Catalog::default();
        for n in 0..MAX_MISSING {
            catalog.insert_missing(&n.to_string());
        }
        // None has expired: all are dropped for the new one.
        catalog.insert_missing("new");
        assert_eq!(lock(&catalog.missing).len(), 1);
        assert!(catalog.is_missing("new"));
        assert!(!catalog.is_missing("0"));
    }
}
