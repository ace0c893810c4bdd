//! Streaming integrity check of a SQLite WAL file.
//!
//! The restored WAL arrives in pieces of any size (decoder blocks, segments split at any byte
//! offset), so [`WalChecker`] is fed with [`WalChecker::update`] and closed with
//! [`WalChecker::finish`]. It keeps no page: the frame checksum is computed as the bytes go
//! by, with a carry of at most 7 bytes between pieces and one 32-byte buffer for the WAL
//! header or the 24-byte frame header being collected.
//!
//! The format (<https://www.sqlite.org/fileformat2.html#walformat>): a 32-byte header (magic,
//! version 3007000, page size, checkpoint sequence, salt-1, salt-2, checksum over bytes
//! 0..24), then frames of a 24-byte frame header (page number, database size after commit or
//! 0, salt-1, salt-2, checksum) and one page. Every field is a big-endian u32; the checksum
//! words are big-endian if the magic's low bit is set and little-endian otherwise. A frame's
//! checksum carries on from the previous frame's (the header's for frame 1) over the frame
//! header's first 8 bytes and the page.
//!
//! SQLite reads a frame with a wrong salt or checksum as the end of the log. Litestream's WAL
//! files hold only committed, valid frames, so here every such frame is a fault, and so is a
//! file that does not end on a complete commit frame (a header-only file included).

use std::fmt;

const WAL_HEADER_SIZE: usize = 32;
const FRAME_HEADER_SIZE: usize = 24;
/// The magic with the low bit clear: checksum words are little-endian; set: big-endian.
const MAGIC: u32 = 0x377f_0682;
const VERSION: u32 = 3_007_000;
const MIN_PAGE_SIZE: u32 = 512;
const MAX_PAGE_SIZE: u32 = 65536;

/// What is wrong with a WAL file. `Display` gives a short lowercase text without the
/// generation/index (the caller adds those), e.g. "wal frame 3 (byte 8272): salt mismatch".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalFault {
    /// 1-based number of the faulty frame; `None` for faults of the header or of the file
    /// as a whole ("wal is empty", a header-only file).
    pub frame: Option<u64>,
    /// Byte offset in the WAL file where the faulty header or frame starts: 0 for header
    /// faults, `32 + (frame - 1) * (24 + page size)` for frame faults (for a truncated frame,
    /// where its partial bytes start; for a missing commit, where the last frame starts, or
    /// 32 if there is no frame).
    pub offset: u64,
    kind: FaultKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FaultKind {
    Empty,
    HeaderTruncated { have: u64 },
    BadMagic(u32),
    BadVersion(u32),
    BadPageSize(u32),
    HeaderChecksum,
    SaltMismatch,
    PageNumberZero,
    ChecksumMismatch,
    FrameTruncated { have: u64, size: u64 },
    NoCommit,
}

impl fmt::Display for WalFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let frame = |f: &mut fmt::Formatter<'_>, what: fmt::Arguments<'_>| {
            write!(
                f,
                "wal frame {} (byte {}): {what}",
                self.frame.unwrap_or(0),
                self.offset
            )
        };
        match self.kind {
            FaultKind::Empty => f.write_str("wal is empty"),
            FaultKind::HeaderTruncated { have } => {
                write!(
                    f,
                    "wal header: truncated ({have} of {WAL_HEADER_SIZE} bytes)"
                )
            }
            FaultKind::BadMagic(magic) => write!(f, "wal header: bad magic {magic:#010x}"),
            FaultKind::BadVersion(version) => {
                write!(f, "wal header: unsupported version {version}")
            }
            FaultKind::BadPageSize(size) => write!(f, "wal header: invalid page size {size}"),
            FaultKind::HeaderChecksum => f.write_str("wal header: checksum mismatch"),
            FaultKind::SaltMismatch => frame(f, format_args!("salt mismatch")),
            FaultKind::PageNumberZero => frame(f, format_args!("page number 0")),
            FaultKind::ChecksumMismatch => frame(f, format_args!("checksum mismatch")),
            FaultKind::FrameTruncated { have, size } => {
                frame(f, format_args!("truncated ({have} of {size} bytes)"))
            }
            FaultKind::NoCommit => match self.frame {
                Some(last) => write!(f, "wal ends without a commit frame (last frame {last})"),
                None => f.write_str("wal ends without a commit frame (no frames)"),
            },
        }
    }
}

impl std::error::Error for WalFault {}

/// Where the next byte goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    /// Collecting the 32-byte WAL header in `buf`.
    #[default]
    Header,
    /// Collecting a 24-byte frame header in `buf`.
    FrameHeader,
    /// Summing the current frame's page; `remaining` bytes of it are still to come.
    Page,
}

/// A streaming SQLite WAL checker: [`update`](WalChecker::update) with the file's bytes in
/// order, in pieces of any size, then [`finish`](WalChecker::finish).
#[derive(Clone, Debug, Default)]
pub struct WalChecker {
    /// Bytes passed to `update`.
    fed: u64,
    /// The first fault; once set, nothing more is looked at.
    fault: Option<WalFault>,
    phase: Phase,
    /// The WAL header or frame header being collected, `have` bytes of it so far.
    buf: [u8; WAL_HEADER_SIZE],
    have: usize,
    /// From the header, once it has been checked.
    page_size: Option<u32>,
    big_endian: bool,
    salt: [u8; 8],
    /// The running checksum: the last complete frame's (the header's before frame 1), or
    /// while in `Phase::Page` the current frame's so far.
    sum: (u32, u32),
    /// The current frame's stored checksum and commit flag.
    expect: (u32, u32),
    commit: bool,
    /// Page bytes of the current frame still to come; the first `carry_len` bytes of
    /// `carry` are the start of a checksum word split across pieces.
    remaining: u32,
    carry: [u8; 8],
    carry_len: usize,
    /// Complete, valid frames, and whether the last of them is a commit frame.
    frames: u64,
    last_commit: bool,
}

impl WalChecker {
    pub fn new() -> WalChecker {
        WalChecker::default()
    }

    /// Feeds the next bytes of the file. Returns the first fault as soon as it is certain: a
    /// bad header as soon as its 32 bytes are in, a salt or page-number fault as soon as that
    /// frame header is in, a checksum fault at the end of that frame. After a fault, every
    /// later call returns the same fault.
    pub fn update(&mut self, mut data: &[u8]) -> Result<(), WalFault> {
        self.fed += data.len() as u64;
        if let Some(fault) = &self.fault {
            return Err(fault.clone());
        }
        while !data.is_empty() {
            let step = match self.phase {
                Phase::Header => self.header_bytes(data),
                Phase::FrameHeader => self.frame_header_bytes(data),
                Phase::Page => self.page_bytes(data),
            };
            match step {
                Ok(used) => data = &data[used..],
                Err(fault) => {
                    self.fault = Some(fault.clone());
                    return Err(fault);
                }
            }
        }
        Ok(())
    }

    /// The whole file has been fed: checks that it ends on a complete commit frame (and
    /// returns the fault `update` found, if any).
    pub fn finish(&self) -> Result<(), WalFault> {
        if let Some(fault) = &self.fault {
            return Err(fault.clone());
        }
        if self.fed == 0 {
            return Err(WalFault {
                frame: None,
                offset: 0,
                kind: FaultKind::Empty,
            });
        }
        let Some(page_size) = self.page_size else {
            return Err(WalFault {
                frame: None,
                offset: 0,
                kind: FaultKind::HeaderTruncated { have: self.fed },
            });
        };
        let frame_size = FRAME_HEADER_SIZE as u64 + u64::from(page_size);
        let partial = match self.phase {
            Phase::Header => unreachable!("the header is in once the page size is known"),
            Phase::FrameHeader => self.have as u64,
            Phase::Page => FRAME_HEADER_SIZE as u64 + u64::from(page_size - self.remaining),
        };
        if partial != 0 {
            return Err(self.frame_fault(
                self.frames + 1,
                FaultKind::FrameTruncated {
                    have: partial,
                    size: frame_size,
                },
            ));
        }
        if self.frames == 0 {
            return Err(WalFault {
                frame: None,
                offset: WAL_HEADER_SIZE as u64,
                kind: FaultKind::NoCommit,
            });
        }
        if !self.last_commit {
            return Err(self.frame_fault(self.frames, FaultKind::NoCommit));
        }
        Ok(())
    }

    /// Bytes fed so far (all bytes passed to `update`, also after a fault).
    pub fn len(&self) -> u64 {
        self.fed
    }

    pub fn is_empty(&self) -> bool {
        self.fed == 0
    }

    /// Frames complete (and valid) so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The page size, once a valid header is in.
    pub fn page_size(&self) -> Option<u32> {
        self.page_size
    }

    /// A fault of frame `frame` (1-based), located at its first byte.
    fn frame_fault(&self, frame: u64, kind: FaultKind) -> WalFault {
        let page_size = u64::from(self.page_size.unwrap_or(0));
        WalFault {
            frame: Some(frame),
            offset: WAL_HEADER_SIZE as u64 + (frame - 1) * (FRAME_HEADER_SIZE as u64 + page_size),
            kind,
        }
    }

    fn header_bytes(&mut self, data: &[u8]) -> Result<usize, WalFault> {
        let n = (WAL_HEADER_SIZE - self.have).min(data.len());
        self.buf[self.have..self.have + n].copy_from_slice(&data[..n]);
        self.have += n;
        if self.have < WAL_HEADER_SIZE {
            return Ok(n);
        }
        self.have = 0;
        let header = |kind| WalFault {
            frame: None,
            offset: 0,
            kind,
        };
        let buf = self.buf;
        let magic = be32(&buf, 0);
        if magic & !1 != MAGIC {
            return Err(header(FaultKind::BadMagic(magic)));
        }
        let version = be32(&buf, 4);
        if version != VERSION {
            return Err(header(FaultKind::BadVersion(version)));
        }
        let page_size = be32(&buf, 8);
        if !page_size.is_power_of_two() || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(header(FaultKind::BadPageSize(page_size)));
        }
        let big_endian = magic & 1 == 1;
        let sum = checksum(big_endian, (0, 0), &buf[..24]);
        if sum != (be32(&buf, 24), be32(&buf, 28)) {
            return Err(header(FaultKind::HeaderChecksum));
        }
        self.big_endian = big_endian;
        self.page_size = Some(page_size);
        self.salt.copy_from_slice(&buf[16..24]);
        self.sum = sum;
        self.phase = Phase::FrameHeader;
        Ok(n)
    }

    fn frame_header_bytes(&mut self, data: &[u8]) -> Result<usize, WalFault> {
        let n = (FRAME_HEADER_SIZE - self.have).min(data.len());
        self.buf[self.have..self.have + n].copy_from_slice(&data[..n]);
        self.have += n;
        if self.have < FRAME_HEADER_SIZE {
            return Ok(n);
        }
        self.have = 0;
        let buf = self.buf;
        if buf[8..16] != self.salt {
            return Err(self.frame_fault(self.frames + 1, FaultKind::SaltMismatch));
        }
        if be32(&buf, 0) == 0 {
            return Err(self.frame_fault(self.frames + 1, FaultKind::PageNumberZero));
        }
        self.commit = be32(&buf, 4) != 0;
        self.expect = (be32(&buf, 16), be32(&buf, 20));
        self.sum = checksum(self.big_endian, self.sum, &buf[..8]);
        self.remaining = self.page_size.expect("header checked");
        self.phase = Phase::Page;
        Ok(n)
    }

    /// Sums page bytes of the current frame; at the end of the page, checks the checksum.
    fn page_bytes(&mut self, data: &[u8]) -> Result<usize, WalFault> {
        let take = data.len().min(self.remaining as usize);
        let mut chunk = &data[..take];
        if self.carry_len > 0 {
            let n = (8 - self.carry_len).min(chunk.len());
            self.carry[self.carry_len..self.carry_len + n].copy_from_slice(&chunk[..n]);
            self.carry_len += n;
            chunk = &chunk[n..];
            if self.carry_len == 8 {
                self.sum = checksum(self.big_endian, self.sum, &self.carry);
                self.carry_len = 0;
            }
        }
        let whole = chunk.len() & !7;
        self.sum = checksum(self.big_endian, self.sum, &chunk[..whole]);
        let rest = &chunk[whole..];
        if !rest.is_empty() {
            // Only at the end of `data`: `remaining` is a multiple of 8 here.
            self.carry[..rest.len()].copy_from_slice(rest);
            self.carry_len = rest.len();
        }
        self.remaining -= take as u32;
        if self.remaining == 0 {
            debug_assert_eq!(self.carry_len, 0);
            if self.sum != self.expect {
                return Err(self.frame_fault(self.frames + 1, FaultKind::ChecksumMismatch));
            }
            self.frames += 1;
            self.last_commit = self.commit;
            self.phase = Phase::FrameHeader;
        }
        Ok(take)
    }
}

fn be32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

/// SQLite's `walChecksumBytes` over `data` (a multiple of 8 bytes), carrying on from `sum`.
fn checksum(big_endian: bool, sum: (u32, u32), data: &[u8]) -> (u32, u32) {
    if big_endian {
        checksum_words::<true>(sum, data)
    } else {
        checksum_words::<false>(sum, data)
    }
}

#[inline(always)]
fn checksum_words<const BIG_ENDIAN: bool>((mut s1, mut s2): (u32, u32), data: &[u8]) -> (u32, u32) {
    debug_assert_eq!(data.len() % 8, 0);
    for word in data.chunks_exact(8) {
        let word: [u8; 8] = word.try_into().expect("8 bytes");
        // One 8-byte load; (x0, x1) are its first and second 4 bytes in the WAL's order.
        let (x0, x1) = if BIG_ENDIAN {
            let v = u64::from_be_bytes(word);
            ((v >> 32) as u32, v as u32)
        } else {
            let v = u64::from_le_bytes(word);
            (v as u32, (v >> 32) as u32)
        };
        s1 = s1.wrapping_add(x0).wrapping_add(s2);
        s2 = s2.wrapping_add(x1).wrapping_add(s1);
    }
    (s1, s2)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::OnceLock;

    use super::*;

    const FH: usize = FRAME_HEADER_SIZE;

    /// xorshift64*: deterministic test data and piece sizes without a dependency.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// Uniform in `lo..=hi`.
        fn range(&mut self, lo: usize, hi: usize) -> usize {
            lo + (self.next() % (hi - lo + 1) as u64) as usize
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| (self.next() >> 32) as u8).collect()
        }
    }

    fn get32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    fn put32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    fn page_size_of(wal: &[u8]) -> usize {
        get32(wal, 8) as usize
    }

    /// Where frame `n` (1-based) starts.
    fn frame_offset(wal: &[u8], n: u64) -> usize {
        WAL_HEADER_SIZE + (n as usize - 1) * (FH + page_size_of(wal))
    }

    fn frame_count(wal: &[u8]) -> u64 {
        ((wal.len() - WAL_HEADER_SIZE) / (FH + page_size_of(wal))) as u64
    }

    fn is_commit(wal: &[u8], n: u64) -> bool {
        get32(wal, frame_offset(wal, n) + 4) != 0
    }

    fn is_big_endian(wal: &[u8]) -> bool {
        get32(wal, 0) & 1 == 1
    }

    /// `walChecksumBytes` written independently of the module's: word by word.
    fn ref_checksum(big_endian: bool, (mut s1, mut s2): (u32, u32), data: &[u8]) -> (u32, u32) {
        assert_eq!(data.len() % 8, 0);
        let word = |b: &[u8]| {
            let a = [b[0], b[1], b[2], b[3]];
            if big_endian {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            }
        };
        for i in (0..data.len()).step_by(8) {
            s1 = s1.wrapping_add(word(&data[i..])).wrapping_add(s2);
            s2 = s2.wrapping_add(word(&data[i + 4..])).wrapping_add(s1);
        }
        (s1, s2)
    }

    fn put_sum(b: &mut [u8], at: usize, (s1, s2): (u32, u32)) {
        put32(b, at, s1);
        put32(b, at + 4, s2);
    }

    /// Sets the magic for `big_endian` and recomputes the header checksum.
    fn rechecksum_header(wal: &mut [u8], big_endian: bool) {
        put32(wal, 0, MAGIC | u32::from(big_endian));
        let sum = ref_checksum(big_endian, (0, 0), &wal[..24]);
        put_sum(wal, 24, sum);
    }

    /// Re-encodes `wal` with `big_endian` checksum words: the magic, the header checksum and
    /// every complete frame's checksum in chain. Salts and everything else are untouched, so
    /// this also makes damaged files consistently checksummed.
    fn rechecksum(wal: &mut [u8], big_endian: bool) {
        rechecksum_header(wal, big_endian);
        let page_size = page_size_of(wal);
        let mut sum = (get32(wal, 24), get32(wal, 28));
        let mut at = WAL_HEADER_SIZE;
        while at + FH + page_size <= wal.len() {
            sum = ref_checksum(big_endian, sum, &wal[at..at + 8]);
            sum = ref_checksum(big_endian, sum, &wal[at + FH..at + FH + page_size]);
            put_sum(wal, at + 16, sum);
            at += FH + page_size;
        }
    }

    /// A WAL built without SQLite: one frame per entry of `commits` (true: a commit frame),
    /// random pages, valid checksums.
    pub(crate) fn synth_wal(
        page_size: usize,
        commits: &[bool],
        big_endian: bool,
        seed: u64,
    ) -> Vec<u8> {
        let mut rng = Rng::new(seed);
        let mut wal = vec![0; WAL_HEADER_SIZE];
        put32(&mut wal, 4, VERSION);
        put32(&mut wal, 8, page_size as u32);
        put32(&mut wal, 12, 7);
        wal[16..24].copy_from_slice(&rng.bytes(8));
        for (i, &commit) in commits.iter().enumerate() {
            let mut header = [0; FH];
            put32(&mut header, 0, i as u32 % 5 + 1);
            put32(&mut header, 4, if commit { 5 } else { 0 });
            header[8..16].copy_from_slice(&wal[16..24]);
            wal.extend_from_slice(&header);
            wal.extend_from_slice(&rng.bytes(page_size));
        }
        rechecksum(&mut wal, big_endian);
        wal
    }

    /// A WAL written by SQLite with `page_size` pages: small transactions of random blobs,
    /// updates, a multi-page transaction with overflow pages, deletes. Copied while the
    /// connection is open, so it is never checkpointed.
    fn make_sqlite_wal(page_size: u32, seed: u64) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("test.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "page_size", page_size).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT NOT NULL, v BLOB NOT NULL);
             CREATE INDEX t_k ON t(k);",
        )
        .unwrap();
        let mut rng = Rng::new(seed);
        let insert = |conn: &rusqlite::Connection, rng: &mut Rng, max: usize| {
            let len = rng.range(0, max);
            let blob = rng.bytes(len);
            let key = format!("{:016x}", rng.next());
            conn.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", (key, blob))
                .unwrap();
        };
        for _ in 0..5 {
            let tx = conn.unchecked_transaction().unwrap();
            for _ in 0..rng.range(1, 4) {
                insert(&tx, &mut rng, page_size as usize);
            }
            tx.commit().unwrap();
        }
        conn.execute(
            "UPDATE t SET v = randomblob(length(v) / 2 + 1) WHERE id % 2 = 0",
            [],
        )
        .unwrap();
        // Many pages in one transaction: its frames before the last are not commit frames.
        let tx = conn.unchecked_transaction().unwrap();
        for _ in 0..8 {
            let blob = rng.bytes(3 * page_size as usize);
            tx.execute("INSERT INTO t (k, v) VALUES ('big', ?1)", [blob])
                .unwrap();
        }
        tx.commit().unwrap();
        conn.execute("DELETE FROM t WHERE id % 3 = 0", []).unwrap();
        for _ in 0..3 {
            insert(&conn, &mut rng, 100);
        }
        let actual: u32 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(actual, page_size);
        let wal = std::fs::read(dir.path().join("test.db-wal")).unwrap();
        drop(conn);
        assert_eq!(page_size_of(&wal), page_size as usize);
        assert_eq!((wal.len() - WAL_HEADER_SIZE) % (FH + page_size as usize), 0);
        assert!(frame_count(&wal) > 10);
        wal
    }

    /// SQLite's WALs, made once per page size.
    fn sqlite_wal(page_size: u32) -> &'static [u8] {
        static WALS: [OnceLock<Vec<u8>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        let slot = match page_size {
            512 => &WALS[0],
            4096 => &WALS[1],
            65536 => &WALS[2],
            _ => unreachable!(),
        };
        slot.get_or_init(|| make_sqlite_wal(page_size, u64::from(page_size)))
    }

    /// SQLite's WALs for every page size, as written and re-encoded with the other byte
    /// order.
    fn all_wals() -> Vec<(String, Vec<u8>)> {
        let mut wals = Vec::new();
        for page_size in [512, 4096, 65536] {
            let wal = sqlite_wal(page_size).to_vec();
            let mut other = wal.clone();
            let big_endian = !is_big_endian(&wal);
            rechecksum(&mut other, big_endian);
            wals.push((format!("{page_size} sqlite"), wal));
            wals.push((format!("{page_size} big_endian={big_endian}"), other));
        }
        wals
    }

    fn check(wal: &[u8]) -> Result<WalChecker, WalFault> {
        let mut checker = WalChecker::new();
        checker.update(wal)?;
        checker.finish()?;
        Ok(checker)
    }

    /// Feeds `wal` in pieces of the sizes `next` gives (0 allowed); a fault must stick.
    fn check_pieces(wal: &[u8], mut next: impl FnMut() -> usize) -> Result<(), WalFault> {
        let mut checker = WalChecker::new();
        let mut rest = wal;
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at(next().min(rest.len()));
            rest = tail;
            if let Err(fault) = checker.update(piece) {
                assert_eq!(checker.update(tail), Err(fault.clone()));
                assert_eq!(checker.update(&[]), Err(fault.clone()));
                assert_eq!(checker.finish(), Err(fault.clone()));
                assert_eq!(checker.len(), wal.len() as u64);
                return Err(fault);
            }
        }
        assert_eq!(checker.len(), wal.len() as u64);
        checker.finish()
    }

    /// Piece sizes that cross every kind of boundary: around words, frame headers, pages.
    fn awkward_sizes(page_size: usize) -> Vec<usize> {
        let frame = FH + page_size;
        vec![
            1,
            7,
            0,
            9,
            FH - 1,
            FH + 1,
            page_size - 1,
            frame + 3,
            5,
            frame - 5,
            2 * frame + 13,
            8,
            page_size + 8,
            31,
        ]
    }

    /// Checks `wal` whole and in many kinds of pieces; all must give the same result.
    fn check_all_ways(wal: &[u8], seed: u64) -> Result<(), WalFault> {
        let whole = check(wal).map(|_| ());
        let mut rng = Rng::new(seed);
        assert_eq!(
            check_pieces(wal, || rng.range(1, 9)),
            whole,
            "pieces of 1..=9"
        );
        assert_eq!(
            check_pieces(wal, || rng.range(0, 200_000)),
            whole,
            "large pieces"
        );
        assert_eq!(
            check_pieces(wal, || rng.range(0, 70_000)),
            whole,
            "medium pieces"
        );
        if wal.len() >= 12 {
            let sizes = awkward_sizes(page_size_of(wal).clamp(512, 65536));
            let mut i = 0;
            let awkward = check_pieces(wal, || {
                i += 1;
                sizes[i % sizes.len()]
            });
            assert_eq!(awkward, whole, "awkward pieces");
        }
        whole
    }

    /// `wal` must fail with this fault, however it is fed.
    fn expect_fault(wal: &[u8], frame: Option<u64>, offset: usize, kind: FaultKind) -> WalFault {
        let expected = WalFault {
            frame,
            offset: offset as u64,
            kind,
        };
        assert_eq!(check_all_ways(wal, offset as u64), Err(expected.clone()));
        expected
    }

    /// Feeds `wal` a byte at a time: how many bytes were in when `update` returned the fault.
    fn fault_point(wal: &[u8]) -> Option<usize> {
        let mut checker = WalChecker::new();
        (0..wal.len())
            .find(|&i| checker.update(&wal[i..i + 1]).is_err())
            .map(|i| i + 1)
    }

    #[test]
    fn checksum_matches_the_reference() {
        let mut rng = Rng::new(1);
        for len in [0, 8, 16, 24, 512, 4096, 65536] {
            let data = rng.bytes(len);
            let start = (rng.next() as u32, rng.next() as u32);
            for big_endian in [false, true] {
                assert_eq!(
                    checksum(big_endian, start, &data),
                    ref_checksum(big_endian, start, &data)
                );
            }
        }
    }

    #[test]
    fn rechecksum_reproduces_sqlite() {
        // The helper that builds big-endian and damaged files agrees with SQLite itself.
        for page_size in [512, 4096, 65536] {
            let wal = sqlite_wal(page_size);
            let mut again = wal.to_vec();
            rechecksum(&mut again, is_big_endian(wal));
            assert!(again == wal, "page size {page_size}");
            let mut other = wal.to_vec();
            rechecksum(&mut other, !is_big_endian(wal));
            assert_ne!(other, wal);
        }
    }

    #[test]
    fn sqlite_wals_pass() {
        for (name, wal) in all_wals() {
            let checker = check(&wal).unwrap_or_else(|f| panic!("{name}: {f}"));
            assert_eq!(checker.frames(), frame_count(&wal), "{name}");
            assert_eq!(
                checker.page_size(),
                Some(page_size_of(&wal) as u32),
                "{name}"
            );
            assert_eq!(checker.len(), wal.len() as u64, "{name}");
            assert!(!checker.is_empty());
            assert!(is_commit(&wal, frame_count(&wal)));
            // There are non-commit frames (the multi-page transaction) in every file.
            assert!(
                (1..frame_count(&wal)).any(|n| !is_commit(&wal, n)),
                "{name}"
            );
        }
    }

    #[test]
    fn sqlite_wals_pass_in_any_pieces() {
        for (i, (name, wal)) in all_wals().into_iter().enumerate() {
            assert_eq!(check_all_ways(&wal, i as u64), Ok(()), "{name}");
        }
    }

    #[test]
    fn small_wal_passes_split_at_every_byte() {
        let wal = sqlite_wal(512);
        let mut rng = Rng::new(2);
        for split in 0..=wal.len() {
            let mut checker = WalChecker::new();
            checker.update(&wal[..split]).unwrap();
            // And a third piece somewhere after the split.
            let second = rng.range(split, wal.len());
            checker.update(&wal[split..second]).unwrap();
            checker.update(&wal[second..]).unwrap();
            assert_eq!(checker.finish(), Ok(()), "split at {split}, {second}");
            assert_eq!(checker.frames(), frame_count(wal));
        }
    }

    #[test]
    fn damaged_small_wal_split_at_every_byte() {
        let mut wal = sqlite_wal(512).to_vec();
        let n = frame_count(&wal) / 2;
        let at = frame_offset(&wal, n) + FH + 100;
        wal[at] ^= 0x10;
        let expected = WalFault {
            frame: Some(n),
            offset: frame_offset(&wal, n) as u64,
            kind: FaultKind::ChecksumMismatch,
        };
        for split in 0..=wal.len() {
            let mut checker = WalChecker::new();
            let first = checker.update(&wal[..split]);
            let second = checker.update(&wal[split..]);
            let end = frame_offset(&wal, n + 1);
            if split < end {
                assert_eq!(first, Ok(()), "split at {split}");
            } else {
                assert_eq!(first, Err(expected.clone()), "split at {split}");
            }
            assert_eq!(second, Err(expected.clone()), "split at {split}");
            assert_eq!(checker.frames(), n - 1);
        }
    }

    #[test]
    fn synthetic_wals() {
        for big_endian in [false, true] {
            for page_size in [512, 1024, 8192, 32768, 65536] {
                let wal = synth_wal(
                    page_size,
                    &[false, true, true, false, false, true],
                    big_endian,
                    3,
                );
                assert_eq!(check_all_ways(&wal, 4), Ok(()));
                assert_eq!(check(&wal).unwrap().frames(), 6);
                // Ends on non-commit frames.
                let wal = synth_wal(page_size, &[true, false, false], big_endian, 5);
                expect_fault(&wal, Some(3), frame_offset(&wal, 3), FaultKind::NoCommit);
            }
        }
    }

    #[test]
    fn flipped_page_byte_is_a_checksum_mismatch() {
        for (name, wal) in all_wals() {
            let count = frame_count(&wal);
            let page_size = page_size_of(&wal);
            for n in [1, count / 2, count] {
                for within in [0, 7, 8, page_size / 2 + 3, page_size - 1] {
                    let mut bad = wal.clone();
                    bad[frame_offset(&wal, n) + FH + within] ^= 0x01;
                    let fault = expect_fault(
                        &bad,
                        Some(n),
                        frame_offset(&wal, n),
                        FaultKind::ChecksumMismatch,
                    );
                    assert_eq!(
                        fault.to_string(),
                        format!("wal frame {n} (byte {}): checksum mismatch", fault.offset),
                        "{name}"
                    );
                }
            }
        }
    }

    #[test]
    fn damaged_frame_header_fields() {
        for (_, wal) in all_wals() {
            let n = frame_count(&wal) / 2 + 1;
            let at = frame_offset(&wal, n);
            // The commit field, the page number, and the stored checksum are all covered.
            for byte in [0, 3, 4, 7, 16, 19, 20, 23] {
                let mut bad = wal.clone();
                bad[at + byte] ^= 0x80;
                expect_fault(&bad, Some(n), at, FaultKind::ChecksumMismatch);
            }
        }
    }

    #[test]
    fn checksums_are_cumulative() {
        // Frame n damaged but given the checksum that matches its damage: it passes, and
        // frame n + 1 fails because its checksum carries on from frame n's.
        for (_, wal) in all_wals() {
            let big_endian = is_big_endian(&wal);
            let page_size = page_size_of(&wal);
            let n = frame_count(&wal) / 2;
            let at = frame_offset(&wal, n);
            let mut bad = wal.clone();
            bad[at + FH + 10] ^= 0x04;
            let before = if n == 1 {
                24
            } else {
                frame_offset(&wal, n - 1) + 16
            };
            let mut sum = (get32(&bad, before), get32(&bad, before + 4));
            sum = ref_checksum(big_endian, sum, &bad[at..at + 8]);
            sum = ref_checksum(big_endian, sum, &bad[at + FH..at + FH + page_size]);
            put_sum(&mut bad, at + 16, sum);
            expect_fault(
                &bad,
                Some(n + 1),
                frame_offset(&wal, n + 1),
                FaultKind::ChecksumMismatch,
            );
        }
    }

    #[test]
    fn salt_mismatch() {
        for (name, wal) in all_wals() {
            let count = frame_count(&wal);
            for n in [1, count / 2, count] {
                let at = frame_offset(&wal, n);
                for byte in [8, 11, 12, 15] {
                    // Flipped in place: the checksum would fail too, but the salt shows first.
                    let mut bad = wal.clone();
                    bad[at + byte] ^= 0x02;
                    let fault = expect_fault(&bad, Some(n), at, FaultKind::SaltMismatch);
                    assert_eq!(
                        fault.to_string(),
                        format!("wal frame {n} (byte {at}): salt mismatch"),
                        "{name}"
                    );
                    // A wrong salt with a consistent checksum.
                    rechecksum(&mut bad, is_big_endian(&wal));
                    expect_fault(&bad, Some(n), at, FaultKind::SaltMismatch);
                }
            }
            // The header's salt changed (and its checksum recomputed): frame 1 mismatches.
            let mut bad = wal.clone();
            bad[20] ^= 0x40;
            rechecksum_header(&mut bad, is_big_endian(&wal));
            expect_fault(&bad, Some(1), WAL_HEADER_SIZE, FaultKind::SaltMismatch);
        }
    }

    #[test]
    fn page_number_zero() {
        for (name, wal) in all_wals() {
            let count = frame_count(&wal);
            for n in [1, count / 2, count] {
                let at = frame_offset(&wal, n);
                let mut bad = wal.clone();
                put32(&mut bad, at, 0);
                rechecksum(&mut bad, is_big_endian(&wal));
                let fault = expect_fault(&bad, Some(n), at, FaultKind::PageNumberZero);
                assert_eq!(
                    fault.to_string(),
                    format!("wal frame {n} (byte {at}): page number 0"),
                    "{name}"
                );
                // A wrong salt is reported before the page number.
                bad[at + 9] ^= 1;
                expect_fault(&bad, Some(n), at, FaultKind::SaltMismatch);
            }
        }
    }

    #[test]
    fn truncated_last_frame() {
        for (name, wal) in all_wals() {
            let count = frame_count(&wal);
            let page_size = page_size_of(&wal);
            let at = frame_offset(&wal, count);
            let size = (FH + page_size) as u64;
            for have in [
                1,
                10,
                FH - 1,
                FH,
                FH + 1,
                FH + 8,
                FH + page_size / 2,
                FH + page_size - 1,
            ] {
                let cut = &wal[..at + have];
                let fault = expect_fault(
                    cut,
                    Some(count),
                    at,
                    FaultKind::FrameTruncated {
                        have: have as u64,
                        size,
                    },
                );
                assert_eq!(
                    fault.to_string(),
                    format!("wal frame {count} (byte {at}): truncated ({have} of {size} bytes)"),
                    "{name}"
                );
                // `update` cannot know: only `finish` says so.
                assert_eq!(fault_point(cut), None);
            }
        }
    }

    #[test]
    fn missing_commit_frame() {
        for (name, wal) in all_wals() {
            let count = frame_count(&wal);
            // Cut after a frame that is not a commit frame (inside the multi-page transaction).
            let n = (1..count).rev().find(|&n| !is_commit(&wal, n)).unwrap();
            let cut = &wal[..frame_offset(&wal, n + 1)];
            let fault = expect_fault(cut, Some(n), frame_offset(&wal, n), FaultKind::NoCommit);
            assert_eq!(
                fault.to_string(),
                format!("wal ends without a commit frame (last frame {n})"),
                "{name}"
            );
            assert_eq!(fault_point(cut), None);
            // The last frame's commit field cleared, checksums recomputed.
            let mut bad = wal.clone();
            put32(&mut bad, frame_offset(&wal, count) + 4, 0);
            rechecksum(&mut bad, is_big_endian(&wal));
            expect_fault(
                &bad,
                Some(count),
                frame_offset(&wal, count),
                FaultKind::NoCommit,
            );
        }
    }

    #[test]
    fn trailing_bytes() {
        for (_, wal) in all_wals() {
            let count = frame_count(&wal);
            let page_size = page_size_of(&wal);
            let end = wal.len();
            let size = (FH + page_size) as u64;
            // A few bytes: a truncated frame.
            let mut bad = wal.clone();
            bad.extend_from_slice(&[0xAA; 10]);
            expect_fault(
                &bad,
                Some(count + 1),
                end,
                FaultKind::FrameTruncated { have: 10, size },
            );
            // Zeros: the salt does not match.
            let mut bad = wal.clone();
            bad.resize(end + FH + page_size, 0);
            expect_fault(&bad, Some(count + 1), end, FaultKind::SaltMismatch);
            // The last frame again: right salt, but the checksum chain does not match.
            let mut bad = wal.clone();
            bad.extend_from_slice(&wal[frame_offset(&wal, count)..]);
            expect_fault(&bad, Some(count + 1), end, FaultKind::ChecksumMismatch);
            // A valid frame that is not a commit frame after the last commit.
            let n = (1..count).find(|&n| !is_commit(&wal, n)).unwrap();
            let mut bad = wal.clone();
            bad.extend_from_slice(&wal[frame_offset(&wal, n)..frame_offset(&wal, n + 1)]);
            rechecksum(&mut bad, is_big_endian(&wal));
            expect_fault(&bad, Some(count + 1), end, FaultKind::NoCommit);
        }
    }

    #[test]
    fn bad_magic() {
        for (_, wal) in all_wals() {
            for magic in [0x1234_5678, 0x377f_0684, 0x377f_0602, 0, 0x8306_7f37] {
                let mut bad = wal.clone();
                put32(&mut bad, 0, magic);
                let fault = expect_fault(&bad, None, 0, FaultKind::BadMagic(magic));
                assert_eq!(
                    fault.to_string(),
                    format!("wal header: bad magic {magic:#010x}")
                );
                assert_eq!(fault_point(&bad), Some(WAL_HEADER_SIZE));
            }
        }
        let mut bad = sqlite_wal(4096).to_vec();
        put32(&mut bad, 0, 0x1234_5678);
        assert_eq!(
            check(&bad).unwrap_err().to_string(),
            "wal header: bad magic 0x12345678"
        );
    }

    #[test]
    fn bad_version() {
        for (_, wal) in all_wals() {
            for version in [3_007_001, 3_006_999, 0] {
                let mut bad = wal.clone();
                put32(&mut bad, 4, version);
                rechecksum(&mut bad, is_big_endian(&wal));
                let fault = expect_fault(&bad, None, 0, FaultKind::BadVersion(version));
                assert_eq!(
                    fault.to_string(),
                    format!("wal header: unsupported version {version}")
                );
            }
        }
    }

    #[test]
    fn bad_page_size() {
        for (_, wal) in all_wals() {
            for page_size in [1000, 256, 131_072, 0, 1, 65537, 768, 0x8000_0000] {
                let mut bad = wal.clone();
                put32(&mut bad, 8, page_size);
                rechecksum_header(&mut bad, is_big_endian(&wal));
                let fault = expect_fault(&bad, None, 0, FaultKind::BadPageSize(page_size));
                assert_eq!(
                    fault.to_string(),
                    format!("wal header: invalid page size {page_size}")
                );
                assert_eq!(fault_point(&bad), Some(WAL_HEADER_SIZE));
            }
        }
    }

    #[test]
    fn header_checksum_mismatch() {
        for (_, wal) in all_wals() {
            // The checksum itself, the checkpoint sequence, the salts, and the page size (to
            // another valid one) are all covered.
            for byte in [24, 27, 28, 31, 12, 15, 16, 23] {
                let mut bad = wal.clone();
                bad[byte] ^= 0x01;
                let fault = expect_fault(&bad, None, 0, FaultKind::HeaderChecksum);
                assert_eq!(fault.to_string(), "wal header: checksum mismatch");
                assert_eq!(fault_point(&bad), Some(WAL_HEADER_SIZE));
            }
            let mut bad = wal.clone();
            let other = if page_size_of(&wal) == 512 { 1024 } else { 512 };
            put32(&mut bad, 8, other);
            expect_fault(&bad, None, 0, FaultKind::HeaderChecksum);
            // The other byte order's magic without re-encoding.
            let mut bad = wal.clone();
            bad[3] ^= 1;
            expect_fault(&bad, None, 0, FaultKind::HeaderChecksum);
        }
    }

    #[test]
    fn empty_header_only_and_truncated_header() {
        let empty = WalFault {
            frame: None,
            offset: 0,
            kind: FaultKind::Empty,
        };
        assert_eq!(WalChecker::new().finish(), Err(empty.clone()));
        let mut checker = WalChecker::new();
        checker.update(&[]).unwrap();
        assert_eq!(checker.finish(), Err(empty.clone()));
        assert_eq!(empty.to_string(), "wal is empty");

        let wal = sqlite_wal(4096);
        let header_only = expect_fault(
            &wal[..WAL_HEADER_SIZE],
            None,
            WAL_HEADER_SIZE,
            FaultKind::NoCommit,
        );
        assert_eq!(
            header_only.to_string(),
            "wal ends without a commit frame (no frames)"
        );
        for have in [1, 10, 31] {
            let fault = expect_fault(
                &wal[..have],
                None,
                0,
                FaultKind::HeaderTruncated { have: have as u64 },
            );
            assert_eq!(
                fault.to_string(),
                format!("wal header: truncated ({have} of 32 bytes)")
            );
        }
    }

    #[test]
    fn faults_come_as_early_as_certain() {
        let wal = sqlite_wal(4096);
        let page_size = page_size_of(wal);
        let n = frame_count(wal) / 2;
        let at = frame_offset(wal, n);

        // A salt fault: from the update that completes the frame header, before any page data.
        let mut bad = wal.to_vec();
        bad[at + 12] ^= 1;
        assert_eq!(fault_point(&bad), Some(at + FH));
        let mut checker = WalChecker::new();
        checker.update(&bad[..at + FH - 1]).unwrap();
        let fault = checker.update(&bad[at + FH - 1..at + FH]).unwrap_err();
        assert_eq!(fault.frame, Some(n));
        assert_eq!(fault.offset, at as u64);
        assert_eq!(checker.frames(), n - 1);
        // Sticky, and counted.
        assert_eq!(checker.update(&bad[at + FH..]), Err(fault.clone()));
        assert_eq!(checker.finish(), Err(fault.clone()));
        assert_eq!(checker.len(), bad.len() as u64);
        assert_eq!(checker.frames(), n - 1);

        // A page number 0: the same.
        let mut bad = wal.to_vec();
        put32(&mut bad, at, 0);
        rechecksum(&mut bad, is_big_endian(wal));
        assert_eq!(fault_point(&bad), Some(at + FH));

        // A checksum fault: from the update that completes the frame.
        let mut bad = wal.to_vec();
        bad[at + FH] ^= 1;
        assert_eq!(fault_point(&bad), Some(at + FH + page_size));
        let mut checker = WalChecker::new();
        checker.update(&bad[..at + FH + page_size - 1]).unwrap();
        assert!(
            checker
                .update(&bad[at + FH + page_size - 1..at + FH + page_size])
                .is_err()
        );

        // A header fault: from the update that completes the header.
        let mut bad = wal.to_vec();
        bad[30] ^= 1;
        let mut checker = WalChecker::new();
        checker.update(&bad[..31]).unwrap();
        assert_eq!(checker.page_size(), None);
        let fault = checker.update(&bad[31..]).unwrap_err();
        assert_eq!(fault.kind, FaultKind::HeaderChecksum);
        assert_eq!(checker.page_size(), None);
        assert_eq!(checker.frames(), 0);
    }

    #[test]
    fn progress_accessors() {
        let wal = sqlite_wal(512);
        let frame = FH + 512;
        let mut checker = WalChecker::new();
        assert!(checker.is_empty());
        assert_eq!(
            (checker.len(), checker.frames(), checker.page_size()),
            (0, 0, None)
        );
        checker.update(&wal[..31]).unwrap();
        assert_eq!(checker.page_size(), None);
        assert!(!checker.is_empty());
        checker.update(&wal[31..32]).unwrap();
        assert_eq!(checker.page_size(), Some(512));
        assert_eq!(checker.finish().unwrap_err().kind, FaultKind::NoCommit);
        for n in 1..=frame_count(wal) {
            let end = frame_offset(wal, n) + frame;
            checker
                .update(&wal[checker.len() as usize..end - 1])
                .unwrap();
            assert_eq!(checker.frames(), n - 1);
            checker.update(&wal[end - 1..end]).unwrap();
            assert_eq!(checker.frames(), n);
            assert_eq!(checker.len(), end as u64);
            assert_eq!(checker.finish().is_ok(), is_commit(wal, n));
        }
        assert_eq!(checker.finish(), Ok(()));
    }

    #[test]
    fn stale_frames_after_a_wal_restart_are_a_fault() {
        // After a complete checkpoint, SQLite's next write starts the WAL over with new
        // salts and leaves the old frames behind it. SQLite reads them as the end of the log;
        // here they are a salt mismatch at the first stale frame.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("stale.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "page_size", 1024).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch("CREATE TABLE t (v BLOB)").unwrap();
        let mut rng = Rng::new(9);
        for _ in 0..10 {
            conn.execute("INSERT INTO t VALUES (?1)", [rng.bytes(3000)])
                .unwrap();
        }
        let wal_path = dir.path().join("stale.db-wal");
        let before = std::fs::read(&wal_path).unwrap();
        assert_eq!(check(&before).err(), None);
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .unwrap();
        conn.execute("INSERT INTO t VALUES (x'01')", []).unwrap();
        let after = std::fs::read(&wal_path).unwrap();
        drop(conn);
        assert_eq!(after.len(), before.len());
        assert_ne!(after[16..24], before[16..24], "the WAL restarted");
        let first_stale = (1..=frame_count(&after))
            .find(|&n| {
                let at = frame_offset(&after, n);
                after[at + 8..at + 16] != after[16..24]
            })
            .unwrap();
        assert!(first_stale > 1 && is_commit(&after, first_stale - 1));
        expect_fault(
            &after,
            Some(first_stale),
            frame_offset(&after, first_stale),
            FaultKind::SaltMismatch,
        );
        // Its valid prefix passes.
        assert_eq!(
            check(&after[..frame_offset(&after, first_stale)]).err(),
            None
        );
    }

    #[test]
    fn display_texts() {
        let fault = |frame, offset, kind| {
            WalFault {
                frame,
                offset,
                kind,
            }
            .to_string()
        };
        let f3 = |kind| fault(Some(3), 8272, kind);
        assert_eq!(
            f3(FaultKind::SaltMismatch),
            "wal frame 3 (byte 8272): salt mismatch"
        );
        assert_eq!(
            f3(FaultKind::ChecksumMismatch),
            "wal frame 3 (byte 8272): checksum mismatch"
        );
        assert_eq!(
            f3(FaultKind::PageNumberZero),
            "wal frame 3 (byte 8272): page number 0"
        );
        assert_eq!(
            fault(
                Some(5),
                16512,
                FaultKind::FrameTruncated {
                    have: 1000,
                    size: 4120
                }
            ),
            "wal frame 5 (byte 16512): truncated (1000 of 4120 bytes)"
        );
        assert_eq!(
            fault(Some(4), 12392, FaultKind::NoCommit),
            "wal ends without a commit frame (last frame 4)"
        );
        assert_eq!(
            fault(None, 0, FaultKind::BadVersion(3_007_001)),
            "wal header: unsupported version 3007001"
        );
        assert_eq!(
            fault(None, 0, FaultKind::BadPageSize(1000)),
            "wal header: invalid page size 1000"
        );
        // Frame 3 of a 4096-byte-page WAL does start at byte 8272.
        let wal = synth_wal(4096, &[true; 3], false, 1);
        assert_eq!(frame_offset(&wal, 3), 8272);
        let err: Box<dyn std::error::Error> = Box::new(WalChecker::new().finish().unwrap_err());
        assert_eq!(err.to_string(), "wal is empty");
    }
}
