//! Spill files: an append-only sequence of records on disk, streamed back
//! as often as needed. A plan's changes live here, so memory never grows
//! with their number: the diff appends, the renderers, the saved plan and
//! the writers each stream them back in order.
//!
//! Records are length-prefixed postcard. The file is anonymous: unlinked as
//! it is created (`tempfile::tempfile`), so no kill, not even SIGKILL, leaves
//! it behind, and no other process can open it by name. Readers share the
//! one descriptor and read at their own offsets (`pread`). It never holds a
//! sensitive value: changes carry hashes, and display values only for keys
//! that are not sensitive.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Records this large are a corrupt file, not a record.
const MAX_RECORD_BYTES: usize = 64 << 20;

/// Appends records; [`SpoolWriter::finish`] seals it into a [`Spool`].
pub struct SpoolWriter<T> {
    out: Option<(BufWriter<File>, Arc<File>)>,
    len: u64,
    /// Bytes written so far: the offset the next record starts at.
    offset: u64,
    scratch: Vec<u8>,
    _t: PhantomData<fn(T)>,
}

impl<T: Serialize> SpoolWriter<T> {
    /// A writer whose file is created on the first record.
    pub fn new() -> SpoolWriter<T> {
        SpoolWriter {
            out: None,
            len: 0,
            offset: 0,
            scratch: Vec::new(),
            _t: PhantomData,
        }
    }

    pub fn push(&mut self, record: &T) -> std::io::Result<()> {
        if self.out.is_none() {
            let file = tempfile::tempfile()?;
            let reader = Arc::new(file.try_clone()?);
            self.out = Some((BufWriter::with_capacity(256 << 10, file), reader));
        }
        self.scratch.clear();
        let bytes = postcard::to_extend(record, std::mem::take(&mut self.scratch))
            .map_err(std::io::Error::other)?;
        let Some((out, _)) = self.out.as_mut() else {
            return Err(std::io::Error::other("spool file missing"));
        };
        out.write_all(&(bytes.len() as u32).to_le_bytes())?;
        out.write_all(&bytes)?;
        self.offset += 4 + bytes.len() as u64;
        self.scratch = bytes;
        self.len += 1;
        Ok(())
    }

    /// Where the next record starts, for [`Spool::try_iter_at`].
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Flushes what was pushed so far and returns a reader of the same file
    /// (`None` before the first record), so that records can be read while
    /// more are written: a reader reads by offset and count, never past
    /// what was flushed when it was told of it.
    pub fn flushed(&mut self) -> std::io::Result<Option<Spool<T>>> {
        let Some((out, file)) = self.out.as_mut() else {
            return Ok(None);
        };
        out.flush()?;
        Ok(Some(Spool::over(Some(file.clone()), self.len)))
    }

    /// Flushes and seals the file for reading.
    pub fn finish(self) -> std::io::Result<Spool<T>> {
        let path = match self.out {
            None => None,
            Some((mut out, file)) => {
                out.flush()?;
                Some(file)
            }
        };
        Ok(Spool::over(path, self.len))
    }
}

impl<T: Serialize> Default for SpoolWriter<T> {
    fn default() -> Self {
        Self::new()
    }
}

struct Inner {
    path: Option<Arc<File>>,
    len: u64,
    /// Set when a read failed: the lossy iterator ended early.
    broken: AtomicBool,
}

/// A sealed sequence of records, cheap to clone and to stream back.
pub struct Spool<T> {
    inner: Arc<Inner>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Spool<T> {
    /// The first `len` records of `path` (none without a file).
    fn over(path: Option<Arc<File>>, len: u64) -> Spool<T> {
        Spool {
            inner: Arc::new(Inner {
                path,
                len,
                broken: AtomicBool::new(false),
            }),
            _t: PhantomData,
        }
    }
}

impl<T> Clone for Spool<T> {
    fn clone(&self) -> Self {
        Spool {
            inner: self.inner.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Spool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spool({} records)", self.inner.len)
    }
}

impl<T: Serialize + DeserializeOwned> Default for Spool<T> {
    fn default() -> Self {
        Spool::empty()
    }
}

impl<T: Serialize + DeserializeOwned> Spool<T> {
    pub fn empty() -> Spool<T> {
        Spool::over(None, 0)
    }

    /// A spool of the given records (small sets, tests).
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a T>) -> std::io::Result<Spool<T>>
    where
        T: 'a,
    {
        let mut w = SpoolWriter::new();
        for r in records {
            w.push(r)?;
        }
        w.finish()
    }

    pub fn len(&self) -> u64 {
        self.inner.len
    }

    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// Streams the records back, in the order they were pushed.
    pub fn try_iter(&self) -> impl Iterator<Item = std::io::Result<T>> + use<T> {
        self.try_iter_at(0, self.inner.len, 256 << 10)
    }

    /// Streams at most `count` records from the one that starts at `offset`
    /// (an [`SpoolWriter::offset`] taken while writing), through a buffer
    /// of `buffer` bytes.
    pub fn try_iter_at(
        &self,
        offset: u64,
        count: u64,
        buffer: usize,
    ) -> impl Iterator<Item = std::io::Result<T>> + use<T> {
        let reader = self.inner.path.as_ref().map(|f| {
            BufReader::with_capacity(
                buffer,
                At {
                    file: f.clone(),
                    offset,
                },
            )
        });
        let mut state = match reader {
            None => Reading::Done,
            Some(r) => Reading::Open(r, count),
        };
        std::iter::from_fn(move || state.next())
    }

    /// [`Spool::try_iter`] for displays: a read error ends the stream, is
    /// logged, and is reported by [`Spool::check`] afterwards.
    pub fn iter(&self) -> impl Iterator<Item = T> + use<T> {
        let inner = self.inner.clone();
        self.try_iter().map_while(move |r| match r {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!("reading the spilled plan back failed: {e}");
                inner.broken.store(true, Ordering::SeqCst);
                None
            }
        })
    }

    /// Fails when an [`Spool::iter`] ended early on a read error.
    pub fn check(&self) -> std::io::Result<()> {
        if self.inner.broken.load(Ordering::SeqCst) {
            return Err(std::io::Error::other(
                "reading the plan's spill file back failed (see the log above)",
            ));
        }
        Ok(())
    }
}

/// One reader's position in the shared anonymous file.
struct At {
    file: Arc<File>,
    offset: u64,
}

impl Read for At {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt as _;
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

enum Reading {
    Open(BufReader<At>, u64),
    Done,
}

impl Reading {
    fn next<T: DeserializeOwned>(&mut self) -> Option<std::io::Result<T>> {
        match self {
            Reading::Done => None,
            Reading::Open(r, left) => {
                if *left == 0 {
                    *self = Reading::Done;
                    return None;
                }
                *left -= 1;
                let result = read_record(r);
                if result.is_err() {
                    *self = Reading::Done;
                }
                Some(result)
            }
        }
    }
}

fn read_record<T: DeserializeOwned>(r: &mut impl Read) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_RECORD_BYTES {
        return Err(std::io::Error::other("corrupt spill file record"));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    postcard::from_bytes(&buf).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_back_in_order_as_often_as_asked() {
        let mut w = SpoolWriter::new();
        for i in 0..10_000u32 {
            w.push(&(i, vec![i as u8; (i % 7) as usize])).expect("push");
        }
        let spool: Spool<(u32, Vec<u8>)> = w.finish().expect("finish");
        assert_eq!(spool.len(), 10_000);
        for _ in 0..2 {
            let back: Vec<_> = spool.iter().collect();
            assert_eq!(back.len(), 10_000);
            assert!(
                back.iter()
                    .enumerate()
                    .all(|(i, (n, v))| *n as usize == i && v.len() == i % 7)
            );
        }
        spool.check().expect("no read error");
        let empty: Spool<u8> = Spool::empty();
        assert_eq!(empty.iter().count(), 0);
    }

    #[test]
    fn readers_at_once_keep_their_own_places() {
        let spool = Spool::from_records(&(0..1000u32).collect::<Vec<_>>()).expect("spool");
        let (mut a, mut b) = (spool.try_iter(), spool.try_iter());
        for i in 0..1000u32 {
            assert_eq!(a.next().map(|r| r.ok()), Some(Some(i)));
            if i % 2 == 0 {
                assert_eq!(b.next().map(|r| r.ok()), Some(Some(i / 2)));
            }
        }
    }
}
