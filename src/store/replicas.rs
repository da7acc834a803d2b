//! Read replicas (PostgreSQL hot standbys, `ICM_READ_DATABASE_URL`): reads and searches that
//! do not need to see a write of their own go to a standby that is fresh enough; everything
//! else stays on the primary.
//!
//! A background thread samples the primary's WAL position (`pg_current_wal_lsn()`) and each
//! standby's replay position (`pg_last_wal_replay_lsn()`) every [`POLL`]. A standby serves a
//! read when it is reachable, has replayed everything the primary had written `max_lag` ago, and
//! — for a caller that wrote recently — has replayed that caller's last write (read your
//! writes). Anything else, or any failure to get a standby connection, reads from the primary.
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use diesel::r2d2::{Pool, PooledConnection};

use super::backend::{DbConn, DbTarget, Manager};
use crate::store::sql::{load, Sql};

/// How often positions are sampled.
const POLL: Duration = Duration::from_millis(100);

struct Replica {
    /// The URL without credentials, for logs.
    name: String,
    pool: Pool<Manager>,
    replayed: AtomicU64,
    usable: AtomicBool,
}

/// Where reads went, for /metrics.
#[derive(Default)]
pub struct ReadCounts {
    pub replica: AtomicU64,
    pub primary: AtomicU64,
}

pub struct Replicas {
    list: Vec<Replica>,
    max_lag: Duration,
    /// Recent (time, primary WAL position) samples, oldest first.
    primary: Mutex<VecDeque<(Instant, u64)>>,
    /// Caller key → WAL position of its last write, until every standby has replayed it.
    writers: Mutex<HashMap<String, u64>>,
    next: AtomicUsize,
    pub counts: ReadCounts,
}

#[derive(diesel::QueryableByName)]
struct Lsn {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    lsn: Option<String>,
}

/// `16/B374D848` → a comparable number.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

fn position(conn: &mut DbConn, function: &str) -> Option<u64> {
    let mut q = Sql::new();
    q.push(&format!("SELECT {function}()::text AS lsn"));
    let rows: Vec<Lsn> = load(conn, &q).ok()?;
    rows.into_iter().next()?.lsn.as_deref().and_then(parse_lsn)
}

fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl Replicas {
    /// Pools for the standbys at `urls` (PostgreSQL only) and the sampling thread, which
    /// stops when the returned value is dropped.
    pub fn start(
        primary: Pool<Manager>,
        urls: &[String],
        pool_size: u32,
        max_lag: Duration,
    ) -> Result<Arc<Replicas>, String> {
        let mut list = Vec::new();
        for url in urls {
            let target = DbTarget::parse(url)?;
            if !matches!(target, DbTarget::Postgres(_)) {
                return Err(format!(
                    "read replica '{}' is not a PostgreSQL URL",
                    redacted(url)
                ));
            }
            let pool = Pool::builder()
                .max_size(pool_size.max(1))
                .min_idle(Some(0))
                .connection_timeout(Duration::from_millis(500))
                .build_unchecked(Manager::new(target));
            list.push(Replica {
                name: redacted(url),
                pool,
                replayed: AtomicU64::new(0),
                usable: AtomicBool::new(false),
            });
        }
        let r = Arc::new(Replicas {
            list,
            max_lag,
            primary: Mutex::new(VecDeque::new()),
            writers: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            counts: ReadCounts::default(),
        });
        let weak = Arc::downgrade(&r);
        std::thread::Builder::new()
            .name("icm-replicas".into())
            .spawn(move || sample_loop(weak, primary))
            .map_err(|e| format!("cannot start the replica monitor: {e}"))?;
        Ok(r)
    }

    /// The primary position a fresh standby must have replayed: what the primary had written
    /// `max_lag` ago (the oldest sample while the monitor has not run that long).
    fn floor(&self) -> Option<u64> {
        let samples = self.primary.lock().unwrap_or_else(|p| p.into_inner());
        let cutoff = Instant::now().checked_sub(self.max_lag)?;
        samples
            .iter()
            .rev()
            .find(|(t, _)| *t <= cutoff)
            .or_else(|| samples.front())
            .map(|(_, l)| *l)
    }

    fn sample(&self, primary: &Pool<Manager>) {
        let now = Instant::now();
        if let Some(l) = primary
            .get()
            .ok()
            .and_then(|mut c| position(&mut c, "pg_current_wal_lsn"))
        {
            let mut s = self.primary.lock().unwrap_or_else(|p| p.into_inner());
            s.push_back((now, l));
            let keep = self.max_lag * 2 + POLL * 4;
            while s
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > keep)
            {
                s.pop_front();
            }
        }
        let floor = self.floor();
        for r in &self.list {
            let replayed = r
                .pool
                .get()
                .ok()
                .and_then(|mut c| position(&mut c, "pg_last_wal_replay_lsn"));
            let usable = match (replayed, floor) {
                (Some(l), Some(f)) => {
                    r.replayed.store(l, Ordering::Release);
                    l >= f
                }
                _ => false,
            };
            if usable != r.usable.swap(usable, Ordering::AcqRel) {
                if usable {
                    log::info!("read replica {} is serving reads", r.name);
                } else {
                    log::warn!(
                        "read replica {} is unreachable or lags more than {:?}: reads go to the primary",
                        r.name,
                        self.max_lag
                    );
                }
            }
        }
        // Forget writes every standby has replayed.
        let slowest = self
            .list
            .iter()
            .map(|r| r.replayed.load(Ordering::Acquire))
            .min()
            .unwrap_or(0);
        self.writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, l| *l > slowest);
    }

    /// Remember that `writer` just committed on the primary (its position now).
    pub fn note_write(&self, writer: &str, primary: &mut DbConn) {
        if let Some(l) = position(primary, "pg_current_wal_lsn") {
            self.writers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(writer.to_string(), l);
        }
    }

    /// A standby connection for a read by `reader`, or None (read from the primary).
    pub fn conn(&self, reader: &str) -> Option<PooledConnection<Manager>> {
        let must = self
            .writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(reader)
            .copied()
            .unwrap_or(0);
        let n = self.list.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let r = &self.list[(start + k) % n];
            if r.usable.load(Ordering::Acquire) && r.replayed.load(Ordering::Acquire) >= must {
                if let Ok(c) = r.pool.get() {
                    self.counts.replica.fetch_add(1, Ordering::Relaxed);
                    return Some(c);
                }
                r.usable.store(false, Ordering::Release);
            }
        }
        self.counts.primary.fetch_add(1, Ordering::Relaxed);
        None
    }
}

fn sample_loop(weak: Weak<Replicas>, primary: Pool<Manager>) {
    loop {
        match weak.upgrade() {
            Some(r) => r.sample(&primary),
            None => return,
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_order() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert!(parse_lsn("16/B374D848").unwrap() > parse_lsn("15/FFFFFFFF").unwrap());
        assert!(parse_lsn("0/3000060").unwrap() > parse_lsn("0/2FFFFFF").unwrap());
        assert_eq!(parse_lsn("nonsense"), None);
        assert_eq!(
            redacted("postgres://u:secret@h:5433/db"),
            "postgres://…@h:5433/db"
        );
    }
}
