//! Helpers shared by the fuzz targets: a reference SQLite WAL checker written independently of
//! `walrestore::core::wal` (whole file at once, the simplest way), a builder of valid WALs, and
//! an in-memory output directory for the sink.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::rc::Rc;

use arbitrary::Arbitrary;
use walrestore::core::sink::Output;
use walrestore::core::wal::{WalChecker, WalFault};

pub const WAL_HEADER: usize = 32;
pub const FRAME_HEADER: usize = 24;
pub const MAGIC: u32 = 0x377f_0682;
pub const VERSION: u32 = 3_007_000;

pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// SQLite's `walChecksumBytes`, word by word.
pub fn ref_checksum(big_endian: bool, (mut s1, mut s2): (u32, u32), data: &[u8]) -> (u32, u32) {
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

/// A verdict on a whole WAL file, as the checker's `finish` gives it: the fault's frame,
/// offset and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefFault {
    pub frame: Option<u64>,
    pub offset: u64,
    pub text: String,
}

impl From<&WalFault> for RefFault {
    fn from(f: &WalFault) -> RefFault {
        RefFault {
            frame: f.frame,
            offset: f.offset,
            text: f.to_string(),
        }
    }
}

/// The reference verdict on `wal`, and how many bytes must have been fed before the
/// streaming checker can be certain of the fault (`None`: only `finish` can tell, as for a
/// truncation or a missing commit frame).
pub fn reference_check(wal: &[u8]) -> Result<(), (RefFault, Option<usize>)> {
    let fault = |frame: Option<u64>, offset: usize, text: String, certain: Option<usize>| {
        Err((
            RefFault {
                frame,
                offset: offset as u64,
                text,
            },
            certain,
        ))
    };
    if wal.is_empty() {
        return fault(None, 0, "wal is empty".into(), None);
    }
    if wal.len() < WAL_HEADER {
        let text = format!("wal header: truncated ({} of 32 bytes)", wal.len());
        return fault(None, 0, text, None);
    }
    let header_fault = |text: String| fault(None, 0, text, Some(WAL_HEADER));
    let magic = be32(wal, 0);
    if magic & !1 != MAGIC {
        return header_fault(format!("wal header: bad magic {magic:#010x}"));
    }
    let version = be32(wal, 4);
    if version != VERSION {
        return header_fault(format!("wal header: unsupported version {version}"));
    }
    let page_size = be32(wal, 8);
    if ![512, 1024, 2048, 4096, 8192, 16384, 32768, 65536].contains(&page_size) {
        return header_fault(format!("wal header: invalid page size {page_size}"));
    }
    let big_endian = magic & 1 == 1;
    let mut sum = ref_checksum(big_endian, (0, 0), &wal[..24]);
    if sum != (be32(wal, 24), be32(wal, 28)) {
        return header_fault("wal header: checksum mismatch".into());
    }
    let salt = &wal[16..24];
    let frame_size = FRAME_HEADER + page_size as usize;
    let mut off = WAL_HEADER;
    let mut frames = 0u64;
    let mut last_commit = false;
    while off < wal.len() {
        let n = frames + 1;
        let rest = wal.len() - off;
        let frame_text = |what: &str| format!("wal frame {n} (byte {off}): {what}");
        if rest < FRAME_HEADER {
            let text = frame_text(&format!("truncated ({rest} of {frame_size} bytes)"));
            return fault(Some(n), off, text, None);
        }
        let header = &wal[off..off + FRAME_HEADER];
        if &header[8..16] != salt {
            let certain = Some(off + FRAME_HEADER);
            return fault(Some(n), off, frame_text("salt mismatch"), certain);
        }
        if be32(header, 0) == 0 {
            let certain = Some(off + FRAME_HEADER);
            return fault(Some(n), off, frame_text("page number 0"), certain);
        }
        if rest < frame_size {
            let text = frame_text(&format!("truncated ({rest} of {frame_size} bytes)"));
            return fault(Some(n), off, text, None);
        }
        sum = ref_checksum(big_endian, sum, &header[..8]);
        sum = ref_checksum(big_endian, sum, &wal[off + FRAME_HEADER..off + frame_size]);
        if sum != (be32(header, 16), be32(header, 20)) {
            let certain = Some(off + frame_size);
            return fault(Some(n), off, frame_text("checksum mismatch"), certain);
        }
        frames = n;
        last_commit = be32(header, 4) != 0;
        off += frame_size;
    }
    if frames == 0 {
        let text = "wal ends without a commit frame (no frames)".to_string();
        return fault(None, WAL_HEADER, text, None);
    }
    if !last_commit {
        let text = format!("wal ends without a commit frame (last frame {frames})");
        let at = WAL_HEADER + (frames as usize - 1) * frame_size;
        return fault(Some(frames), at, text, None);
    }
    Ok(())
}

/// Feeds `wal` to a fresh [`WalChecker`] in pieces ending at the (sorted, clamped) `cuts`, and
/// checks each `update` against the reference: it fails exactly once the reference fault is
/// certain, with that fault, and keeps failing with it. Returns the verdict of `finish`.
pub fn check_in_pieces(wal: &[u8], cuts: &[usize]) -> Result<(), RefFault> {
    let reference = reference_check(wal);
    let certain = match &reference {
        Err((_, certain)) => *certain,
        Ok(()) => None,
    };
    let mut checker = WalChecker::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(wal.len())).collect();
    cuts.push(wal.len());
    cuts.sort_unstable();
    let mut at = 0;
    let mut first_fault: Option<RefFault> = None;
    for cut in cuts {
        let result = checker.update(&wal[at..cut]);
        at = cut;
        assert_eq!(checker.len(), at as u64);
        let should_fail = certain.is_some_and(|c| at >= c);
        match (&result, &first_fault) {
            (Ok(()), _) => assert!(!should_fail, "no fault after {at} bytes: {reference:?}"),
            (Err(f), None) => {
                assert!(should_fail, "fault {f} after {at} bytes: {reference:?}");
                let f = RefFault::from(f);
                assert_eq!(Err(&f), reference.as_ref().map_err(|(f, _)| f));
                first_fault = Some(f);
            }
            (Err(f), Some(first)) => assert_eq!(&RefFault::from(f), first, "fault changed"),
        }
    }
    let verdict = checker.finish().map_err(|f| RefFault::from(&f));
    assert_eq!(
        verdict,
        reference.clone().map_err(|(f, _)| f),
        "finish differs from the reference"
    );
    if let Some(first) = first_fault {
        assert_eq!(verdict.as_ref(), Err(&first));
    }
    if verdict.is_ok() {
        let page_size = be32(wal, 8) as usize;
        let frames = (wal.len() - WAL_HEADER) / (FRAME_HEADER + page_size);
        assert_eq!(checker.frames(), frames as u64);
        assert_eq!(checker.page_size(), Some(page_size as u32));
    }
    verdict
}

/// One frame of a WAL to build.
#[derive(Arbitrary, Clone, Debug)]
pub struct FrameSpec {
    pub page_number: u32,
    pub commit: bool,
}

/// A valid WAL to build: header fields, frames (the last is made a commit frame), and a seed
/// for the page contents.
#[derive(Arbitrary, Clone, Debug)]
pub struct WalSpec {
    /// The page size is `512 << (page_size_log % 8)`.
    pub page_size_log: u8,
    pub big_endian: bool,
    pub checkpoint: u32,
    pub salt: [u8; 8],
    pub frames: Vec<FrameSpec>,
    pub page_seed: u64,
    /// Pages are compressible (runs of one byte) rather than random.
    pub compressible: bool,
}

impl WalSpec {
    pub fn page_size(&self) -> usize {
        512 << (self.page_size_log % 8)
    }

    /// The WAL, with at most `max_frames` frames; at least one, the last a commit frame.
    pub fn build(&self, max_frames: usize) -> Vec<u8> {
        let page_size = self.page_size();
        let mut wal = vec![0; WAL_HEADER];
        put32(&mut wal, 4, VERSION);
        put32(&mut wal, 8, page_size as u32);
        put32(&mut wal, 12, self.checkpoint);
        wal[16..24].copy_from_slice(&self.salt);
        let mut rng = self.page_seed | 1;
        let mut frames: Vec<FrameSpec> = self.frames.iter().take(max_frames).cloned().collect();
        if frames.is_empty() {
            frames.push(FrameSpec {
                page_number: 1,
                commit: true,
            });
        }
        if let Some(last) = frames.last_mut() {
            last.commit = true;
        }
        for (i, frame) in frames.iter().enumerate() {
            let mut header = [0; FRAME_HEADER];
            put32(&mut header, 0, frame.page_number.max(1));
            put32(&mut header, 4, if frame.commit { i as u32 + 1 } else { 0 });
            header[8..16].copy_from_slice(&self.salt);
            wal.extend_from_slice(&header);
            let start = wal.len();
            wal.resize(start + page_size, 0);
            for chunk in wal[start..].chunks_mut(if self.compressible { 64 } else { 8 }) {
                // xorshift64
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if self.compressible {
                    chunk.fill(rng as u8 & 3);
                } else {
                    chunk.copy_from_slice(&rng.to_le_bytes()[..chunk.len()]);
                }
            }
        }
        rechecksum(&mut wal, self.big_endian);
        wal
    }
}

/// Sets the magic for `big_endian` and recomputes the header checksum and every complete
/// frame's checksum in chain (salts and everything else untouched).
pub fn rechecksum(wal: &mut [u8], big_endian: bool) {
    if wal.len() < WAL_HEADER {
        return;
    }
    put32(wal, 0, MAGIC | u32::from(big_endian));
    let mut sum = ref_checksum(big_endian, (0, 0), &wal[..24]);
    put32(wal, 24, sum.0);
    put32(wal, 28, sum.1);
    let page_size = be32(wal, 8) as usize;
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return;
    }
    let mut at = WAL_HEADER;
    while at + FRAME_HEADER + page_size <= wal.len() {
        sum = ref_checksum(big_endian, sum, &wal[at..at + 8]);
        sum = ref_checksum(
            big_endian,
            sum,
            &wal[at + FRAME_HEADER..at + FRAME_HEADER + page_size],
        );
        put32(wal, at + 16, sum.0);
        put32(wal, at + 20, sum.1);
        at += FRAME_HEADER + page_size;
    }
}

/// An in-memory output directory; clones share the files.
#[derive(Clone, Debug, Default)]
pub struct MemOutput {
    pub files: Rc<RefCell<BTreeMap<String, Vec<u8>>>>,
    /// Writes fail once this many more bytes have been written (`None`: never).
    pub write_budget: Rc<RefCell<Option<usize>>>,
}

#[derive(Debug)]
pub struct MemFile {
    files: Rc<RefCell<BTreeMap<String, Vec<u8>>>>,
    write_budget: Rc<RefCell<Option<usize>>>,
    name: String,
}

impl Write for MemFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut budget = self.write_budget.borrow_mut();
        let n = match &mut *budget {
            Some(0) if !buf.is_empty() => return Err(io::Error::other("disk full")),
            Some(left) => {
                let n = buf.len().min(*left);
                *left -= n;
                n
            }
            None => buf.len(),
        };
        let mut files = self.files.borrow_mut();
        let file = files
            .get_mut(&self.name)
            .ok_or_else(|| io::Error::other("file removed"))?;
        file.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Output for MemOutput {
    type File = MemFile;

    fn create(&mut self, name: &str) -> io::Result<MemFile> {
        self.files.borrow_mut().insert(name.to_string(), Vec::new());
        Ok(MemFile {
            files: self.files.clone(),
            write_budget: self.write_budget.clone(),
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

/// The listing plan's rules, written plainly (see `walrestore::core::plan::Plan`): which
/// listed segments are taken, in order, and the error a listing gets.
#[derive(Debug)]
pub struct PlanModel {
    pub generation: String,
    pub min: u64,
    pub max: u64,
    /// Segments taken, in order.
    pub accepted: Vec<walrestore::core::plan::SegmentInfo>,
    /// The listing is over (it ended, passed `max`, or failed in `finish`).
    pub complete: bool,
    /// After a relisting, positions up to this one are skipped.
    pub replay_through: Option<(u64, u64)>,
}

impl PlanModel {
    pub fn new(generation: &str, min: u64, max: u64) -> PlanModel {
        PlanModel {
            generation: generation.to_string(),
            min,
            max,
            accepted: Vec::new(),
            complete: false,
            replay_through: None,
        }
    }

    fn last(&self) -> Option<(u64, u64)> {
        self.accepted.last().map(|l| (l.index, l.offset))
    }

    /// The listing ended.
    pub fn finish(&mut self) -> Result<(), walrestore::core::error::Error> {
        use walrestore::core::error::Error;
        self.complete = true;
        let missing = match self.last() {
            None => Some(self.min),
            Some((index, _)) if index < self.max => Some(index + 1),
            Some(_) => None,
        };
        match missing {
            Some(index) => Err(Error::wal_not_found(&self.generation, index)),
            None => Ok(()),
        }
    }

    /// A listing page.
    pub fn page(
        &mut self,
        page: &[walrestore::core::plan::SegmentInfo],
    ) -> Result<(), walrestore::core::error::Error> {
        use walrestore::core::error::Error;
        for s in page {
            if self.complete {
                return Ok(());
            }
            if s.index < self.min {
                continue;
            }
            let position = (s.index, s.offset);
            if let Some(through) = self.replay_through {
                if position <= through {
                    continue;
                }
                self.replay_through = None;
            }
            let last = self.last();
            if last.is_some_and(|last| position <= last) {
                return Err(Error::listing_out_of_order(
                    &self.generation,
                    s.index,
                    s.offset,
                ));
            }
            if s.index > self.max {
                return self.finish();
            }
            let expected = match last {
                None => self.min,
                Some((index, _)) if index == s.index => index,
                Some((index, _)) => index + 1,
            };
            if s.index != expected {
                return Err(Error::wal_not_found(&self.generation, expected));
            }
            self.accepted.push(*s);
        }
        Ok(())
    }

    /// The listing starts again after a failure: from which index.
    pub fn relist_from(&mut self) -> u64 {
        self.replay_through = self.last();
        self.last().map_or(self.min, |(index, _)| index)
    }
}
