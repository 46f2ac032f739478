//! A snapshot file as a plan's source (`source: { snapshot: FILE }`): a
//! bbolt file from `etcdctl snapshot save` (or an etcd data dir's
//! `member/snap/db`), read without etcd. The file is opened read-only,
//! never written, and refused while a running etcd holds it; the sha256
//! that `snapshot save` appends is checked first. Its keyspace at the
//! chosen revision is sorted out of core ([`index`]) and served, read-only,
//! to the rest of etcdplan over loopback gRPC ([`serve`]), so that plan,
//! apply and their checks read a snapshot exactly as they read a cluster.

mod bolt;
pub mod index;
pub mod serve;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use miette::Diagnostic;
use sha2::{Digest, Sha256};

use bolt::{Bolt, BoltError, BucketRoot};
use index::{Index, parse_revision};

/// What `check` reports of a snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub path: PathBuf,
    pub size: u64,
    /// Whether the appended sha256 is there (it is checked before the
    /// keyspace is handed on, and a mismatch refuses the file). A bare db
    /// file has none.
    pub hash_verified: bool,
    /// The newest revision in the file.
    pub revision: i64,
    /// The compaction point: no earlier revision can be read.
    pub compacted: i64,
    /// A cluster id for messages and saved plans: the file's own, since a
    /// snapshot does not record its cluster's (the first 8 bytes of its sha256).
    pub id: u64,
}

/// Why a snapshot cannot be read.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum SnapshotError {
    #[error("the snapshot {} is not a regular file", crate::escape::text(&path.display().to_string()))]
    #[diagnostic(
        code(etcdplan::snapshot::not_a_file),
        help("name the file `etcdctl snapshot save` wrote (a folder or device is not one)")
    )]
    NotAFile { path: PathBuf },

    #[error("the snapshot {} cannot be opened: {why}", crate::escape::text(&path.display().to_string()))]
    #[diagnostic(
        code(etcdplan::snapshot::unreadable),
        help("check the path (relative to the plan file's folder) and that this user may read it")
    )]
    Unreadable { path: PathBuf, why: String },

    #[error("the snapshot {} is held open by a running etcd", crate::escape::text(&path.display().to_string()))]
    #[diagnostic(
        code(etcdplan::snapshot::in_use),
        help(
            "a live data dir is still changing: take a copy with `etcdctl snapshot save FILE` and plan from that, or stop that etcd first"
        )
    )]
    InUse { path: PathBuf },

    #[error("the snapshot {} fails its integrity check: the sha256 at its end does not match its content", crate::escape::text(&path.display().to_string()))]
    #[diagnostic(
        code(etcdplan::snapshot::hash_mismatch),
        help(
            "the file was damaged or cut short after `etcdctl snapshot save` wrote it: use another copy of the backup"
        )
    )]
    HashMismatch { path: PathBuf },

    #[error("the snapshot {} cannot be read: {why}", crate::escape::text(&path.display().to_string()))]
    #[diagnostic(
        code(etcdplan::snapshot::damaged),
        help(
            "use a file written by `etcdctl snapshot save` (or an etcd data dir's member/snap/db), whole and undamaged"
        )
    )]
    Damaged { path: PathBuf, why: BoltError },

    #[error("the snapshot {} holds revisions {compacted} to {latest}; revision {asked} is not among them", crate::escape::text(&path.display().to_string()))]
    #[diagnostic(
        code(etcdplan::snapshot::revision),
        help(
            "pick a `revision:` at or after the compaction point and at or before the newest revision, or leave it out for the newest"
        )
    )]
    Revision {
        path: PathBuf,
        asked: i64,
        compacted: i64,
        latest: i64,
    },
}

type HashCheck = std::thread::JoinHandle<Result<bool, SnapshotError>>;

/// An open, checked snapshot file.
pub struct Snapshot {
    bolt: Bolt,
    keys: BucketRoot,
    pub facts: Facts,
    /// Each lease's granted TTL, by id.
    pub lease_ttls: BTreeMap<i64, i64>,
    /// The appended sha256, checked on its own thread while the keys are
    /// read; [`Snapshot::index`] waits for it before handing anything on.
    hash: std::sync::Mutex<Option<HashCheck>>,
}

/// Waits for the hash check: its mismatch wins over any later error, which
/// a damaged file explains.
fn hash_result(check: &std::sync::Mutex<Option<HashCheck>>) -> Result<(), SnapshotError> {
    let handle = check.lock().ok().and_then(|mut h| h.take());
    match handle.map(std::thread::JoinHandle::join) {
        None | Some(Ok(Ok(_))) => Ok(()),
        Some(Ok(Err(e))) => Err(e),
        Some(Err(_)) => Err(SnapshotError::Unreadable {
            path: PathBuf::new(),
            why: "the hash check stopped".into(),
        }),
    }
}

impl Snapshot {
    /// Opens and checks `path`: a regular file, not held by an etcd, its
    /// appended sha256 right, its pages readable.
    pub fn open(path: &Path) -> Result<Snapshot, SnapshotError> {
        let p = || path.to_path_buf();
        let meta = std::fs::metadata(path).map_err(|e| SnapshotError::Unreadable {
            path: p(),
            why: e.to_string(),
        })?;
        if !meta.is_file() {
            return Err(SnapshotError::NotAFile { path: p() });
        }
        let file = File::open(path).map_err(|e| SnapshotError::Unreadable {
            path: p(),
            why: e.to_string(),
        })?;
        // etcd holds its backend under an exclusive lock.
        if let Err(std::fs::TryLockError::WouldBlock) = file.try_lock_shared() {
            return Err(SnapshotError::InUse { path: p() });
        }
        let size = meta.len();
        let hash_verified = size % 512 == 32;
        let hashing = file.try_clone().map_err(|e| SnapshotError::Unreadable {
            path: p(),
            why: e.to_string(),
        })?;
        let hashed_path = p();
        let hash = std::sync::Mutex::new(Some(std::thread::spawn(move || {
            verify_hash(&hashing, size, &hashed_path)
        })));
        let len = if hash_verified { size - 32 } else { size };
        let id = id_of(&id_source(&file, path, size, hash_verified)?);
        let checked = || -> Result<_, BoltError> {
            let bolt = Bolt::open(file, len)?;
            let keys = bolt.bucket("key")?;
            let revision = match bolt.last_key(&keys)? {
                Some(k) => parse_revision(&k)?.0,
                None => 0,
            };
            let compacted = compaction_point(&bolt)?;
            let lease_ttls = leases(&bolt)?;
            Ok((bolt, keys, revision, compacted, lease_ttls))
        };
        let (bolt, keys, revision, compacted, lease_ttls) = match checked() {
            Ok(c) => c,
            Err(why) => {
                hash_result(&hash)?;
                return Err(SnapshotError::Damaged { path: p(), why });
            }
        };

        Ok(Snapshot {
            bolt,
            keys,
            facts: Facts {
                path: p(),
                size,
                hash_verified,
                revision,
                compacted,
                id,
            },
            lease_ttls,
            hash,
        })
    }

    /// The keyspace at `revision` (the newest when `None`), keeping only
    /// keys `keep` accepts.
    pub fn index(
        &self,
        revision: Option<i64>,
        keep: &dyn Fn(&[u8]) -> bool,
    ) -> Result<(i64, Index), SnapshotError> {
        let f = &self.facts;
        let at = revision.unwrap_or(f.revision);
        if at < f.compacted.max(1) || at > f.revision {
            return Err(SnapshotError::Revision {
                path: f.path.clone(),
                asked: at,
                compacted: f.compacted,
                latest: f.revision,
            });
        }
        let built = Index::build(&self.bolt, &self.keys, at, keep);
        hash_result(&self.hash)?;
        let index = built.map_err(|why| SnapshotError::Damaged {
            path: f.path.clone(),
            why,
        })?;
        Ok((at, index))
    }
}

/// Checks the sha256 `etcdctl snapshot save` appends, when there is one:
/// as `etcdutl snapshot status` decides, a file whose size is 32 bytes past
/// a multiple of 512 carries it.
fn verify_hash(file: &File, size: u64, path: &Path) -> Result<bool, SnapshotError> {
    use std::io::{Read, Seek};
    if size % 512 != 32 {
        return Ok(false);
    }
    let unreadable = |e: std::io::Error| SnapshotError::Unreadable {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    let mut f = file.try_clone().map_err(unreadable)?;
    f.rewind().map_err(unreadable)?;
    let mut hasher = Sha256::new();
    let mut left = size - 32;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..n]).map_err(unreadable)?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let mut stored = [0u8; 32];
    f.read_exact(&mut stored).map_err(unreadable)?;
    if hasher.finalize().as_slice() != stored {
        return Err(SnapshotError::HashMismatch {
            path: path.to_path_buf(),
        });
    }
    Ok(true)
}

/// The bytes an id is derived from: the appended hash, read from the open
/// file, or the file's size and path when there is none (a bare db file).
fn id_source(file: &File, path: &Path, size: u64, hashed: bool) -> Result<Vec<u8>, SnapshotError> {
    use std::os::unix::fs::FileExt as _;
    if !hashed {
        return Ok(format!("{}:{size}", path.display()).into_bytes());
    }
    let mut stored = vec![0u8; 32];
    file.read_exact_at(&mut stored, size - 32)
        .map_err(|e| SnapshotError::Unreadable {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    Ok(stored)
}

fn id_of(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(id)
}

/// The `meta` bucket's finished compaction, 0 when there was none.
fn compaction_point(bolt: &Bolt) -> Result<i64, BoltError> {
    let meta = match bolt.bucket("meta") {
        Ok(m) => m,
        Err(BoltError::NoBucket(_)) => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut found = 0;
    bolt.walk(&meta, &mut |k, v, _| {
        if k == b"finishedCompactRev" {
            found = parse_revision(v)?.0;
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok(found)
}

/// Each lease's id and granted TTL, from the `lease` bucket (leasepb.Lease:
/// ID = 1, TTL = 2).
fn leases(bolt: &Bolt) -> Result<BTreeMap<i64, i64>, BoltError> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Lease {
        #[prost(int64, tag = "1")]
        id: i64,
        #[prost(int64, tag = "2")]
        ttl: i64,
    }
    use prost::Message as _;
    let mut out = BTreeMap::new();
    let bucket = match bolt.bucket("lease") {
        Ok(b) => b,
        Err(BoltError::NoBucket(_)) => return Ok(out),
        Err(e) => return Err(e),
    };
    bolt.walk(&bucket, &mut |_, v, _| {
        let lease = Lease::decode(v)
            .map_err(|e| BoltError::Corrupt(format!("a lease record is not one: {e}")))?;
        out.insert(lease.id, lease.ttl);
        Ok(true)
    })?;
    Ok(out)
}
