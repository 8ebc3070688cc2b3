//! Steady publish load through the SDK (which retries on another node): one
//! event per call, each due within the next 1.6 s, until stopped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chronos_client::{Client, EventBuilder};
use tokio::task::JoinHandle;

pub struct Load {
    acked: Arc<Mutex<BTreeMap<String, i64>>>,
    latencies: Arc<Mutex<Vec<Duration>>>,
    stop: Arc<AtomicBool>,
    publishers: Vec<JoinHandle<Vec<String>>>,
}

/// What a stopped load published.
pub struct Published {
    /// Acknowledged message ids and their due times.
    pub acked: BTreeMap<String, i64>,
    /// Publish latencies, sorted.
    pub latencies: Vec<Duration>,
    /// Publishes that failed, with their error.
    pub failures: Vec<String>,
}

impl Published {
    /// The acknowledged events, once no publish failed and more than 100 did not.
    pub fn checked(&self) -> &BTreeMap<String, i64> {
        assert!(
            self.failures.is_empty(),
            "publishes failed: {:?}",
            self.failures
        );
        assert!(
            self.acked.len() > 100,
            "only {} publishes",
            self.acked.len()
        );
        &self.acked
    }

    pub fn quantile(&self, f: f64) -> Duration {
        let lat = &self.latencies;
        lat[((lat.len() - 1) as f64 * f) as usize]
    }
}

impl Load {
    /// `publishers` clients publishing to `topic` through `endpoints`.
    pub async fn start(endpoints: &[String], topic: &str, publishers: usize) -> Load {
        let t0 = Instant::now();
        let load = Load {
            acked: Arc::default(),
            latencies: Arc::default(),
            stop: Arc::default(),
            publishers: Vec::new(),
        };
        let mut tasks = Vec::new();
        for p in 0..publishers {
            let client = Client::connect(endpoints.to_vec()).await.expect("connect");
            let (acked, latencies, stop) = (
                load.acked.clone(),
                load.latencies.clone(),
                load.stop.clone(),
            );
            let topic = topic.to_string();
            tasks.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let id = format!("p{p}-{i}");
                    let due = SystemTime::now() + Duration::from_millis((i % 16) * 100);
                    let started = Instant::now();
                    match client
                        .publish(EventBuilder::new(&topic, &id).due_at(due).build())
                        .await
                    {
                        Ok(published) => {
                            let took = started.elapsed();
                            if took > Duration::from_secs(1) {
                                eprintln!(
                                    "slow publish {id}: {took:?}, sent at {:?}, partition {}",
                                    started - t0,
                                    published.partition
                                );
                            }
                            latencies.lock().unwrap().push(took);
                            acked.lock().unwrap().insert(id, published.due_ts);
                        }
                        Err(e) => failures.push(format!("{id} at {:?}: {e}", started - t0)),
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                failures
            }));
        }
        Load {
            publishers: tasks,
            ..load
        }
    }

    pub async fn stop(self) -> Published {
        self.stop.store(true, Ordering::Release);
        let mut failures = Vec::new();
        for p in self.publishers {
            failures.extend(p.await.expect("publisher"));
        }
        let mut latencies = self.latencies.lock().unwrap().clone();
        latencies.sort();
        Published {
            acked: self.acked.lock().unwrap().clone(),
            latencies,
            failures,
        }
    }
}
