//! `LoggingReplica`: a `Replica` that reports, one line each, the failures of another and the
//! retries the component makes (a fetch of a segment already fetched, a listing started
//! again): what `wal-download --verbose` prints.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

use super::{Replica, ReplicaError, SegmentBody, WalSegmentInfo};

/// Where the lines go.
pub type LogLine = Arc<dyn Fn(String) + Send + Sync>;

/// Wraps `inner`, passing each event's line to `log`.
pub struct LoggingReplica {
    inner: Arc<dyn Replica>,
    log: LogLine,
    /// Fetches of each (index, offset) so far, and listings so far.
    fetches: Mutex<HashMap<(u64, u64), u32>>,
    listings: Mutex<u32>,
}

impl LoggingReplica {
    pub fn new(inner: Arc<dyn Replica>, log: LogLine) -> LoggingReplica {
        LoggingReplica {
            inner,
            log,
            fetches: Mutex::new(HashMap::new()),
            listings: Mutex::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Replica for LoggingReplica {
    fn generations(&self) -> BoxFuture<'static, Result<Vec<String>, ReplicaError>> {
        self.inner.generations()
    }

    fn list_wal_segments(
        &self,
        generation: &str,
        min_index: u64,
    ) -> BoxStream<'static, Result<Vec<WalSegmentInfo>, ReplicaError>> {
        let attempt = {
            let mut n = lock(&self.listings);
            *n += 1;
            *n
        };
        if attempt > 1 {
            (self.log)(format!(
                "retry: listing generation {generation} again from index {min_index:016x} \
                 (attempt {attempt})"
            ));
        }
        let log = self.log.clone();
        let generation = generation.to_owned();
        self.inner
            .list_wal_segments(&generation, min_index)
            .inspect(move |page| {
                if let Err(e) = page {
                    log(format!("listing generation {generation} failed: {e}"));
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
        let attempt = {
            let mut fetches = lock(&self.fetches);
            let n = fetches.entry((index, offset)).or_insert(0);
            *n += 1;
            *n
        };
        let at = format!("index={index:016x} offset={offset:016x}");
        if attempt > 1 {
            (self.log)(format!(
                "retry: fetching segment {at} from byte {start} (attempt {attempt})"
            ));
        }
        let log = self.log.clone();
        self.inner
            .fetch_wal_segment(generation, index, offset, start)
            .map(move |result| match result {
                Err(e) => {
                    log(format!("fetch of segment {at} failed: {e}"));
                    Err(e)
                }
                Ok(body) => Ok(body
                    .inspect(move |chunk| {
                        if let Err(e) = chunk {
                            log(format!("stream of segment {at} broke: {e}"));
                        }
                    })
                    .boxed()),
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Fault, MemReplica};

    #[tokio::test]
    async fn reports_failures_and_repeated_fetches() {
        let mem = MemReplica::new();
        mem.insert("0000000000000000", 1, 0, vec![7u8; 100]);
        mem.set_fault(1, 0, Fault::UnavailableTimes(1));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let replica =
            LoggingReplica::new(Arc::new(mem), Arc::new(move |line| lock(&sink).push(line)));
        assert!(
            replica
                .fetch_wal_segment("0000000000000000", 1, 0, 0)
                .await
                .is_err()
        );
        let body = replica
            .fetch_wal_segment("0000000000000000", 1, 0, 40)
            .await
            .unwrap();
        let bytes: Vec<_> = body.collect().await;
        assert_eq!(bytes.len(), 1);
        assert_eq!(
            *lock(&lines),
            [
                "fetch of segment index=0000000000000001 offset=0000000000000000 failed: \
                 injected: unavailable (attempt 1)",
                "retry: fetching segment index=0000000000000001 offset=0000000000000000 from \
                 byte 40 (attempt 2)",
            ]
        );
    }
}
