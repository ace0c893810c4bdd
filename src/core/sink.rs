//! Assembles one WAL file from its segments, in offset order, under a temporary name; the file
//! takes its final name only once it is complete.

use std::io::{self, Write};

use super::error::Error;
use super::lz4::{DecodeError, Decoder};
use super::wal::{WalChecker, WalFault};

/// The output directory, as the sink needs it.
pub trait Output {
    /// An open, writable file.
    type File: Write;
    /// Creates (or truncates) the file `name` for writing.
    fn create(&mut self, name: &str) -> io::Result<Self::File>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;
    /// Removes the file `name`.
    fn remove(&mut self, name: &str) -> io::Result<()>;
}

/// The name of the WAL file of `index`: `<prefix>-<index, 16 hex>-wal`.
pub fn wal_file_name(prefix: &str, index: u64) -> String {
    format!("{prefix}-{index:016x}-wal")
}

/// The name a WAL file has while it is written.
pub fn temp_file_name(final_name: &str) -> String {
    format!("{final_name}.tmp")
}

/// A WAL file that is complete under its temporary name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedFile {
    /// Its WAL index.
    pub index: u64,
    /// Its final name.
    pub name: String,
    /// Its temporary name.
    pub temp: String,
    /// Its size in bytes.
    pub size: u64,
}

impl CompletedFile {
    /// Gives the file its final name.
    pub fn publish<O: Output>(&self, output: &mut O, generation: &str) -> Result<(), Error> {
        output
            .rename(&self.temp, &self.name)
            .map_err(|e| Error::write_wal(generation, self.index, &self.name, &e))
    }

    /// Removes the file (it was never published).
    pub fn discard<O: Output>(&self, output: &mut O) {
        let _ = output.remove(&self.temp);
    }
}

/// What a WAL file must satisfy besides being the concatenation of its segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checks {
    /// Largest file accepted, in bytes.
    pub max_wal_size: u64,
    /// Check that the file is a valid SQLite WAL, as it is written.
    pub verify_wal: bool,
}

/// One WAL file being written.
#[derive(Debug)]
pub struct WalSink<F> {
    generation: String,
    index: u64,
    name: String,
    temp: String,
    file: F,
    written: u64,
    checks: Checks,
    /// The WAL check, fed every byte written, when `checks.verify_wal`.
    checker: Option<WalChecker>,
}

impl<F: Write> WalSink<F> {
    /// Creates the temporary file of `index`.
    pub fn create<O: Output<File = F>>(
        output: &mut O,
        generation: &str,
        prefix: &str,
        index: u64,
        checks: Checks,
    ) -> Result<WalSink<F>, Error> {
        let name = wal_file_name(prefix, index);
        let temp = temp_file_name(&name);
        let file = output
            .create(&temp)
            .map_err(|e| Error::write_wal(generation, index, &name, &e))?;
        Ok(WalSink {
            generation: generation.to_string(),
            index,
            name,
            temp,
            file,
            written: 0,
            checks,
            checker: checks.verify_wal.then(WalChecker::new),
        })
    }

    /// The WAL index being written.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks that a segment at `offset` continues the file where it ends now.
    pub fn check_offset(&self, offset: u64) -> Result<(), Error> {
        if offset != self.written {
            return Err(Error::missing_offset(
                &self.generation,
                self.index,
                self.written,
            ));
        }
        Ok(())
    }

    /// Appends the segment at `offset`, whose compressed bytes are `data`. `next_offset` is
    /// where the next listed segment of this index starts, if one is listed: the segment
    /// must not decompress past it (nor the file past the maximum size), and decoding stops
    /// at the first block that would.
    pub fn append(
        &mut self,
        decoder: &mut Decoder,
        offset: u64,
        data: Vec<u8>,
        next_offset: Option<u64>,
    ) -> Result<(), Error> {
        self.check_offset(offset)?;
        let limit = match next_offset {
            Some(next) => next.min(self.checks.max_wal_size),
            None => self.checks.max_wal_size,
        };
        // Count what reaches the file even when a later write fails.
        let mut counted = CountingWriter {
            inner: &mut self.file,
            count: 0,
            room: limit.saturating_sub(self.written),
            over: false,
            checker: self.checker.as_mut(),
            fault: None,
        };
        let result = decoder.decode(data, &mut counted);
        self.written += counted.count;
        if let Some(fault) = counted.fault {
            return Err(Error::corrupt_wal(&self.generation, self.index, &fault));
        }
        if counted.over {
            let what = match next_offset {
                Some(next) if next <= self.checks.max_wal_size => {
                    format!("decompresses past the next segment's offset {next:016x}")
                }
                _ => format!(
                    "WAL file grows past the maximum size of {} bytes",
                    self.checks.max_wal_size
                ),
            };
            return Err(Error::corrupt_segment(
                &self.generation,
                self.index,
                offset,
                &what,
            ));
        }
        result.map(|_| ()).map_err(|e| match e {
            DecodeError::Corrupt(e) => {
                Error::corrupt_segment(&self.generation, self.index, offset, &e.to_string())
            }
            DecodeError::Write(e) => Error::write_wal(&self.generation, self.index, &self.name, &e),
        })
    }

    /// Checks that the file is a complete WAL (when checked), flushes and closes it; it stays
    /// under its temporary name. On failure the file is removed.
    pub fn finish<O: Output>(mut self, output: &mut O) -> Result<CompletedFile, Error> {
        let checked = match &self.checker {
            Some(checker) => checker
                .finish()
                .map_err(|fault| Error::corrupt_wal(&self.generation, self.index, &fault)),
            None => Ok(()),
        };
        let result = checked.and_then(|()| {
            self.file
                .flush()
                .map_err(|e| Error::write_wal(&self.generation, self.index, &self.name, &e))
        });
        match result {
            Ok(()) => Ok(self.into_completed()),
            Err(e) => {
                self.discard(output);
                Err(e)
            }
        }
    }

    /// Closes and removes the unfinished file.
    pub fn discard<O: Output>(self, output: &mut O) {
        self.into_completed().discard(output);
    }

    fn into_completed(self) -> CompletedFile {
        // Dropping the file closes it.
        let WalSink {
            index,
            name,
            temp,
            written,
            ..
        } = self;
        CompletedFile {
            index,
            name,
            temp,
            size: written,
        }
    }
}

/// Counts what reaches the file, refuses (with `over` set) any write that would take the
/// segment past `room` more bytes, and feeds the WAL check (a fault is kept in `fault`).
struct CountingWriter<'a, W> {
    inner: &'a mut W,
    count: u64,
    room: u64,
    over: bool,
    checker: Option<&'a mut WalChecker>,
    fault: Option<WalFault>,
}

impl<W: Write> CountingWriter<'_, W> {
    fn admit(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.len() as u64 > self.room - self.count {
            self.over = true;
            return Err(io::Error::other("segment size limit"));
        }
        if let Some(checker) = self.checker.as_mut()
            && let Err(fault) = checker.update(buf)
        {
            self.fault = Some(fault);
            return Err(io::Error::other("not a valid WAL"));
        }
        Ok(())
    }
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // All or nothing, so that the check sees exactly what reaches the file.
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.admit(buf)?;
        // Whole decoded blocks go down in one call (the output may do large writes).
        self.inner.write_all(buf)?;
        self.count += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// An [`Output`] over a directory of the native file system (tests and tools).
#[derive(Debug)]
pub struct DirOutput {
    dir: std::path::PathBuf,
}

impl DirOutput {
    /// Writes into `dir`.
    pub fn new(dir: impl Into<std::path::PathBuf>) -> DirOutput {
        DirOutput { dir: dir.into() }
    }
}

impl Output for DirOutput {
    type File = std::fs::File;

    fn create(&mut self, name: &str) -> io::Result<std::fs::File> {
        std::fs::File::create(self.dir.join(name))
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.dir.join(from), self.dir.join(to))
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.dir.join(name))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::error::ErrorKind;
    use lz4_flex::frame::FrameEncoder;
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    pub(crate) fn lz4(data: &[u8]) -> Vec<u8> {
        let mut enc = FrameEncoder::new(Vec::new());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// An in-memory output directory; clones share the files.
    #[derive(Clone, Debug, Default)]
    pub(crate) struct MemOutput {
        pub files: Rc<RefCell<BTreeMap<String, Vec<u8>>>>,
        /// Names whose creation fails with "permission denied".
        pub refuse: Rc<RefCell<Vec<String>>>,
    }

    #[derive(Debug)]
    pub(crate) struct MemFile {
        files: Rc<RefCell<BTreeMap<String, Vec<u8>>>>,
        name: String,
    }

    impl Write for MemFile {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut files = self.files.borrow_mut();
            let file = files
                .get_mut(&self.name)
                .ok_or_else(|| io::Error::other("file removed"))?;
            file.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Output for MemOutput {
        type File = MemFile;
        fn create(&mut self, name: &str) -> io::Result<MemFile> {
            if self.refuse.borrow().iter().any(|r| r == name) {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "permission denied",
                ));
            }
            self.files.borrow_mut().insert(name.to_string(), Vec::new());
            Ok(MemFile {
                files: self.files.clone(),
                name: name.to_string(),
            })
        }
        fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
            let mut files = self.files.borrow_mut();
            let data = files
                .remove(from)
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            files.insert(to.to_string(), data);
            Ok(())
        }
        fn remove(&mut self, name: &str) -> io::Result<()> {
            self.files
                .borrow_mut()
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
    }

    const GEN: &str = "0000000000000000";
    const CHECKS: Checks = Checks {
        max_wal_size: 4 << 30,
        verify_wal: false,
    };

    #[test]
    fn the_wal_check_names_the_frame_and_runs_across_segments() {
        let checks = Checks {
            max_wal_size: 4 << 30,
            verify_wal: true,
        };
        let wal = crate::core::wal::tests::synth_wal(512, &[false, true, false, true], false, 9);
        let frame = 24 + 512;
        let cut = 32 + 2 * frame; // two segments, cut at the first commit
        let mut decoder = Decoder::new();
        let mut out = MemOutput::default();

        // Valid: passes, whatever the segments' boundaries.
        let mut sink = WalSink::create(&mut out, GEN, "wal", 1, checks).unwrap();
        sink.append(&mut decoder, 0, lz4(&wal[..cut]), None)
            .unwrap();
        sink.append(&mut decoder, cut as u64, lz4(&wal[cut..]), None)
            .unwrap();
        assert_eq!(sink.finish(&mut out).unwrap().size, wal.len() as u64);

        // A flipped page byte in frame 3, inside a valid LZ4 frame.
        let mut bad = wal.clone();
        bad[cut + 24 + 100] ^= 0x20;
        let mut sink = WalSink::create(&mut out, GEN, "wal", 2, checks).unwrap();
        sink.append(&mut decoder, 0, lz4(&bad[..cut]), None)
            .unwrap();
        let e = sink
            .append(&mut decoder, cut as u64, lz4(&bad[cut..]), None)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert_eq!((e.index, e.offset), (Some(2), Some(cut as u64)));
        assert_eq!(
            e.message,
            format!(
                "corrupt WAL file: wal frame 3 (byte {cut}): checksum mismatch \
                 (generation=0000000000000000 index=0000000000000002)"
            )
        );

        // Ends after a non-commit frame: found when the file is finished.
        let mut sink = WalSink::create(&mut out, GEN, "wal", 3, checks).unwrap();
        sink.append(&mut decoder, 0, lz4(&wal[..cut + frame]), None)
            .unwrap();
        let e = sink.finish(&mut out).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert!(
            e.message.contains("without a commit frame"),
            "{}",
            e.message
        );
        assert!(
            !out.files
                .borrow()
                .contains_key("wal-0000000000000003-wal.tmp"),
            "a file that fails its check is removed"
        );

        // The check off: the same bytes are written as they are.
        let mut sink = WalSink::create(&mut out, GEN, "wal", 4, CHECKS).unwrap();
        sink.append(&mut decoder, 0, lz4(&bad), None).unwrap();
        assert_eq!(sink.finish(&mut out).unwrap().size, bad.len() as u64);
    }

    #[test]
    fn a_segment_stops_at_the_next_offset_and_the_file_at_the_maximum() {
        let mut out = MemOutput::default();
        let mut decoder = Decoder::new();
        let checks = Checks {
            max_wal_size: 100,
            verify_wal: false,
        };
        let mut sink = WalSink::create(&mut out, GEN, "wal", 4, checks).unwrap();
        // Exactly up to the next offset is fine; one byte past it is not.
        sink.append(&mut decoder, 0, lz4(&[7; 40]), Some(40))
            .unwrap();
        let e = sink
            .append(&mut decoder, 40, lz4(&[7; 31]), Some(70))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert_eq!((e.index, e.offset), (Some(4), Some(40)));
        assert_eq!(
            e.message,
            "corrupt WAL segment: decompresses past the next segment's offset 0000000000000046 \
             (generation=0000000000000000 index=0000000000000004 offset=0000000000000028)"
        );
        // Nothing of the refused block reached the file.
        assert_eq!(sink.written(), 40);
        assert_eq!(out.files.borrow()["wal-0000000000000004-wal.tmp"].len(), 40);

        // The last segment is held to the maximum size only.
        let mut sink = WalSink::create(&mut out, GEN, "wal", 5, checks).unwrap();
        sink.append(&mut decoder, 0, lz4(&[1; 60]), None).unwrap();
        sink.append(&mut decoder, 60, lz4(&[1; 40]), None).unwrap();
        let e = sink.append(&mut decoder, 100, lz4(&[1]), None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert!(
            e.message.starts_with(
                "corrupt WAL segment: WAL file grows past the maximum size of 100 bytes"
            ),
            "{}",
            e.message
        );
        // A next offset beyond the maximum: the maximum is what is reported.
        let mut sink = WalSink::create(&mut out, GEN, "wal", 6, checks).unwrap();
        let e = sink
            .append(&mut decoder, 0, lz4(&[1; 101]), Some(500))
            .unwrap_err();
        assert!(
            e.message.contains("maximum size of 100 bytes"),
            "{}",
            e.message
        );
    }

    #[test]
    fn names() {
        assert_eq!(wal_file_name("wal", 0x2a), "wal-000000000000002a-wal");
        assert_eq!(
            temp_file_name("wal-000000000000002a-wal"),
            "wal-000000000000002a-wal.tmp"
        );
    }

    #[test]
    fn assembles_segments_in_offset_order() {
        let mut out = MemOutput::default();
        let mut decoder = Decoder::new();
        let mut sink = WalSink::create(&mut out, GEN, "wal", 3, CHECKS).unwrap();
        assert!(
            out.files
                .borrow()
                .contains_key("wal-0000000000000003-wal.tmp")
        );
        sink.append(&mut decoder, 0, lz4(b"hello "), None).unwrap();
        sink.append(&mut decoder, 6, lz4(b"world"), None).unwrap();
        let done = sink.finish(&mut out).unwrap();
        assert_eq!(done.size, 11);
        assert!(!out.files.borrow().contains_key("wal-0000000000000003-wal"));
        done.publish(&mut out, GEN).unwrap();
        let files = out.files.borrow();
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            ["wal-0000000000000003-wal"]
        );
        assert_eq!(files["wal-0000000000000003-wal"], b"hello world");
    }

    #[test]
    fn missing_offset_names_the_written_count() {
        let mut out = MemOutput::default();
        let mut decoder = Decoder::new();
        let mut sink = WalSink::create(&mut out, GEN, "wal", 0, CHECKS).unwrap();
        let e = sink.check_offset(5).unwrap_err();
        assert_eq!(
            e.message,
            "missing WAL offset: generation=0000000000000000 index=0000000000000000 offset=0000000000000000"
        );
        sink.append(&mut decoder, 0, lz4(&[1; 0x2050]), None)
            .unwrap();
        let e = sink
            .append(&mut decoder, 0x3068, lz4(b"x"), None)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::MissingOffset);
        assert_eq!(e.offset, Some(0x2050));
        assert_eq!(
            e.message,
            "missing WAL offset: generation=0000000000000000 index=0000000000000000 offset=0000000000002050"
        );
        sink.discard(&mut out);
        assert!(out.files.borrow().is_empty());
    }

    #[test]
    fn corrupt_and_output_errors() {
        let mut out = MemOutput::default();
        let mut decoder = Decoder::new();
        let mut sink = WalSink::create(&mut out, GEN, "wal", 1, CHECKS).unwrap();
        let mut bad = lz4(b"some data");
        bad.push(0);
        let e = sink.append(&mut decoder, 0, bad, None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert!(
            e.message.starts_with("corrupt WAL segment: "),
            "{}",
            e.message
        );
        assert!(e.message.ends_with(
            "(generation=0000000000000000 index=0000000000000001 offset=0000000000000000)"
        ));

        out.refuse
            .borrow_mut()
            .push("wal-0000000000000002-wal.tmp".into());
        let e = WalSink::create(&mut out, GEN, "wal", 2, CHECKS).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Output);
        assert!(
            e.message
                .starts_with("write WAL file wal-0000000000000002-wal: permission denied")
        );
    }

    #[test]
    fn native_directory_output() {
        let dir = std::env::temp_dir().join(format!("walrestore-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut out = DirOutput::new(&dir);
        let mut decoder = Decoder::new();
        let mut sink = WalSink::create(&mut out, GEN, "p", 7, CHECKS).unwrap();
        sink.append(&mut decoder, 0, lz4(&[9; 100_000]), None)
            .unwrap();
        let done = sink.finish(&mut out).unwrap();
        done.publish(&mut out, GEN).unwrap();
        let data = std::fs::read(dir.join("p-0000000000000007-wal")).unwrap();
        assert_eq!(data, vec![9; 100_000]);
        assert!(!dir.join("p-0000000000000007-wal.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
