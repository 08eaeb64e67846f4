//! The log sink's Kafka, produced to by the native module itself: one
//! idempotent producer per target in the process, on a thread of its own
//! (never a worker's). A batch is written with `acks=all`, one record batch
//! per partition, and tried again with the same producer id and sequence
//! numbers until it is acknowledged or its delivery timeout passes, so a
//! broker that honours idempotence keeps one copy of a batch sent twice.
//! The outcome reaches a [`Mailbox`], whose owner's thread runs it later
//! through Envoy's scheduler.
//!
//! Batches are produced one after the other: the log sink sends one batch
//! at a time per configuration, and one in flight per partition keeps the
//! sequence numbers simple (a broker refuses a sequence out of order).

use crate::mailbox::{log, server_of, Answer, Mailbox, Servers};
use bytes::{Bytes, BytesMut};
use gateway_common::kafka::{Compression, KafkaRecord, KafkaTarget};
use gateway_common::sync::lock;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::{
    produce_request::{PartitionProduceData, TopicProduceData},
    ApiVersionsRequest, ApiVersionsResponse, InitProducerIdRequest, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, ProducerId, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{self, Record, RecordBatchEncoder, RecordEncodeOptions};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How long one request may wait for its answer (the broker's own
/// `timeout_ms` for `acks=all` is a little shorter).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause before a batch is tried again, doubling up to the longest.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(1);
/// The largest answer read from a broker.
const MAX_ANSWER: usize = 16 * 1024 * 1024;
const CLIENT_ID: &str = "envoy-gateway";
/// The most bytes of keys and values in one record batch: below the
/// broker's default `message.max.bytes` (1 MiB) before compression.
const MAX_SHARE_BYTES: usize = 768 * 1024;
/// How long the topic's partitions and leaders are used before they are
/// read again (Kafka's producers: `metadata.max.age.ms`), so partitions
/// added to the topic are used.
const METADATA_MAX_AGE: Duration = Duration::from_secs(300);

/// The versions used: the highest both sides speak, up to these (the ones
/// tested), from these.
const PRODUCE: (i16, i16) = (3, 9);
const METADATA: (i16, i16) = (1, 12);
const INIT_PRODUCER_ID: (i16, i16) = (0, 4);

/// Kafka's error codes the producer tells apart.
mod code {
    pub const NONE: i16 = 0;
    pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
    /// The producer's id or sequence is no longer good: a new id is asked for.
    pub const FOR_A_NEW_ID: [i16; 4] = [
        45, // OUT_OF_ORDER_SEQUENCE_NUMBER
        47, // INVALID_PRODUCER_EPOCH
        59, // UNKNOWN_PRODUCER_ID
        90, // PRODUCER_FENCED
    ];
    /// Worth another try after the cluster's metadata is read again.
    pub const RETRIABLE: [i16; 15] = [
        2,  // CORRUPT_MESSAGE (damaged on the way)
        3,  // UNKNOWN_TOPIC_OR_PARTITION
        5,  // LEADER_NOT_AVAILABLE
        6,  // NOT_LEADER_OR_FOLLOWER
        7,  // REQUEST_TIMED_OUT
        13, // NETWORK_EXCEPTION
        14, // COORDINATOR_LOAD_IN_PROGRESS
        15, // COORDINATOR_NOT_AVAILABLE
        19, // NOT_ENOUGH_REPLICAS
        20, // NOT_ENOUGH_REPLICAS_AFTER_APPEND
        41, // NOT_CONTROLLER
        56, // KAFKA_STORAGE_ERROR
        74, // FENCED_LEADER_EPOCH
        75, // UNKNOWN_LEADER_EPOCH
        89, // THROTTLING_QUOTA_EXCEEDED
    ];
}

/// Produces `records` to `target`'s topic; the outcome reaches `mailbox`
/// with `token` within the target's delivery timeout (after the batches
/// sent before it): a reply once every record is acknowledged or refused
/// for good (its body the number refused, as text), `Late` when no record
/// was acknowledged (nothing written, or not known), `Unsent` when the
/// producer's thread could not be started.
pub(crate) fn send(
    target: &KafkaTarget,
    records: Vec<KafkaRecord>,
    mailbox: &Arc<Mailbox>,
    token: u32,
) {
    let job = Job {
        records,
        deadline: Instant::now() + target.delivery_timeout,
        mailbox: Arc::clone(mailbox),
        token,
    };
    let producer = producer(target);
    let sent = lock(&producer).send(job);
    if let Err(mpsc::SendError(job)) = sent {
        job.mailbox.deliver(job.token, Answer::Unsent);
    }
}

/// One batch on its way.
struct Job {
    records: Vec<KafkaRecord>,
    deadline: Instant,
    mailbox: Arc<Mailbox>,
    token: u32,
}

/// The sending end of a producer's thread (made on first use).
fn producer(target: &KafkaTarget) -> Arc<Mutex<Sender<Job>>> {
    static PRODUCERS: Servers<KafkaTarget, Job> = OnceLock::new();
    server_of(&PRODUCERS, target, "gateway-kafka", |target, jobs| {
        run(target, &jobs)
    })
}

fn run(target: KafkaTarget, jobs: &Receiver<Job>) {
    let mut producer = Producer::new(target.clone());
    while let Ok(job) = jobs.recv() {
        // A panic (none is known) costs the batch and the producer's
        // state, never the thread: every batch sent is answered.
        let produced = panic::catch_unwind(AssertUnwindSafe(|| {
            producer.produce(&job.records, job.deadline)
        }))
        .unwrap_or_else(|_| {
            producer = Producer::new(target.clone());
            Err("the producer panicked; it starts over".to_string())
        });
        let answer = match produced {
            Ok(produced) => {
                if producer.failing {
                    producer.failing = false;
                    log(&format!(
                        "Kafka topic `{}`: batches acknowledged again",
                        producer.target.topic
                    ));
                }
                let refused = match produced {
                    Produced::All => 0,
                    Produced::Refused(records) => records,
                };
                Answer::Reply(refused.to_string().into_bytes())
            }
            Err(error) => {
                if !producer.failing {
                    producer.failing = true;
                    log(&format!(
                        "Kafka topic `{}`: a batch of {} records failed: {error}",
                        producer.target.topic,
                        job.records.len()
                    ));
                }
                Answer::Late
            }
        };
        job.mailbox.deliver(job.token, answer);
    }
}

/// Kafka's default partitioner: a record with a key goes where a Java
/// producer would put it, `murmur2(key) & 0x7fffffff` modulo the partitions.
pub(crate) fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    // Kafka hashes the length as a Java int.
    let mut h = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if let Some(first) = rest.first() {
        h ^= u32::from(*first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

fn partition_of(key: &[u8], partitions: usize) -> usize {
    // `& 0x7fffffff` leaves a non-negative i32, which fits a usize.
    (murmur2(key) & 0x7fff_ffff) as usize % partitions.max(1)
}

/// A request the producer sends, and its answer.
trait Call: Encodable + HeaderVersion {
    const KEY: ApiKey;
    type Answer: Decodable + HeaderVersion;
}

impl Call for ApiVersionsRequest {
    const KEY: ApiKey = ApiKey::ApiVersions;
    type Answer = ApiVersionsResponse;
}

impl Call for MetadataRequest {
    const KEY: ApiKey = ApiKey::Metadata;
    type Answer = MetadataResponse;
}

impl Call for InitProducerIdRequest {
    const KEY: ApiKey = ApiKey::InitProducerId;
    type Answer = kafka_protocol::messages::InitProducerIdResponse;
}

impl Call for ProduceRequest {
    const KEY: ApiKey = ApiKey::Produce;
    type Answer = ProduceResponse;
}

/// What failed this attempt, and whether another may help.
enum Failure {
    /// Another attempt may do (after reading the metadata again).
    Retry(String),
    /// The producer id is no longer good: a new one, then another attempt.
    NewId(String),
    /// No attempt will do (a record too large, no right to the topic…).
    Final(String),
}

impl Failure {
    fn why(&self) -> &str {
        match self {
            Failure::Retry(why) | Failure::NewId(why) | Failure::Final(why) => why,
        }
    }

    /// The failure an error code of Kafka's stands for.
    fn of_code(code: i16, why: String) -> Self {
        if code::FOR_A_NEW_ID.contains(&code) {
            Failure::NewId(why)
        } else if code::RETRIABLE.contains(&code) {
            Failure::Retry(why)
        } else {
            Failure::Final(why)
        }
    }

    /// The graver of two: a final failure ends the batch, a new id comes
    /// before another attempt.
    fn graver(self, other: Failure) -> Failure {
        match (self, other) {
            (Failure::Final(why), _) | (_, Failure::Final(why)) => Failure::Final(why),
            (Failure::NewId(why), _) | (_, Failure::NewId(why)) => Failure::NewId(why),
            (retry, _) => retry,
        }
    }
}

/// The versions both sides speak.
#[derive(Clone, Copy)]
struct Versions {
    produce: i16,
    metadata: i16,
    init_producer_id: i16,
}

/// A run of one partition's records (indices into the batch), encoded with
/// the producer id and sequence numbers it was given, and sent as it is
/// until it is acknowledged (or encoded again for a new id).
struct Share {
    partition: usize,
    records: Vec<usize>,
    encoded: Bytes,
}

/// What became of a batch.
#[derive(Debug, PartialEq, Eq)]
enum Produced {
    /// Every record acknowledged.
    All,
    /// Some acknowledged; these many refused for good (or never sent after
    /// a refusal), so sending the batch again would write the others twice.
    Refused(usize),
}

struct Producer {
    target: KafkaTarget,
    versions: Option<Versions>,
    /// Broker id → `host:port`.
    brokers: HashMap<i32, String>,
    /// Each partition's leader, by partition index.
    leaders: Vec<i32>,
    /// When the leaders were read.
    metadata_read: Option<Instant>,
    connections: HashMap<String, TcpStream>,
    /// The producer id and epoch, once the cluster gave them.
    id: Option<(i64, i16)>,
    /// The next sequence number of each partition, for this id.
    sequences: Vec<i32>,
    /// Where the next batch's records without a key go.
    next_partition: usize,
    correlation: i32,
    /// The batch's delivery deadline: no request waits past it.
    deadline: Instant,
    failing: bool,
}

impl Producer {
    fn new(target: KafkaTarget) -> Self {
        Self {
            target,
            versions: None,
            brokers: HashMap::new(),
            leaders: Vec::new(),
            metadata_read: None,
            connections: HashMap::new(),
            id: None,
            sequences: Vec::new(),
            next_partition: 0,
            correlation: 0,
            deadline: Instant::now(),
            failing: false,
        }
    }

    /// Writes `records` until every share is acknowledged or `deadline`
    /// passes (no request waits past it).
    fn produce(&mut self, records: &[KafkaRecord], deadline: Instant) -> Result<Produced, String> {
        self.deadline = deadline;
        let mut retry = FIRST_RETRY;
        let mut shares: Vec<Share> = Vec::new();
        let mut planned = false;
        let mut acknowledged = 0;
        loop {
            let failure = match self.attempt(records, &mut shares, &mut planned, &mut acknowledged)
            {
                Ok(()) => return Ok(Produced::All),
                Err(failure) => failure,
            };
            if let Failure::Final(why) = &failure {
                // The sequences after a refused share are no longer good.
                self.forget_id();
                if acknowledged > 0 {
                    log(&format!(
                        "Kafka topic `{}`: {} of {} records refused: {why}",
                        self.target.topic,
                        records.len() - acknowledged,
                        records.len()
                    ));
                    return Ok(Produced::Refused(records.len() - acknowledged));
                }
                return Err(why.clone());
            }
            match &failure {
                // The shares not acknowledged are encoded again for the
                // new id, to the same partitions (one the broker had kept
                // under the old id is then written twice: it cannot tell).
                Failure::NewId(_) => {
                    self.forget_id();
                    planned = false;
                }
                _ => self.forget_cluster(),
            }
            if Instant::now() + retry >= deadline {
                // What the last attempt wrote is unknown: the sequences
                // start over with a new id.
                self.forget_id();
                return Err(format!(
                    "not acknowledged within the delivery timeout ({})",
                    failure.why()
                ));
            }
            thread::sleep(retry);
            retry = (retry * 2).min(LONGEST_RETRY);
        }
    }

    /// One attempt: the metadata and producer id when missing or old, the
    /// shares when not made yet (for this id), then the shares in rounds.
    fn attempt(
        &mut self,
        records: &[KafkaRecord],
        shares: &mut Vec<Share>,
        planned: &mut bool,
        acknowledged: &mut usize,
    ) -> Result<(), Failure> {
        let stale = self
            .metadata_read
            .is_none_or(|read| read.elapsed() >= METADATA_MAX_AGE);
        if self.leaders.is_empty() || stale {
            self.read_metadata()?;
        }
        if self.id.is_none() {
            self.init_producer_id()?;
        }
        if !*planned {
            if shares.is_empty() && *acknowledged == 0 {
                *shares = self.plan(records)?;
            } else {
                self.encode_again(records, shares)?;
            }
            *planned = true;
        }
        // A request carries one share per partition, and a partition's
        // shares go in order.
        while !shares.is_empty() {
            let mut by_leader: HashMap<i32, Vec<usize>> = HashMap::new();
            let mut in_round = Vec::new();
            for (at, share) in shares.iter().enumerate() {
                if !in_round.contains(&share.partition) {
                    in_round.push(share.partition);
                    let leader = self.leaders.get(share.partition).copied().unwrap_or(-1);
                    by_leader.entry(leader).or_default().push(at);
                }
            }
            let mut done = vec![false; shares.len()];
            let mut failure: Option<Failure> = None;
            for (leader, members) in by_leader {
                let (acked, failed) = self.produce_to(leader, shares, &members);
                for at in acked {
                    done[at] = true;
                    *acknowledged += shares[at].records.len();
                }
                if let Some(failed) = failed {
                    failure = Some(match failure {
                        Some(earlier) => earlier.graver(failed),
                        None => failed,
                    });
                }
            }
            let mut at = 0;
            shares.retain(|_| {
                at += 1;
                !done[at - 1]
            });
            if let Some(failure) = failure {
                return Err(failure);
            }
        }
        Ok(())
    }

    /// Splits `records` by partition into runs and encodes each.
    fn plan(&mut self, records: &[KafkaRecord]) -> Result<Vec<Share>, Failure> {
        let partitions = self.leaders.len();
        // Records without a key go to the next partition with a leader.
        let keyless = (0..partitions)
            .map(|step| (self.next_partition + step) % partitions.max(1))
            .find(|partition| {
                self.leaders
                    .get(*partition)
                    .is_some_and(|leader| *leader >= 0)
            })
            .unwrap_or(0);
        self.next_partition = keyless.wrapping_add(1);
        let mut by_partition: Vec<Vec<usize>> = vec![Vec::new(); partitions];
        for (at, record) in records.iter().enumerate() {
            let partition = match &record.key {
                Some(key) => partition_of(key, partitions),
                None => keyless,
            };
            by_partition[partition].push(at);
        }
        let mut shares = Vec::new();
        for (partition, members) in by_partition.into_iter().enumerate() {
            for run in runs_within(records, members, MAX_SHARE_BYTES) {
                shares.push(Share {
                    partition,
                    records: run,
                    encoded: Bytes::new(),
                });
            }
        }
        self.encode_again(records, &mut shares)?;
        Ok(shares)
    }

    /// Encodes `shares` with the current id and the next sequence numbers
    /// of their partitions, cutting a run where its sequences would wrap
    /// (a record batch's sequences cannot).
    fn encode_again(
        &mut self,
        records: &[KafkaRecord],
        shares: &mut Vec<Share>,
    ) -> Result<(), Failure> {
        let (producer_id, epoch) = self
            .id
            .ok_or_else(|| Failure::NewId("no producer id".into()))?;
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        let compression = match self.target.compression {
            Compression::None => records::Compression::None,
            Compression::Gzip => records::Compression::Gzip,
        };
        let mut encoded = Vec::with_capacity(shares.len());
        for share in shares.drain(..) {
            let mut rest: &[usize] = &share.records;
            while !rest.is_empty() {
                let first = self
                    .sequences
                    .get(share.partition)
                    .copied()
                    .ok_or_else(|| Failure::Retry("a partition the metadata lacks".into()))?;
                let room = usize::try_from(i64::from(i32::MAX) - i64::from(first) + 1)
                    .unwrap_or(usize::MAX);
                let (run, after) = rest.split_at(rest.len().min(room));
                rest = after;
                let count = i32::try_from(run.len()).unwrap_or(i32::MAX);
                self.sequences[share.partition] = wrapping_sequence(first, count);
                let batch: Vec<Record> = run
                    .iter()
                    .enumerate()
                    .map(|(i, at)| {
                        let record = &records[*at];
                        let offset = i32::try_from(i).unwrap_or(i32::MAX);
                        Record {
                            transactional: false,
                            control: false,
                            delete_horizon: false,
                            partition_leader_epoch: records::NO_PARTITION_LEADER_EPOCH,
                            producer_id,
                            producer_epoch: epoch,
                            timestamp_type: records::TimestampType::Creation,
                            offset: i64::from(offset),
                            sequence: first + offset,
                            timestamp,
                            key: record.key.clone().map(Bytes::from),
                            value: Some(Bytes::from(record.value.clone())),
                            headers: Default::default(),
                        }
                    })
                    .collect();
                let mut bytes = BytesMut::new();
                RecordBatchEncoder::encode(
                    &mut bytes,
                    &batch,
                    &RecordEncodeOptions {
                        version: 2,
                        compression,
                    },
                )
                .map_err(|error| Failure::Final(format!("cannot encode the batch: {error}")))?;
                encoded.push(Share {
                    partition: share.partition,
                    records: run.to_vec(),
                    encoded: bytes.freeze(),
                });
            }
        }
        *shares = encoded;
        Ok(())
    }

    /// Sends the shares `members` to their leader in one request: those
    /// acknowledged, and the failure of the others (of them all when the
    /// request got no answer).
    fn produce_to(
        &mut self,
        leader: i32,
        shares: &[Share],
        members: &[usize],
    ) -> (Vec<usize>, Option<Failure>) {
        let Some(address) = self.brokers.get(&leader).cloned() else {
            return (
                Vec::new(),
                Some(Failure::Retry(format!("no leader known (broker {leader})"))),
            );
        };
        let version = match self.versions() {
            Ok(versions) => versions.produce,
            Err(failure) => return (Vec::new(), Some(failure)),
        };
        let partition_data = members
            .iter()
            .map(|at| {
                let share = &shares[*at];
                PartitionProduceData::default()
                    .with_index(i32::try_from(share.partition).unwrap_or(i32::MAX))
                    .with_records(Some(share.encoded.clone()))
            })
            .collect();
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(i32::try_from(REQUEST_TIMEOUT.as_millis() * 4 / 5).unwrap_or(4_000))
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(self.target.topic.clone())))
                .with_partition_data(partition_data)]);
        let response: ProduceResponse = match self.call(&address, request, version) {
            Ok(response) => response,
            Err(failure) => return (Vec::new(), Some(failure)),
        };
        let mut acknowledged = Vec::new();
        let mut failure: Option<Failure> = None;
        for at in members {
            let partition = i32::try_from(shares[*at].partition).unwrap_or(i32::MAX);
            let answer = response
                .responses
                .iter()
                .flat_map(|topic| &topic.partition_responses)
                .find(|answer| answer.index == partition);
            let this = match answer {
                None => Failure::Retry(format!("partition {partition} not answered")),
                Some(answer) if answer.error_code == code::NONE => {
                    acknowledged.push(*at);
                    continue;
                }
                // A copy the broker kept already (an answer that was lost).
                Some(answer) if answer.error_code == code::DUPLICATE_SEQUENCE_NUMBER => {
                    acknowledged.push(*at);
                    continue;
                }
                Some(answer) => Failure::of_code(
                    answer.error_code,
                    format!(
                        "partition {partition}: error {}{}",
                        answer.error_code,
                        answer
                            .error_message
                            .as_ref()
                            .map(|message| format!(" ({})", message.as_str()))
                            .unwrap_or_default()
                    ),
                ),
            };
            failure = Some(match failure {
                Some(earlier) => earlier.graver(this),
                None => this,
            });
        }
        (acknowledged, failure)
    }

    fn versions(&self) -> Result<Versions, Failure> {
        self.versions
            .ok_or_else(|| Failure::Retry("the broker's versions are not known yet".into()))
    }

    /// Asks the brokers in turn for the versions they speak and the
    /// topic's partitions and leaders.
    fn read_metadata(&mut self) -> Result<(), Failure> {
        let mut failures = Vec::new();
        let bootstrap = self.target.brokers.clone();
        for broker in &bootstrap {
            match self.metadata_from(broker) {
                Ok(()) => return Ok(()),
                Err(Failure::Final(why)) => return Err(Failure::Final(why)),
                Err(failure) => {
                    self.connections.remove(broker);
                    failures.push(format!("{broker}: {}", failure.why()));
                }
            }
        }
        Err(Failure::Retry(format!(
            "no broker gave the topic's metadata ({})",
            failures.join("; ")
        )))
    }

    fn metadata_from(&mut self, broker: &str) -> Result<(), Failure> {
        self.versions = Some(self.negotiate(broker)?);
        let versions = self.versions()?;
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(
                        self.target.topic.clone(),
                    )))),
            ]))
            .with_allow_auto_topic_creation(true);
        let response: MetadataResponse = self.call(broker, request, versions.metadata)?;
        let topic = response
            .topics
            .iter()
            .find(|topic| {
                topic
                    .name
                    .as_ref()
                    .is_some_and(|name| name.0.as_str() == self.target.topic)
            })
            .ok_or_else(|| Failure::Retry("the topic is not in the answer".into()))?;
        if topic.error_code != code::NONE {
            let why = format!("topic error {}", topic.error_code);
            return Err(match Failure::of_code(topic.error_code, why) {
                Failure::NewId(why) => Failure::Final(why),
                other => other,
            });
        }
        let partitions = topic.partitions.len();
        if partitions == 0 {
            return Err(Failure::Retry("the topic has no partitions yet".into()));
        }
        let mut leaders = vec![-1; partitions];
        for partition in &topic.partitions {
            let index = usize::try_from(partition.partition_index).ok();
            if let Some(slot) = index.and_then(|index| leaders.get_mut(index)) {
                *slot = partition.leader_id.0;
            }
        }
        self.brokers = response
            .brokers
            .iter()
            .map(|broker| {
                let host = broker.host.as_str();
                let address = if host.contains(':') {
                    format!("[{host}]:{}", broker.port)
                } else {
                    format!("{host}:{}", broker.port)
                };
                (broker.node_id.0, address)
            })
            .collect();
        if self.sequences.len() < partitions {
            // New partitions start at 0 for this id.
            self.sequences.resize(partitions, 0);
        }
        self.leaders = leaders;
        self.metadata_read = Some(Instant::now());
        Ok(())
    }

    /// The versions `broker` speaks of the three requests used.
    fn negotiate(&mut self, broker: &str) -> Result<Versions, Failure> {
        let response: ApiVersionsResponse = self.call(broker, ApiVersionsRequest::default(), 0)?;
        if response.error_code != code::NONE {
            return Err(Failure::Retry(format!(
                "ApiVersions error {}",
                response.error_code
            )));
        }
        let pick = |key: ApiKey, (lowest, highest): (i16, i16)| {
            let range = response
                .api_keys
                .iter()
                .find(|api| api.api_key == key as i16);
            match range {
                Some(api) if api.max_version >= lowest && api.min_version <= highest => {
                    Ok(api.max_version.min(highest))
                }
                _ => Err(Failure::Final(format!(
                    "the broker does not speak {key:?} versions {lowest} to {highest}"
                ))),
            }
        };
        Ok(Versions {
            produce: pick(ApiKey::Produce, PRODUCE)?,
            metadata: pick(ApiKey::Metadata, METADATA)?,
            init_producer_id: pick(ApiKey::InitProducerId, INIT_PRODUCER_ID)?,
        })
    }

    /// A producer id and epoch from a broker; every partition's sequence
    /// starts at 0 for it.
    fn init_producer_id(&mut self) -> Result<(), Failure> {
        let versions = self.versions()?;
        let mut brokers: Vec<String> = self.brokers.values().cloned().collect();
        brokers.sort();
        for bootstrap in &self.target.brokers {
            if !brokers.contains(bootstrap) {
                brokers.push(bootstrap.clone());
            }
        }
        let mut failures = Vec::new();
        for broker in brokers {
            let request = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(-1)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
            match self.call::<InitProducerIdRequest>(&broker, request, versions.init_producer_id) {
                Ok(response) if response.error_code == code::NONE => {
                    self.id = Some((response.producer_id.0, response.producer_epoch));
                    self.sequences = vec![0; self.leaders.len()];
                    return Ok(());
                }
                // No right to write idempotently (`IdempotentWrite` on the
                // cluster): no other broker will say otherwise.
                Ok(response) if !code::RETRIABLE.contains(&response.error_code) => {
                    return Err(Failure::Final(format!(
                        "{broker}: no producer id: error {}",
                        response.error_code
                    )));
                }
                Ok(response) => failures.push(format!("{broker}: error {}", response.error_code)),
                Err(failure) => {
                    self.connections.remove(&broker);
                    failures.push(format!("{broker}: {}", failure.why()));
                }
            }
        }
        Err(Failure::Retry(format!(
            "no producer id ({})",
            failures.join("; ")
        )))
    }

    /// A new producer id is asked for before the next batch.
    fn forget_id(&mut self) {
        self.id = None;
    }

    /// The versions, leaders and connections are read and made again.
    fn forget_cluster(&mut self) {
        self.versions = None;
        self.leaders.clear();
        self.connections.clear();
    }

    /// The time left before the batch's deadline, at most `bound`.
    fn time_left(&self, bound: Duration) -> Result<Duration, Failure> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Retry("the delivery timeout passed".into()));
        }
        Ok(left.min(bound))
    }

    /// Sends `request` to `broker` (connecting first when needed) and
    /// reads its answer, never past the batch's deadline; a failed
    /// connection is closed.
    fn call<R: Call>(
        &mut self,
        broker: &str,
        request: R,
        version: i16,
    ) -> Result<R::Answer, Failure> {
        self.correlation = self.correlation.wrapping_add(1);
        let correlation = self.correlation;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut body = BytesMut::new();
        let encoded = header
            .encode(&mut body, R::header_version(version))
            .and_then(|()| request.encode(&mut body, version));
        encoded.map_err(|error| Failure::Final(format!("cannot encode a request: {error}")))?;
        let result = self.exchange(broker, &body);
        let mut answer = match result {
            Ok(answer) => answer,
            Err(error) => {
                self.connections.remove(broker);
                return Err(Failure::Retry(format!("{broker}: {error}")));
            }
        };
        let parsed = ResponseHeader::decode(&mut answer, R::Answer::header_version(version))
            .map_err(|error| error.to_string())
            .and_then(|header| {
                if header.correlation_id == correlation {
                    R::Answer::decode(&mut answer, version).map_err(|error| error.to_string())
                } else {
                    Err("the answer of another request".to_string())
                }
            });
        parsed.map_err(|why| {
            self.connections.remove(broker);
            Failure::Retry(format!("{broker}: a bad answer: {why}"))
        })
    }

    /// Writes one request frame and reads one answer frame.
    fn exchange(&mut self, broker: &str, body: &[u8]) -> Result<Bytes, io::Error> {
        let timed_out =
            |failure: Failure| io::Error::new(io::ErrorKind::TimedOut, failure.why().to_string());
        if !self.connections.contains_key(broker) {
            let wait = self.time_left(CONNECT_TIMEOUT).map_err(timed_out)?;
            let stream = connect(broker, wait)?;
            self.connections.insert(broker.to_string(), stream);
        }
        let wait = self.time_left(REQUEST_TIMEOUT).map_err(timed_out)?;
        let stream = self
            .connections
            .get_mut(broker)
            .ok_or_else(|| io::Error::other("no connection"))?;
        // One bound for the whole exchange: each read or write waits at
        // most the time left.
        let until = Instant::now() + wait;
        let length =
            u32::try_from(body.len()).map_err(|_| io::Error::other("request too large"))?;
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&length.to_be_bytes());
        frame.extend_from_slice(body);
        stream.set_write_timeout(Some(wait))?;
        stream.write_all(&frame)?;
        let mut size = [0u8; 4];
        read_until(stream, &mut size, until)?;
        let size = usize::try_from(u32::from_be_bytes(size)).unwrap_or(usize::MAX);
        if size > MAX_ANSWER {
            return Err(io::Error::other(format!("an answer of {size} bytes")));
        }
        let mut answer = vec![0u8; size];
        read_until(stream, &mut answer, until)?;
        Ok(Bytes::from(answer))
    }
}

/// Fills `buffer` from `stream`, failing once `until` passes.
fn read_until(stream: &mut TcpStream, buffer: &mut [u8], until: Instant) -> io::Result<()> {
    let mut filled = 0;
    while filled < buffer.len() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buffer[filled..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// The records `members` (indices into `records`) in runs of at most
/// `bytes` of keys and values (a record larger alone is a run of its own,
/// for the broker to judge).
fn runs_within(records: &[KafkaRecord], members: Vec<usize>, bytes: usize) -> Vec<Vec<usize>> {
    let mut runs: Vec<Vec<usize>> = Vec::new();
    let mut size = 0;
    for at in members {
        let record = &records[at];
        let length = record.value.len() + record.key.as_ref().map_or(0, Vec::len);
        match runs.last_mut() {
            Some(run) if size + length <= bytes => {
                run.push(at);
                size += length;
            }
            _ => {
                runs.push(vec![at]);
                size = length;
            }
        }
    }
    runs
}

/// `first + offset` as Kafka's sequences count: past i32::MAX, from 0.
fn wrapping_sequence(first: i32, offset: i32) -> i32 {
    let next = i64::from(first) + i64::from(offset);
    i32::try_from(next % (i64::from(i32::MAX) + 1)).unwrap_or(0)
}

fn connect(address: &str, wait: Duration) -> io::Result<TcpStream> {
    let socket = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
    let stream = TcpStream::connect_timeout(&socket, wait)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_as_kafka_s_default_partitioner() {
        // Kafka's own test vectors (UtilsTest.testMurmur2).
        for (key, hash) in [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ] {
            assert_eq!(murmur2(key.as_bytes()), hash, "{key}");
        }
        assert_eq!(partition_of(b"abc", 3), 479_470_107 % 3);
        assert!((0..1000).all(|n: i32| partition_of(n.to_string().as_bytes(), 7) < 7));
    }

    #[test]
    fn a_partition_s_records_go_in_runs_below_the_broker_s_batch_limit() {
        let record = |size: usize| KafkaRecord {
            key: Some(vec![b'k'; 10]),
            value: vec![b'v'; size - 10],
        };
        let records = [
            record(400),
            record(400),
            record(300),
            record(2_000),
            record(100),
        ];
        let runs = runs_within(&records, (0..records.len()).collect(), 1_000);
        assert_eq!(
            runs,
            vec![vec![0, 1], vec![2], vec![3], vec![4]],
            "400+400 | 300 | 2000 alone | 100"
        );
    }

    // ---- a broker scripted from the producer's side ----

    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{BrokerId, InitProducerIdResponse};
    use kafka_protocol::protocol::decode_request_header_from_buffer;
    use kafka_protocol::records::RecordBatchDecoder;
    use std::net::TcpListener;

    /// What the broker does with a partition's record batch.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Reaction {
        /// Keeps it (0) or refuses it with this error code.
        Answer(i16),
        /// Keeps it and closes the connection without an answer.
        LoseTheAnswer,
    }

    /// A record batch the broker got: (leader, partition, producer id,
    /// first sequence, records).
    type Received = (i32, i32, i64, i32, i32);

    type Script = Box<dyn FnMut(i32, usize) -> Reaction + Send>;

    struct Fake {
        script: Script,
        received: Vec<Received>,
        producer_ids: i64,
        /// Partition → its leader (-1: none).
        leaders: Vec<i32>,
    }

    /// Two brokers (ids 1 and 2) on their own ports, one state; the topic's
    /// partition `i` is led by `leaders[i]`.
    struct FakeCluster {
        ports: Vec<u16>,
        state: Arc<Mutex<Fake>>,
    }

    impl FakeCluster {
        fn start(leaders: Vec<i32>, script: Script) -> Self {
            let state = Arc::new(Mutex::new(Fake {
                script,
                received: Vec::new(),
                producer_ids: 100,
                leaders,
            }));
            let listeners: Vec<TcpListener> = (0..2)
                .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
                .collect();
            let ports: Vec<u16> = listeners
                .iter()
                .map(|listener| listener.local_addr().expect("address").port())
                .collect();
            for (at, listener) in listeners.into_iter().enumerate() {
                let (state, ports) = (Arc::clone(&state), ports.clone());
                let id = at as i32 + 1;
                thread::spawn(move || {
                    for stream in listener.incoming().flatten() {
                        let (state, ports) = (Arc::clone(&state), ports.clone());
                        thread::spawn(move || serve(stream, id, &state, &ports));
                    }
                });
            }
            Self { ports, state }
        }

        fn target(&self) -> KafkaTarget {
            KafkaTarget::compile(
                &[format!("127.0.0.1:{}", self.ports[0])],
                "calls",
                Compression::None,
                Some(10_000),
            )
            .expect("target")
        }

        fn received(&self) -> Vec<Received> {
            self.state.lock().expect("fake").received.clone()
        }

        fn producer_ids_given(&self) -> i64 {
            self.state.lock().expect("fake").producer_ids - 100
        }
    }

    fn serve(mut stream: TcpStream, id: i32, state: &Mutex<Fake>, ports: &[u16]) {
        loop {
            let mut size = [0u8; 4];
            if stream.read_exact(&mut size).is_err() {
                return;
            }
            let mut frame = vec![0u8; u32::from_be_bytes(size) as usize];
            if stream.read_exact(&mut frame).is_err() {
                return;
            }
            let mut frame = Bytes::from(frame);
            let header = decode_request_header_from_buffer(&mut frame).expect("header");
            let version = header.request_api_version;
            let mut out = BytesMut::new();
            let key = ApiKey::try_from(header.request_api_key).expect("key");
            let answer_header = kafka_protocol::messages::ResponseHeader::default()
                .with_correlation_id(header.correlation_id);
            match key {
                ApiKey::ApiVersions => {
                    let answer = ApiVersionsResponse::default().with_api_keys(vec![
                        ApiVersion::default()
                            .with_api_key(0)
                            .with_min_version(3)
                            .with_max_version(9),
                        ApiVersion::default()
                            .with_api_key(3)
                            .with_min_version(1)
                            .with_max_version(12),
                        ApiVersion::default()
                            .with_api_key(22)
                            .with_min_version(0)
                            .with_max_version(4),
                    ]);
                    answer_header
                        .encode(&mut out, ApiVersionsResponse::header_version(version))
                        .expect("h");
                    answer.encode(&mut out, version).expect("encode");
                }
                ApiKey::Metadata => {
                    let leaders = state.lock().expect("fake").leaders.clone();
                    let answer = MetadataResponse::default()
                        .with_brokers(
                            ports
                                .iter()
                                .enumerate()
                                .map(|(at, port)| {
                                    MetadataResponseBroker::default()
                                        .with_node_id(BrokerId(at as i32 + 1))
                                        .with_host(StrBytes::from_static_str("127.0.0.1"))
                                        .with_port(i32::from(*port))
                                })
                                .collect(),
                        )
                        .with_topics(vec![MetadataResponseTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_static_str("calls"))))
                            .with_partitions(
                                leaders
                                    .iter()
                                    .enumerate()
                                    .map(|(at, leader)| {
                                        MetadataResponsePartition::default()
                                            .with_partition_index(at as i32)
                                            .with_leader_id(BrokerId(*leader))
                                    })
                                    .collect(),
                            )]);
                    answer_header
                        .encode(&mut out, MetadataResponse::header_version(version))
                        .expect("h");
                    answer.encode(&mut out, version).expect("encode");
                }
                ApiKey::InitProducerId => {
                    let mut fake = state.lock().expect("fake");
                    let answer = InitProducerIdResponse::default()
                        .with_producer_id(ProducerId(fake.producer_ids))
                        .with_producer_epoch(0);
                    fake.producer_ids += 1;
                    answer_header
                        .encode(&mut out, InitProducerIdResponse::header_version(version))
                        .expect("h");
                    answer.encode(&mut out, version).expect("encode");
                }
                ApiKey::Produce => {
                    let request = ProduceRequest::decode(&mut frame, version).expect("produce");
                    let mut lose = false;
                    let mut partitions = Vec::new();
                    let mut fake = state.lock().expect("fake");
                    for topic in &request.topic_data {
                        for data in &topic.partition_data {
                            let mut records = data.records.clone().expect("records");
                            let batches =
                                RecordBatchDecoder::decode_batch_info(&mut records).expect("batch");
                            assert_eq!(batches.len(), 1, "one record batch per partition");
                            let batch = &batches[0];
                            let nth = fake.received.iter().filter(|r| r.1 == data.index).count();
                            fake.received.push((
                                id,
                                data.index,
                                batch.producer_id,
                                batch.base_sequence,
                                batch.record_count,
                            ));
                            let reaction = (fake.script)(data.index, nth);
                            let code = match reaction {
                                Reaction::Answer(code) => code,
                                Reaction::LoseTheAnswer => {
                                    lose = true;
                                    0
                                }
                            };
                            partitions.push(
                                PartitionProduceResponse::default()
                                    .with_index(data.index)
                                    .with_error_code(code),
                            );
                        }
                    }
                    drop(fake);
                    if lose {
                        return;
                    }
                    let answer = ProduceResponse::default().with_responses(vec![
                        TopicProduceResponse::default()
                            .with_name(TopicName(StrBytes::from_static_str("calls")))
                            .with_partition_responses(partitions),
                    ]);
                    answer_header
                        .encode(&mut out, ProduceResponse::header_version(version))
                        .expect("h");
                    answer.encode(&mut out, version).expect("encode");
                }
                other => panic!("unexpected request {other:?}"),
            }
            let mut framed = (out.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(&out);
            if stream.write_all(&framed).is_err() {
                return;
            }
        }
    }

    /// `n` records whose keys go to `partition` of 2.
    fn keyed(partition: usize, n: usize) -> Vec<KafkaRecord> {
        (0..)
            .map(|i: usize| format!("key-{i}"))
            .filter(|key| partition_of(key.as_bytes(), 2) == partition)
            .take(n)
            .map(|key| KafkaRecord {
                value: format!("value of {key}").into_bytes(),
                key: Some(key.into_bytes()),
            })
            .collect()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn each_partition_goes_to_its_own_leader_and_sequences_follow_on() {
        let cluster = FakeCluster::start(vec![1, 2], Box::new(|_, _| Reaction::Answer(0)));
        let mut producer = Producer::new(cluster.target());
        let mut batch = keyed(0, 3);
        batch.extend(keyed(1, 2));
        assert_eq!(producer.produce(&batch, soon()), Ok(Produced::All));
        assert_eq!(producer.produce(&keyed(1, 4), soon()), Ok(Produced::All));
        let mut received = cluster.received();
        received.sort();
        assert_eq!(
            received,
            vec![(1, 0, 100, 0, 3), (2, 1, 100, 0, 2), (2, 1, 100, 2, 4)],
            "(leader, partition, producer id, first sequence, records)"
        );
    }

    #[test]
    fn a_lost_answer_sends_the_share_again_with_its_id_and_sequences() {
        let cluster = FakeCluster::start(
            vec![1, 2],
            Box::new(|partition, nth| match (partition, nth) {
                (0, 0) => Reaction::LoseTheAnswer,
                // What a broker honouring idempotence answers the copy.
                (0, 1) => Reaction::Answer(code::DUPLICATE_SEQUENCE_NUMBER),
                _ => Reaction::Answer(0),
            }),
        );
        let mut producer = Producer::new(cluster.target());
        assert_eq!(producer.produce(&keyed(0, 5), soon()), Ok(Produced::All));
        let received = cluster.received();
        assert_eq!(received, vec![(1, 0, 100, 0, 5), (1, 0, 100, 0, 5)]);
        // The next batch follows on after the copy.
        assert_eq!(producer.produce(&keyed(0, 1), soon()), Ok(Produced::All));
        assert_eq!(cluster.received()[2], (1, 0, 100, 5, 1));
    }

    #[test]
    fn a_new_producer_id_sends_again_only_what_was_not_acknowledged() {
        let cluster = FakeCluster::start(
            vec![1, 2],
            Box::new(|partition, nth| match (partition, nth) {
                // UNKNOWN_PRODUCER_ID once on partition 1.
                (1, 0) => Reaction::Answer(59),
                _ => Reaction::Answer(0),
            }),
        );
        let mut producer = Producer::new(cluster.target());
        let mut batch = keyed(0, 3);
        batch.extend(keyed(1, 2));
        assert_eq!(producer.produce(&batch, soon()), Ok(Produced::All));
        let mut received = cluster.received();
        received.sort();
        assert_eq!(
            received,
            vec![(1, 0, 100, 0, 3), (2, 1, 100, 0, 2), (2, 1, 101, 0, 2)],
            "partition 0 once; partition 1 again under the new id, from 0"
        );
        assert_eq!(cluster.producer_ids_given(), 2);
    }

    #[test]
    fn a_refusal_after_part_was_written_answers_the_rest_as_refused() {
        let cluster = FakeCluster::start(
            vec![1, 2],
            Box::new(|partition, _| match partition {
                // MESSAGE_TOO_LARGE: no attempt will do.
                1 => Reaction::Answer(10),
                _ => Reaction::Answer(0),
            }),
        );
        let mut producer = Producer::new(cluster.target());
        let mut batch = keyed(0, 3);
        batch.extend(keyed(1, 2));
        assert_eq!(producer.produce(&batch, soon()), Ok(Produced::Refused(2)));
        assert_eq!(cluster.received().len(), 2, "nothing sent twice");
        // Refused alone: a failure (nothing was written), and the sequences
        // after it start over under a new id.
        assert!(producer.produce(&keyed(1, 1), soon()).is_err());
        assert_eq!(producer.produce(&keyed(0, 1), soon()), Ok(Produced::All));
        let last = cluster.received().last().copied();
        assert_eq!(last.map(|r| (r.2, r.3)), Some((102, 0)));
    }

    #[test]
    fn a_run_whose_sequences_would_wrap_is_cut_in_two_batches() {
        let cluster = FakeCluster::start(vec![1, 1], Box::new(|_, _| Reaction::Answer(0)));
        let mut producer = Producer::new(cluster.target());
        assert_eq!(producer.produce(&keyed(0, 1), soon()), Ok(Produced::All));
        producer.sequences[0] = i32::MAX - 1;
        assert_eq!(producer.produce(&keyed(0, 5), soon()), Ok(Produced::All));
        assert_eq!(
            cluster.received()[1..].to_vec(),
            vec![(1, 0, 100, i32::MAX - 1, 2), (1, 0, 100, 0, 3)]
        );
    }

    #[test]
    fn records_without_a_key_go_to_a_partition_with_a_leader() {
        let cluster = FakeCluster::start(vec![-1, 2], Box::new(|_, _| Reaction::Answer(0)));
        let mut producer = Producer::new(cluster.target());
        let keyless = vec![
            KafkaRecord {
                key: None,
                value: b"a".to_vec(),
            };
            3
        ];
        for _ in 0..3 {
            assert_eq!(producer.produce(&keyless, soon()), Ok(Produced::All));
        }
        assert!(
            cluster.received().iter().all(|r| r.1 == 1),
            "{:?}",
            cluster.received()
        );
    }

    #[test]
    fn a_broker_that_never_answers_fails_the_batch_at_its_deadline() {
        let port = crate::mailbox::silent_server();
        let target = KafkaTarget::compile(
            &[format!("127.0.0.1:{port}")],
            "calls",
            Compression::None,
            Some(1_000),
        )
        .expect("target");
        let mut producer = Producer::new(target);
        let started = Instant::now();
        let outcome = producer.produce(&keyed(0, 1), started + Duration::from_millis(1_200));
        assert!(outcome.is_err());
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1_500), "{took:?}");
    }

    #[test]
    fn sequences_wrap_as_kafka_s() {
        assert_eq!(wrapping_sequence(5, 3), 8);
        assert_eq!(wrapping_sequence(i32::MAX, 1), 0);
        assert_eq!(wrapping_sequence(i32::MAX - 1, 3), 1);
    }
}
