//! A small read-only reader of bbolt files, the format of etcd's backend and
//! of `etcdctl snapshot save`. Written here because bbolt-rs 1.3.10 cannot
//! open the files etcd writes: etcd syncs no freelist (its meta page names
//! freelist page 0xffff…), which bbolt-rs does not support, and bbolt-rs
//! takes a blocking lock and trusts page contents. A snapshot is untrusted
//! input, so every offset here is checked and a bad one is an error, never
//! a panic; pages are read with `pread`, one at a time, so memory does not
//! grow with the file.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// What is wrong with a file that is not a readable bbolt database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoltError {
    Io(String),
    NotBolt,
    Corrupt(String),
    NoBucket(&'static str),
}

impl std::fmt::Display for BoltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoltError::Io(e) => write!(f, "cannot read it: {e}"),
            BoltError::NotBolt => f.write_str("it is not a bbolt database (no valid meta page)"),
            BoltError::Corrupt(what) => write!(f, "it is damaged: {what}"),
            BoltError::NoBucket(name) => {
                write!(f, "it has no `{name}` bucket: not an etcd backend")
            }
        }
    }
}

const MAGIC: u32 = 0xED0C_DAED;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const BUCKET_LEAF: u32 = 0x01;
/// Called for each entry: key, value, flags; `Ok(false)` stops the walk.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8], u32) -> Result<bool, BoltError> + 'a;

/// Deeper than any real tree: a cycle in a damaged file ends here.
const MAX_DEPTH: usize = 64;

/// An open bbolt file: its page size, its root bucket page, and its length
/// (the part holding pages, without a trailing hash).
pub struct Bolt {
    file: File,
    page_size: usize,
    root: u64,
    len: u64,
}

/// Where a bucket's tree is: a page of the file, or inline in its value.
#[derive(Debug, Clone)]
pub enum BucketRoot {
    Page(u64),
    Inline(Vec<u8>),
}

impl Bolt {
    /// Opens `file` (read-only), whose first `len` bytes hold the pages.
    pub fn open(file: File, len: u64) -> Result<Bolt, BoltError> {
        let mut best: Option<(u64, usize, u64)> = None;
        // Meta pages are 0 and 1; the page size is in them, so try 4 KiB first
        // for page 0 and then page 1 at the size page 0 names.
        let mut first = vec![0u8; 4096.min(len as usize)];
        read_at(&file, &mut first, 0)?;
        let sizes = meta(&first)
            .map(|m| m.1)
            .into_iter()
            .chain([4096, 8192, 16384, 65536]);
        for size in sizes {
            for page in 0..2u64 {
                let Some(offset) = page.checked_mul(size as u64) else {
                    continue;
                };
                if offset + 64 + PAGE_HEADER as u64 > len {
                    continue;
                }
                let mut buf = vec![0u8; PAGE_HEADER + 64];
                read_at(&file, &mut buf, offset)?;
                if let Some((txid, page_size, root)) = meta(&buf)
                    && page_size == size
                    && best.is_none_or(|b| txid > b.0)
                {
                    best = Some((txid, page_size, root));
                }
            }
            if best.is_some() {
                break;
            }
        }
        let (_, page_size, root) = best.ok_or(BoltError::NotBolt)?;
        Ok(Bolt {
            file,
            page_size,
            root,
            len,
        })
    }

    /// Reads page `id` with its overflow pages.
    fn page(&self, id: u64) -> Result<Vec<u8>, BoltError> {
        let size = self.page_size as u64;
        let offset = id
            .checked_mul(size)
            .filter(|o| o + size <= self.len)
            .ok_or_else(|| {
                BoltError::Corrupt(format!("page {id} lies past the end of the file"))
            })?;
        let mut head = vec![0u8; self.page_size];
        read_at(&self.file, &mut head, offset)?;
        let overflow = u64::from(u32_at(&head, 12)?);
        if overflow == 0 {
            return Ok(head);
        }
        let total = (overflow + 1)
            .checked_mul(size)
            .filter(|t| offset + t <= self.len && *t <= 1 << 31)
            .ok_or_else(|| BoltError::Corrupt(format!("page {id} overflows the file")))?;
        let mut all = vec![0u8; total as usize];
        read_at(&self.file, &mut all, offset)?;
        Ok(all)
    }

    /// The root of a top-level bucket, when it exists.
    pub fn bucket(&self, name: &'static str) -> Result<BucketRoot, BoltError> {
        let mut found = None;
        self.walk(&BucketRoot::Page(self.root), &mut |k, v, flags| {
            if flags & BUCKET_LEAF != 0 && k == name.as_bytes() {
                found = Some(bucket_root(v)?);
            }
            Ok(found.is_none())
        })?;
        found.ok_or(BoltError::NoBucket(name))
    }

    /// Calls `f(key, value, flags)` for each entry of the bucket in key order,
    /// while it returns `Ok(true)`.
    pub fn walk(&self, root: &BucketRoot, f: &mut Visit<'_>) -> Result<(), BoltError> {
        match root {
            BucketRoot::Inline(page) => leaf_or_branch(self, page, 0, f).map(|_| ()),
            BucketRoot::Page(id) => self.walk_page(*id, 0, f).map(|_| ()),
        }
    }

    /// The last key of a bucket: the rightmost path down its tree.
    pub fn last_key(&self, root: &BucketRoot) -> Result<Option<Vec<u8>>, BoltError> {
        let mut page = match root {
            BucketRoot::Inline(p) => p.clone(),
            BucketRoot::Page(id) => self.page(*id)?,
        };
        for _ in 0..MAX_DEPTH {
            let (flags, count) = (u16_at(&page, 8)?, usize::from(u16_at(&page, 10)?));
            let Some(last) = count.checked_sub(1) else {
                return Ok(None);
            };
            let at = PAGE_HEADER + last * ELEMENT;
            if flags & LEAF != 0 {
                let (pos, ksize) = (u32_at(&page, at + 4)?, u32_at(&page, at + 8)?);
                return Ok(Some(
                    slice(&page, at + pos as usize, ksize as usize)?.to_vec(),
                ));
            }
            if flags & BRANCH == 0 {
                return Err(BoltError::Corrupt(format!(
                    "a page of kind {flags:#x} where a tree page belongs"
                )));
            }
            page = self.page(u64_at(&page, at + 8)?)?;
        }
        Err(BoltError::Corrupt(
            "a page tree deeper than any bbolt file".into(),
        ))
    }

    fn walk_page(&self, id: u64, depth: usize, f: &mut Visit<'_>) -> Result<bool, BoltError> {
        if depth > MAX_DEPTH {
            return Err(BoltError::Corrupt(
                "a page tree deeper than any bbolt file".into(),
            ));
        }
        let page = self.page(id)?;
        leaf_or_branch(self, &page, depth, f)
    }
}

/// Walks one page: a leaf's entries, or a branch's children in order.
fn leaf_or_branch(
    bolt: &Bolt,
    page: &[u8],
    depth: usize,
    f: &mut Visit<'_>,
) -> Result<bool, BoltError> {
    let flags = u16_at(page, 8)?;
    let count = usize::from(u16_at(page, 10)?);
    for i in 0..count {
        let at = PAGE_HEADER + i * ELEMENT;
        if flags & LEAF != 0 {
            let (eflags, pos, ksize, vsize) = (
                u32_at(page, at)?,
                u32_at(page, at + 4)?,
                u32_at(page, at + 8)?,
                u32_at(page, at + 12)?,
            );
            let start = at + pos as usize;
            let key = slice(page, start, ksize as usize)?;
            let value = slice(page, start + ksize as usize, vsize as usize)?;
            if !f(key, value, eflags)? {
                return Ok(false);
            }
        } else if flags & BRANCH != 0 {
            let child = u64_at(page, at + 8)?;
            if !bolt.walk_page(child, depth + 1, f)? {
                return Ok(false);
            }
        } else {
            return Err(BoltError::Corrupt(format!(
                "a page of kind {flags:#x} where a tree page belongs"
            )));
        }
    }
    Ok(true)
}

/// A bucket value: its root page, or its inline page after the header.
fn bucket_root(value: &[u8]) -> Result<BucketRoot, BoltError> {
    let root = u64_at(value, 0)?;
    if root == 0 {
        return Ok(BucketRoot::Inline(
            value.get(16..).unwrap_or_default().to_vec(),
        ));
    }
    Ok(BucketRoot::Page(root))
}

/// A meta page's txid, page size and root bucket page, if it is valid.
fn meta(page: &[u8]) -> Option<(u64, usize, u64)> {
    let m = page.get(PAGE_HEADER..PAGE_HEADER + 64)?;
    let magic = u32::from_le_bytes(m.get(0..4)?.try_into().ok()?);
    let version = u32::from_le_bytes(m.get(4..8)?.try_into().ok()?);
    let page_size = u32::from_le_bytes(m.get(8..12)?.try_into().ok()?) as usize;
    let root = u64::from_le_bytes(m.get(16..24)?.try_into().ok()?);
    let txid = u64::from_le_bytes(m.get(48..56)?.try_into().ok()?);
    let checksum = u64::from_le_bytes(m.get(56..64)?.try_into().ok()?);
    let ok = magic == MAGIC
        && version == 2
        && (512..=1 << 20).contains(&page_size)
        && page_size.is_power_of_two()
        && fnv1a(m.get(0..56)?) == checksum;
    ok.then_some((txid, page_size, root))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn read_at(file: &File, buf: &mut [u8], offset: u64) -> Result<(), BoltError> {
    file.read_exact_at(buf, offset).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            BoltError::Corrupt("it ends in the middle of a page (truncated?)".into())
        }
        _ => BoltError::Io(e.to_string()),
    })
}

fn slice(b: &[u8], start: usize, len: usize) -> Result<&[u8], BoltError> {
    start
        .checked_add(len)
        .and_then(|end| b.get(start..end))
        .ok_or_else(|| BoltError::Corrupt("an entry points outside its page".into()))
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, BoltError> {
    Ok(u16::from_le_bytes(
        slice(b, at, 2)?.try_into().unwrap_or_default(),
    ))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BoltError> {
    Ok(u32::from_le_bytes(
        slice(b, at, 4)?.try_into().unwrap_or_default(),
    ))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, BoltError> {
    Ok(u64::from_le_bytes(
        slice(b, at, 8)?.try_into().unwrap_or_default(),
    ))
}
