//! A redb database that can fail and come back: both services keep theirs
//! in a [`RedbCell`]. After an I/O error (a full disk) redb refuses every
//! further transaction until the file is closed and reopened, so the cell
//! closes it (once the last reader lets go), reports the store down, and
//! reopens it when asked, once the file system has [`RECOVERY_HEADROOM`] free
//! (as Bitcoin Core refuses to run below a free-space floor) and a probe write
//! proves that commits work again. Without the headroom rule a store on a full
//! disk flaps: a tiny probe fits in pages redb freed, the store reports SERVING,
//! and the next real write fails again.
//! Nothing acknowledged is lost: a failed commit applied nothing, and redb
//! reopens to the last committed state.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use redb::{Database, TableDefinition};
use tokio::sync::watch;

/// A one-row table each recovery writes to, proving commits work again.
const PROBE: TableDefinition<&str, u64> = TableDefinition::new("storage_probe");

/// Free space the file system must have before a failed store is reopened.
pub const RECOVERY_HEADROOM: u64 = 16 * 1024 * 1024;

/// The database of one service, or none while it is being reopened.
#[derive(Debug)]
pub struct RedbCell {
    what: &'static str,
    path: PathBuf,
    db: RwLock<Option<Arc<Database>>>,
    healthy: watch::Sender<bool>,
}

impl RedbCell {
    /// `what` names the store in logs ("registry", "chain").
    pub fn new(what: &'static str, path: &Path, db: Database) -> Self {
        RedbCell {
            what,
            path: path.to_path_buf(),
            db: RwLock::new(Some(Arc::new(db))),
            healthy: watch::Sender::new(true),
        }
    }

    /// The open database; None while the store is down.
    pub fn get(&self) -> Option<Arc<Database>> {
        self.db.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_healthy(&self) -> bool {
        *self.healthy.borrow()
    }

    /// True while the store serves; what grpc.health follows.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.healthy.subscribe()
    }

    /// Marks the store down after `cause` and lets go of the database so
    /// it can be reopened.
    pub fn fail(&self, cause: &dyn std::fmt::Display) {
        if self.is_healthy() {
            tracing::error!(store = self.what, error = %cause, path = %self.path.display(), "storage failed; NOT_SERVING until it can be reopened");
        }
        self.healthy.send_replace(false);
        self.db.write().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Reopens the file and commits a probe write; true when the store is back.
    pub fn try_recover(&self) -> bool {
        if self.is_healthy() {
            return true;
        }
        match free_bytes(&self.path) {
            Some(free) if free < RECOVERY_HEADROOM => {
                tracing::debug!(store = self.what, free, need = RECOVERY_HEADROOM, "storage still short of space");
                return false;
            }
            _ => {}
        }
        let reopened = match Database::create(&self.path) {
            Ok(db) => db,
            Err(e) => {
                tracing::debug!(store = self.what, error = %e, "storage still failing");
                return false;
            }
        };
        if let Err(e) = probe(&reopened) {
            tracing::debug!(store = self.what, error = %e, "storage reopened but cannot commit yet");
            return false;
        }
        *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(reopened));
        self.healthy.send_replace(true);
        tracing::info!(store = self.what, path = %self.path.display(), "storage recovered; SERVING");
        true
    }
}

/// Bytes an unprivileged writer may still use on the file system holding
/// `path`; None where that cannot be read (then only the probe decides).
fn free_bytes(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let st = nix::sys::statvfs::statvfs(dir).ok()?;
        #[allow(clippy::useless_conversion)] // the field widths differ between platforms
        Some(u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size())))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

fn probe(db: &Database) -> Result<(), Box<redb::Error>> {
    let mut tx = db.begin_write().map_err(|e| Box::new(e.into()))?;
    tx.set_quick_repair(true);
    {
        let mut table = tx.open_table(PROBE).map_err(|e| Box::new(e.into()))?;
        table.insert("last", crate::unix_ms_now()).map_err(|e| Box::new(e.into()))?;
    }
    tx.commit().map_err(|e| Box::new(e.into()))?;
    Ok(())
}
