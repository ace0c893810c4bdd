//! The output directory: the component's one preopen, written through `wasi:filesystem`
//! directly (std's files go through wasi-libc, which splits writes into 4 KiB pieces).

use std::io::{self, Write};

use wasi::filesystem::preopens::get_directories;
use wasi::filesystem::types::{Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags};

use crate::core::sink::Output;

/// The preopened output directory, if the host gave one.
pub struct WasiOutput {
    dir: Option<Descriptor>,
}

impl WasiOutput {
    /// The first (only) preopened directory.
    pub fn open() -> WasiOutput {
        WasiOutput {
            dir: get_directories().into_iter().next().map(|(dir, _)| dir),
        }
    }

    fn dir(&self) -> io::Result<&Descriptor> {
        self.dir
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no preopened output directory"))
    }
}

/// A file open for writing; each write goes to the host in one call.
pub struct WasiFile {
    file: Descriptor,
    offset: u64,
}

impl Write for WasiFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf, self.offset).map_err(io_error)?;
        self.offset += n;
        Ok(n as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Output for WasiOutput {
    type File = WasiFile;

    fn create(&mut self, name: &str) -> io::Result<WasiFile> {
        let file = self
            .dir()?
            .open_at(
                PathFlags::empty(),
                name,
                OpenFlags::CREATE | OpenFlags::TRUNCATE,
                DescriptorFlags::WRITE,
            )
            .map_err(io_error)?;
        Ok(WasiFile { file, offset: 0 })
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        let dir = self.dir()?;
        dir.rename_at(from, dir, to).map_err(io_error)
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.dir()?.unlink_file_at(name).map_err(io_error)
    }
}

/// A filesystem error code as readable text.
fn io_error(code: ErrorCode) -> io::Error {
    use io::ErrorKind as K;
    let (kind, text) = match code {
        // A read-only preopen is `not-permitted` in wasmtime; both read as POSIX's EACCES.
        ErrorCode::Access | ErrorCode::NotPermitted => (K::PermissionDenied, "permission denied"),
        ErrorCode::ReadOnly => (K::ReadOnlyFilesystem, "read-only file system"),
        ErrorCode::InsufficientSpace => (K::StorageFull, "no space left on device"),
        ErrorCode::Quota => (K::QuotaExceeded, "disk quota exceeded"),
        ErrorCode::NoEntry => (K::NotFound, "no such file or directory"),
        ErrorCode::Exist => (K::AlreadyExists, "file exists"),
        ErrorCode::IsDirectory => (K::IsADirectory, "is a directory"),
        ErrorCode::NotDirectory => (K::NotADirectory, "not a directory"),
        ErrorCode::NameTooLong => (K::InvalidFilename, "file name too long"),
        ErrorCode::FileTooLarge => (K::FileTooLarge, "file too large"),
        ErrorCode::Io => (K::Other, "input/output error"),
        ErrorCode::Busy | ErrorCode::TextFileBusy => (K::ResourceBusy, "resource busy"),
        other => return io::Error::other(other.name()),
    };
    io::Error::new(kind, text)
}
