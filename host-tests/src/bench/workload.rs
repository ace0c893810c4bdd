//! A workload in memory: the compressed segments of one generation (read from a replica
//! directory before anything is timed), the expected WAL files, and the check of an output
//! directory against them.

use crate::backend::{DirReplica, MemReplica, Replica};
use anyhow::{Context, bail};
use bytes::Bytes;
use futures::TryStreamExt;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// The segments of `generation` from `min_index` to `max_index`, and what each WAL file must
/// hold.
pub struct Workload {
    pub generation: String,
    pub min_index: u64,
    pub max_index: u64,
    /// (index, offset) -> compressed bytes.
    pub segments: BTreeMap<(u64, u64), Bytes>,
    /// index -> the concatenated decompressed segments.
    pub expected: BTreeMap<u64, Vec<u8>>,
}

/// Decodes one LZ4 frame (what the native baseline and the check both use).
pub fn decode_frame(compressed: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(compressed.len() * 3);
    lz4_flex::frame::FrameDecoder::new(compressed).read_to_end(&mut out)?;
    Ok(out)
}

impl Workload {
    /// Reads every segment of `generation` (the replica's only one when `None`) with index in
    /// `min..=max` (defaults: the lowest and highest present) from a replica directory.
    pub async fn load(
        root: &Path,
        generation: Option<&str>,
        min_index: Option<u64>,
        max_index: Option<u64>,
    ) -> anyhow::Result<Workload> {
        let dir = DirReplica::new(root);
        let generation = match generation {
            Some(g) => g.to_owned(),
            None => {
                let generations = dir.generations().await?;
                match generations.as_slice() {
                    [only] => only.clone(),
                    [] => bail!("no generations in replica {}", root.display()),
                    several => bail!(
                        "several generations in replica {}, choose one with --generation: {}",
                        root.display(),
                        several.join(", ")
                    ),
                }
            }
        };
        let listed: Vec<_> = dir
            .list_wal_segments(&generation, min_index.unwrap_or(0))
            .map_ok(|page| {
                futures::stream::iter(page.into_iter().map(Ok::<_, crate::backend::ReplicaError>))
            })
            .try_flatten()
            .try_collect()
            .await
            .with_context(|| format!("listing generation {generation}"))?;
        let (Some(first), Some(last)) = (listed.first(), listed.last()) else {
            bail!("no WAL segments in generation {generation}");
        };
        let min_index = min_index.unwrap_or(first.index);
        let max_index = max_index.unwrap_or(last.index);
        let mut segments = BTreeMap::new();
        let mut expected: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for s in listed.iter().filter(|s| s.index <= max_index) {
            let body: Vec<Bytes> = dir
                .fetch_wal_segment(&generation, s.index, s.offset, 0)
                .await?
                .try_collect()
                .await?;
            let data = Bytes::from(body.concat());
            let wal = expected.entry(s.index).or_default();
            if wal.len() as u64 != s.offset {
                bail!(
                    "replica is not contiguous: index {:x} offset {:x}",
                    s.index,
                    s.offset
                );
            }
            wal.extend_from_slice(
                &decode_frame(&data).with_context(|| {
                    format!("decoding index {:x} offset {:x}", s.index, s.offset)
                })?,
            );
            segments.insert((s.index, s.offset), data);
        }
        for index in min_index..=max_index {
            if !expected.contains_key(&index) {
                bail!("index {index:x} of generation {generation} has no segments");
            }
        }
        Ok(Workload {
            generation,
            min_index,
            max_index,
            segments,
            expected,
        })
    }

    /// A fresh in-memory replica (its own stats) serving these segments, with the given
    /// latencies. Segment bytes are shared, not copied.
    pub fn replica(&self, fetch_latency: Duration, list_latency: Duration) -> MemReplica {
        let replica = MemReplica::new();
        for (&(index, offset), data) in &self.segments {
            replica.insert(&self.generation, index, offset, data.clone());
        }
        replica.set_fetch_latency(fetch_latency);
        replica.set_list_latency(list_latency);
        replica
    }

    /// The largest compressed segment, in bytes.
    pub fn largest_segment(&self) -> u64 {
        self.segments
            .values()
            .map(|d| d.len() as u64)
            .max()
            .unwrap_or(0)
    }

    /// Total decompressed bytes of the WAL files.
    pub fn total_bytes(&self) -> u64 {
        self.expected.values().map(|w| w.len() as u64).sum()
    }

    /// Checks that `files` (index, path) are exactly `min..=max` in order and that each file
    /// holds its expected bytes; the error names the first wrong byte.
    pub fn check(&self, files: &[(u64, std::path::PathBuf)]) -> anyhow::Result<()> {
        let indexes: Vec<u64> = files.iter().map(|(i, _)| *i).collect();
        let want: Vec<u64> = (self.min_index..=self.max_index).collect();
        if indexes != want {
            bail!("files came back as indexes {indexes:x?}, expected {want:x?}");
        }
        for (index, path) in files {
            let got = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let want = &self.expected[index];
            if let Some(at) = got.iter().zip(want.iter()).position(|(a, b)| a != b) {
                bail!(
                    "WRONG BYTE in {} at offset {at}: {:#04x}, expected {:#04x}",
                    path.display(),
                    got[at],
                    want[at]
                );
            }
            if got.len() != want.len() {
                bail!(
                    "WRONG LENGTH of {}: {} bytes, expected {}",
                    path.display(),
                    got.len(),
                    want.len()
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{GENERATION, Shape, generate};

    #[tokio::test]
    async fn the_check_names_a_wrong_byte() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("replica");
        generate(Shape::named("tiny").unwrap(), &root, 7).unwrap();
        let workload = Workload::load(&root, Some(GENERATION), Some(1), Some(2))
            .await
            .unwrap();
        assert_eq!(workload.segments.len(), 6);
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let mut files = Vec::new();
        for (index, wal) in &workload.expected {
            let path = out.join(format!("wal-{index:016x}-wal"));
            std::fs::write(&path, wal).unwrap();
            files.push((*index, path));
        }
        workload.check(&files).unwrap();

        let mut wal = workload.expected[&2].clone();
        wal[5000] ^= 1;
        std::fs::write(&files[1].1, &wal).unwrap();
        let e = workload.check(&files).unwrap_err().to_string();
        assert!(e.contains("WRONG BYTE") && e.contains("offset 5000"), "{e}");

        wal.pop();
        wal[5000] ^= 1;
        std::fs::write(&files[1].1, &wal).unwrap();
        let e = workload.check(&files).unwrap_err().to_string();
        assert!(e.contains("WRONG LENGTH"), "{e}");

        let e = workload.check(&files[..1]).unwrap_err().to_string();
        assert!(e.contains("indexes"), "{e}");
    }
}
