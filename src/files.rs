//! Reading files that a plan names: regular files only, never a FIFO, a
//! device or a directory, and never more than a cap. `tls: {ca: /dev/zero}`
//! must be an error, not 9 GiB of memory; a FIFO must not hang `validate`.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// The most a PEM file (certificate, key, CA bundle) may hold.
pub const PEM_CAP: u64 = 1 << 20;
/// The most a plan file may hold.
pub const PLAN_CAP: u64 = 8 << 20;

/// Opens `path` for reading without blocking (a FIFO with no writer would
/// block `open` itself) and refuses anything but a regular file.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// Reads a whole regular file of at most `cap` bytes.
pub fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} bytes", cap),
        ));
    }
    Ok(bytes)
}

/// `path` made absolute against the working folder, for messages that must
/// say where a relative path led (the empty path is the working folder).
pub fn absolute(path: &Path) -> std::path::PathBuf {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_folders_and_fifos_are_refused_at_once() {
        let dir = tempfile::tempdir().expect("dir");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for p in [Path::new("/dev/zero"), dir.path(), &fifo] {
            let e = read_capped(p, PEM_CAP).expect_err("refused");
            assert!(e.to_string().contains("not a regular file"), "{p:?}: {e}");
        }
    }

    #[test]
    fn large_files_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'a'; 100]).expect("write");
        assert!(read_capped(&big, 99).is_err());
        assert_eq!(read_capped(&big, 100).expect("fits").len(), 100);
    }
}
