//! Regenerates the committed sample replica (`host-tests/sample-replica/`) from a real SQLite
//! database:
//!
//! ```sh
//! cargo run --release -p walrestore-host --example make_sample_replica -- host-tests/sample-replica
//! ```
//!
//! One generation, six WAL indexes with 1 to 12 segments each, written in Litestream's layout
//! and LZ4 frame format. SQLite puts a random salt into every WAL header, so each run writes
//! different bytes; the tests only rely on the tree being a valid replica.

#[path = "../tests/common/sqlite_replica.rs"]
mod sqlite_replica;

use std::path::PathBuf;

use sqlite_replica::{FrameStyle, Spec, generate, write_dir_replica};

/// The sample's generation id.
const GENERATION: &str = "5a3c1e0f2b4d6879";

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(root), None) = (args.next(), args.next()) else {
        eprintln!("usage: make_sample_replica <output directory>");
        std::process::exit(2);
    };
    let root = PathBuf::from(root);

    let spec = Spec::new(vec![3, 12, 5, 1, 4, 7], 0x5a3c_1e0f);
    let indexes = generate(&spec);

    // Start from an empty tree so that no segment of an earlier run is left behind.
    let generations = root.join("generations");
    if generations.exists() {
        std::fs::remove_dir_all(&generations).expect("remove the old sample");
    }
    write_dir_replica(&root, GENERATION, &indexes, &FrameStyle::LITESTREAM);

    let segments: usize = indexes.iter().map(|ix| ix.segments.len()).sum();
    let wal_bytes: usize = indexes.iter().map(|ix| ix.wal.len()).sum();
    eprintln!(
        "wrote generation {GENERATION}: {} WAL indexes, {segments} segments, {wal_bytes} WAL bytes, into {}",
        indexes.len(),
        root.display()
    );
}
