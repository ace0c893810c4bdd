//! `DirReplica`: a replica in a local directory, in Litestream's file layout
//! `<root>/generations/<gen>/wal/<index 16 hex>/<offset 16 hex>.wal.lz4`
//! (Litestream's `file_replica_client.go`).

use super::{
    Replica, ReplicaError, SegmentBody, WalSegmentInfo, format_hex16, invalid_generation,
    is_generation_name, parse_hex16,
};
use bytes::BytesMut;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt};
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;

/// Segments per listing page.
const PAGE_SIZE: usize = 1000;
/// Bytes per body chunk: large enough that a segment is a few reads, small enough that many
/// concurrent fetches do not hold much memory.
const CHUNK_SIZE: usize = 256 * 1024;

/// A replica stored in a local directory.
///
/// Only names that parse as 16 lowercase hex digits are ever joined to the root, so a
/// generation sent by the guest cannot name a path outside it; symbolic links are skipped in
/// listings and refused when fetching, so the replica never reads outside its root. Names that
/// do not parse are skipped, as Litestream does.
#[derive(Clone, Debug)]
pub struct DirReplica {
    root: PathBuf,
}

impl DirReplica {
    /// A replica rooted at `root` (the directory that holds `generations/`).
    pub fn new(root: impl Into<PathBuf>) -> DirReplica {
        DirReplica { root: root.into() }
    }

    /// The replica's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Replica for DirReplica {
    fn generations(&self) -> BoxFuture<'static, Result<Vec<String>, ReplicaError>> {
        let root = self.root.clone();
        blocking(move || list_generations(&root)).boxed()
    }

    fn list_wal_segments(
        &self,
        generation: &str,
        min_index: u64,
    ) -> BoxStream<'static, Result<Vec<WalSegmentInfo>, ReplicaError>> {
        if !is_generation_name(generation) {
            return stream::iter([Err(invalid_generation(generation))]).boxed();
        }
        let listing = Listing {
            root: self.root.clone(),
            generation: generation.to_owned(),
            min_index,
            indexes: None,
            buffered: VecDeque::new(),
        };
        // Each page is read on the blocking pool, one index directory at a time, so a large
        // generation is not read into memory all at once.
        stream::unfold(Some(listing), |listing| async move {
            let listing = listing?;
            match tokio::task::spawn_blocking(move || listing.next_page()).await {
                Ok((page, listing)) => match page? {
                    Ok(page) => Some((Ok(page), listing)),
                    Err(e) => Some((Err(e), None)),
                },
                Err(e) => Some((Err(task_failed(e)), None)),
            }
        })
        .boxed()
    }

    fn fetch_wal_segment(
        &self,
        generation: &str,
        index: u64,
        offset: u64,
        start: u64,
    ) -> BoxFuture<'static, Result<SegmentBody, ReplicaError>> {
        if !is_generation_name(generation) {
            let e = invalid_generation(generation);
            return async move { Err(e) }.boxed();
        }
        let root = self.root.clone();
        let components = [
            "generations".to_owned(),
            generation.to_owned(),
            "wal".to_owned(),
            format_hex16(index),
            format!("{}.wal.lz4", format_hex16(offset)),
        ];
        async move {
            let rel = components.join("/");
            let path = {
                let root = root.clone();
                let components = components.clone();
                blocking(move || match check_no_symlinks(&root, &components)? {
                    true => Ok(components.iter().fold(root, |p, c| p.join(c))),
                    false => Err(not_found(&components.join("/"))),
                })
                .await?
            };
            let mut file = open_no_follow(&path).await.map_err(|e| io_error(&rel, e))?;
            if start > 0 {
                use tokio::io::AsyncSeekExt;
                // Past the end is fine: the body is then empty.
                file.seek(std::io::SeekFrom::Start(start))
                    .await
                    .map_err(|e| io_error(&rel, e))?;
            }
            Ok(file_body(file, rel))
        }
        .boxed()
    }
}

/// Streams a file in chunks of `CHUNK_SIZE`; a read error ends the stream after one `Err`.
fn file_body(file: tokio::fs::File, rel: String) -> SegmentBody {
    stream::unfold(Some(file), move |file| {
        let rel = rel.clone();
        async move {
            let mut file = file?;
            let mut buf = BytesMut::with_capacity(CHUNK_SIZE);
            match file.read_buf(&mut buf).await {
                Ok(0) => None,
                Ok(_) => Some((Ok(buf.freeze()), Some(file))),
                Err(e) => Some((Err(io_error(&rel, e)), None)),
            }
        }
    })
    .boxed()
}

/// Opens a file for reading without following a symbolic link in its last component (the
/// directories above it were checked by `check_no_symlinks`).
async fn open_no_follow(path: &Path) -> io::Result<tokio::fs::File> {
    let mut options = tokio::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    options.custom_flags(libc::O_NOFOLLOW);
    options.open(path).await
}

/// A listing in progress: the index directories still to read and the segments read but not
/// yet handed out.
struct Listing {
    root: PathBuf,
    generation: String,
    min_index: u64,
    /// `None` until the wal directory has been read.
    indexes: Option<VecDeque<u64>>,
    buffered: VecDeque<WalSegmentInfo>,
}

impl Listing {
    /// Reads until a page is full or the generation is exhausted. `None` is the end.
    fn next_page(
        mut self,
    ) -> (
        Option<Result<Vec<WalSegmentInfo>, ReplicaError>>,
        Option<Self>,
    ) {
        if self.indexes.is_none() {
            match list_indexes(&self.root, &self.generation, self.min_index) {
                Ok(indexes) => self.indexes = Some(indexes.into()),
                Err(e) => return (Some(Err(e)), None),
            }
        }
        while self.buffered.len() < PAGE_SIZE {
            let Some(index) = self.indexes.as_mut().and_then(VecDeque::pop_front) else {
                break;
            };
            match list_segments(&self.root, &self.generation, index) {
                Ok(segments) => self.buffered.extend(segments),
                Err(e) => return (Some(Err(e)), None),
            }
        }
        if self.buffered.is_empty() {
            return (None, None);
        }
        let n = self.buffered.len().min(PAGE_SIZE);
        let page = self.buffered.drain(..n).collect();
        (Some(Ok(page)), Some(self))
    }
}

/// Generation directories under `<root>/generations`, sorted; none when it is missing.
pub(crate) fn list_generations(root: &Path) -> Result<Vec<String>, ReplicaError> {
    let components = ["generations".to_owned()];
    if !check_no_symlinks(root, &components)? {
        return Ok(Vec::new());
    }
    let mut generations: Vec<String> = read_dir(root, "generations")?
        .into_iter()
        .filter(|(name, kind)| *kind == EntryKind::Dir && is_generation_name(name))
        .map(|(name, _)| name)
        .collect();
    generations.sort();
    Ok(generations)
}

/// WAL indexes >= `min_index` of a generation, sorted; none when the generation or its wal
/// directory is missing.
pub(crate) fn list_indexes(
    root: &Path,
    generation: &str,
    min_index: u64,
) -> Result<Vec<u64>, ReplicaError> {
    if !is_generation_name(generation) {
        return Err(invalid_generation(generation));
    }
    let components = [
        "generations".to_owned(),
        generation.to_owned(),
        "wal".to_owned(),
    ];
    if !check_no_symlinks(root, &components)? {
        return Ok(Vec::new());
    }
    let mut indexes: Vec<u64> = read_dir(root, &components.join("/"))?
        .into_iter()
        .filter(|(_, kind)| *kind == EntryKind::Dir)
        .filter_map(|(name, _)| parse_hex16(&name))
        .filter(|&index| index >= min_index)
        .collect();
    indexes.sort_unstable();
    Ok(indexes)
}

/// The segments of one index, sorted by offset; none when the index directory is missing.
pub(crate) fn list_segments(
    root: &Path,
    generation: &str,
    index: u64,
) -> Result<Vec<WalSegmentInfo>, ReplicaError> {
    let rel = format!("generations/{generation}/wal/{}", format_hex16(index));
    let mut segments = Vec::new();
    let dir = root.join(&rel);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(segments),
        Err(e) => return Err(io_error(&rel, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error(&rel, e))?;
        let Some(offset) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.strip_suffix(".wal.lz4"))
            .and_then(parse_hex16)
        else {
            continue;
        };
        // `DirEntry::metadata` does not follow symbolic links: a link is skipped here.
        let meta = entry.metadata().map_err(|e| io_error(&rel, e))?;
        if !meta.file_type().is_file() {
            continue;
        }
        segments.push(WalSegmentInfo {
            index,
            offset,
            size: meta.len(),
        });
    }
    segments.sort_unstable();
    Ok(segments)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryKind {
    Dir,
    Other,
}

/// Entries of `<root>/<rel>` with their kind, not following symbolic links.
fn read_dir(root: &Path, rel: &str) -> Result<Vec<(String, EntryKind)>, ReplicaError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root.join(rel)).map_err(|e| io_error(rel, e))? {
        let entry = entry.map_err(|e| io_error(rel, e))?;
        let kind = match entry.file_type().map_err(|e| io_error(rel, e))?.is_dir() {
            true => EntryKind::Dir,
            false => EntryKind::Other,
        };
        // Names that are not UTF-8 cannot be 16 hex digits: skip them like other bad names.
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, kind));
        }
    }
    Ok(out)
}

/// Walks `components` below `root` without following links: `Ok(false)` when one is missing,
/// an error when one is a symbolic link (it could lead out of the root).
fn check_no_symlinks(root: &Path, components: &[String]) -> Result<bool, ReplicaError> {
    let mut path = root.to_path_buf();
    for (i, component) in components.iter().enumerate() {
        path.push(component);
        let rel = components[..=i].join("/");
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(ReplicaError::Other(format!(
                    "{rel}: refusing to follow a symbolic link in the replica"
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_error(&rel, e)),
        }
    }
    Ok(true)
}

fn not_found(rel: &str) -> ReplicaError {
    ReplicaError::NotFound(format!("{rel}: no such file or directory"))
}

/// Maps an I/O error on `rel` (a path relative to the root, never an absolute one) to the
/// replica error a caller branches on.
fn io_error(rel: &str, e: io::Error) -> ReplicaError {
    match e.kind() {
        io::ErrorKind::NotFound => not_found(rel),
        io::ErrorKind::TimedOut | io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => {
            ReplicaError::Unavailable(format!("{rel}: {e}"))
        }
        _ => ReplicaError::Other(format!("{rel}: {e}")),
    }
}

/// Runs file-system work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReplicaError> + Send + 'static,
) -> Result<T, ReplicaError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(task_failed(e)))
}

fn task_failed(e: tokio::task::JoinError) -> ReplicaError {
    ReplicaError::Other(format!("replica task failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    const GEN: &str = "0000000000000000";

    pub(crate) fn fixture(name: &str) -> PathBuf {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/litestream/wal-downloader")
            .join(name);
        assert!(
            path.is_dir(),
            "shared fixture {} is missing (expected the Litestream fixtures beside the project)",
            path.display()
        );
        path
    }

    async fn list_all(replica: &DirReplica, generation: &str, min: u64) -> Vec<WalSegmentInfo> {
        replica
            .list_wal_segments(generation, min)
            .try_concat()
            .await
            .unwrap()
    }

    async fn fetch_all(
        replica: &DirReplica,
        generation: &str,
        index: u64,
        offset: u64,
    ) -> Result<Vec<u8>, ReplicaError> {
        let body = replica
            .fetch_wal_segment(generation, index, offset, 0)
            .await?;
        let chunks: Vec<_> = body.try_collect().await?;
        Ok(chunks.concat())
    }

    fn seg(index: u64, offset: u64) -> (u64, u64) {
        (index, offset)
    }

    #[tokio::test]
    async fn lists_the_ok_fixture_in_order_with_sizes() {
        let root = fixture("ok");
        let replica = DirReplica::new(&root);
        assert_eq!(replica.generations().await.unwrap(), vec![GEN.to_owned()]);
        let listed = list_all(&replica, GEN, 0).await;
        let positions: Vec<_> = listed.iter().map(|s| seg(s.index, s.offset)).collect();
        assert_eq!(
            positions,
            vec![
                seg(0, 0),
                seg(0, 0x2050),
                seg(0, 0x3068),
                seg(1, 0),
                seg(2, 0),
                seg(2, 0x1038)
            ]
        );
        for s in &listed {
            let path = root.join(super::super::segment_path(GEN, s.index, s.offset));
            assert_eq!(s.size, std::fs::metadata(path).unwrap().len());
        }
        let from_two: Vec<_> = list_all(&replica, GEN, 2)
            .await
            .iter()
            .map(|s| seg(s.index, s.offset))
            .collect();
        assert_eq!(from_two, vec![seg(2, 0), seg(2, 0x1038)]);
    }

    #[tokio::test]
    async fn fetched_segments_decompress_to_the_expected_wal() {
        let root = fixture("ok");
        let replica = DirReplica::new(&root);
        let mut wal = Vec::new();
        for offset in [0, 0x2050, 0x3068] {
            let compressed = fetch_all(&replica, GEN, 0, offset).await.unwrap();
            let path = root.join(super::super::segment_path(GEN, 0, offset));
            assert_eq!(compressed, std::fs::read(path).unwrap());
            let mut decoder = lz4_flex::frame::FrameDecoder::new(&compressed[..]);
            std::io::copy(&mut decoder, &mut wal).unwrap();
        }
        assert_eq!(
            wal,
            std::fs::read(root.join("0000000000000000.wal")).unwrap()
        );
    }

    #[tokio::test]
    async fn missing_generation_and_segment() {
        let replica = DirReplica::new(fixture("ok"));
        assert!(list_all(&replica, "0000000000000001", 0).await.is_empty());
        let err = fetch_all(&replica, GEN, 0, 0x10).await.unwrap_err();
        assert_eq!(
            err,
            ReplicaError::NotFound(
                "generations/0000000000000000/wal/0000000000000000/0000000000000010.wal.lz4: \
                 no such file or directory"
                    .to_owned()
            )
        );
        // A root without generations/ at all has no generations.
        let empty = tempfile::tempdir().unwrap();
        let replica = DirReplica::new(empty.path());
        assert!(replica.generations().await.unwrap().is_empty());
        assert!(list_all(&replica, GEN, 0).await.is_empty());
    }

    #[tokio::test]
    async fn invalid_generations_are_refused_not_joined() {
        let replica = DirReplica::new(fixture("ok"));
        for bad in [
            "..",
            "../ok/generations/0",
            "",
            "000000000000000G",
            "0000000000000000/",
        ] {
            let err = replica
                .list_wal_segments(bad, 0)
                .try_concat()
                .await
                .unwrap_err();
            assert!(matches!(err, ReplicaError::Other(_)), "{bad:?}: {err:?}");
            assert!(err.message().contains("invalid generation"), "{err}");
            let err = fetch_all(&replica, bad, 0, 0).await.unwrap_err();
            assert!(matches!(err, ReplicaError::Other(_)), "{bad:?}: {err:?}");
        }
    }

    #[tokio::test]
    async fn skips_names_that_do_not_parse() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("generations").join(GEN).join("wal");
        let index = wal.join("0000000000000003");
        std::fs::create_dir_all(&index).unwrap();
        std::fs::create_dir_all(wal.join("not-an-index")).unwrap();
        std::fs::create_dir_all(wal.join("000000000000000A")).unwrap();
        std::fs::write(wal.join("0000000000000004"), b"a file, not an index dir").unwrap();
        std::fs::write(index.join("0000000000000000.wal.lz4"), b"x").unwrap();
        std::fs::write(index.join("0000000000000010.wal.lz4.tmp"), b"x").unwrap();
        std::fs::write(index.join("0000000000000020.wal"), b"x").unwrap();
        std::fs::write(index.join("zz.wal.lz4"), b"x").unwrap();
        std::fs::create_dir(index.join("0000000000000030.wal.lz4")).unwrap();
        std::fs::create_dir_all(dir.path().join("generations").join("not-a-generation")).unwrap();
        let replica = DirReplica::new(dir.path());
        assert_eq!(replica.generations().await.unwrap(), vec![GEN.to_owned()]);
        assert_eq!(
            list_all(&replica, GEN, 0).await,
            vec![WalSegmentInfo {
                index: 3,
                offset: 0,
                size: 1
            }]
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn does_not_follow_symlinks_out_of_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let secret_index = outside.path().join("0000000000000000");
        std::fs::create_dir_all(&secret_index).unwrap();
        std::fs::write(secret_index.join("0000000000000000.wal.lz4"), b"secret").unwrap();

        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("generations").join(GEN).join("wal");
        std::fs::create_dir_all(&wal).unwrap();
        // An index directory that is a link out of the root: not listed, not fetched.
        std::os::unix::fs::symlink(&secret_index, wal.join("0000000000000000")).unwrap();
        // A segment file that is a link out of the root.
        let index1 = wal.join("0000000000000001");
        std::fs::create_dir_all(&index1).unwrap();
        std::os::unix::fs::symlink(
            secret_index.join("0000000000000000.wal.lz4"),
            index1.join("0000000000000000.wal.lz4"),
        )
        .unwrap();
        // A generation that is a link out of the root.
        std::os::unix::fs::symlink(
            outside.path(),
            dir.path().join("generations").join("0000000000000001"),
        )
        .unwrap();

        let replica = DirReplica::new(dir.path());
        assert_eq!(replica.generations().await.unwrap(), vec![GEN.to_owned()]);
        assert!(list_all(&replica, GEN, 0).await.is_empty());
        for (index, offset) in [(0, 0), (1, 0)] {
            let err = fetch_all(&replica, GEN, index, offset).await.unwrap_err();
            assert!(err.message().contains("symbolic link"), "{err}");
        }
        let err = replica
            .list_wal_segments("0000000000000001", 0)
            .try_concat()
            .await
            .unwrap_err();
        assert!(err.message().contains("symbolic link"), "{err}");
    }

    #[tokio::test]
    async fn pages_hold_at_most_a_thousand_segments_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("generations").join(GEN).join("wal");
        // 3 indexes of 700 segments each: pages must split inside an index.
        for index in 0..3u64 {
            let d = wal.join(format_hex16(index));
            std::fs::create_dir_all(&d).unwrap();
            for offset in 0..700u64 {
                std::fs::write(d.join(format!("{}.wal.lz4", format_hex16(offset * 8))), b"")
                    .unwrap();
            }
        }
        let replica = DirReplica::new(dir.path());
        let pages: Vec<Vec<WalSegmentInfo>> = replica
            .list_wal_segments(GEN, 0)
            .try_collect()
            .await
            .unwrap();
        let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1000, 1000, 100]);
        let all: Vec<_> = pages.concat();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
        assert_eq!(all.len(), 2100);
    }
}
