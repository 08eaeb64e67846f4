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

use crate::mailbox::{Answer, Mailbox};
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
    pub const RETRIABLE: [i16; 13] = [
        3,  // UNKNOWN_TOPIC_OR_PARTITION
        5,  // LEADER_NOT_AVAILABLE
        6,  // NOT_LEADER_OR_FOLLOWER
        7,  // REQUEST_TIMED_OUT
        13, // NETWORK_EXCEPTION
        14, // COORDINATOR_LOAD_IN_PROGRESS
        15, // COORDINATOR_NOT_AVAILABLE
        19, // NOT_ENOUGH_REPLICAS
        20, // NOT_ENOUGH_REPLICAS_AFTER_APPEND
        56, // KAFKA_STORAGE_ERROR
        74, // FENCED_LEADER_EPOCH
        75, // UNKNOWN_LEADER_EPOCH
        89, // THROTTLING_QUOTA_EXCEEDED
    ];
}

/// Produces `records` to `target`'s topic; the outcome reaches `mailbox`
/// with `token` within the target's delivery timeout (and one request's
/// timeout): an empty reply once every record is acknowledged, `Late` when
/// the batch may have been written only in part or not at all, `Unsent`
/// when the producer could not be started.
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
    type Producers = HashMap<KafkaTarget, Arc<Mutex<Sender<Job>>>>;
    static PRODUCERS: OnceLock<Mutex<Producers>> = OnceLock::new();
    let mut producers = lock(PRODUCERS.get_or_init(Default::default));
    if let Some(sender) = producers.get(target) {
        return Arc::clone(sender);
    }
    let (sender, jobs) = mpsc::channel();
    let owned = target.clone();
    let started = thread::Builder::new()
        .name("gateway-kafka".into())
        .spawn(move || run(owned, &jobs));
    if let Err(error) = started {
        log(&format!(
            "cannot start the Kafka producer's thread: {error}"
        ));
    }
    let sender = Arc::new(Mutex::new(sender));
    producers.insert(target.clone(), Arc::clone(&sender));
    sender
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
            Ok(()) => {
                if producer.failing {
                    producer.failing = false;
                    log(&format!(
                        "Kafka topic `{}`: batches acknowledged again",
                        producer.target.topic
                    ));
                }
                Answer::Reply(Vec::new())
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

fn log(message: &str) {
    if cfg!(test) {
        eprintln!("{message}");
    } else {
        crate::envoy::log(
            crate::envoy::level::WARN,
            &format!("native module: {message}"),
        );
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

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        Failure::Retry(error.to_string())
    }
}

/// The versions both sides speak.
#[derive(Clone, Copy)]
struct Versions {
    produce: i16,
    metadata: i16,
    init_producer_id: i16,
}

/// One partition's share of a batch, encoded once with its sequence
/// numbers and sent as it is until it is acknowledged.
struct Share {
    partition: usize,
    encoded: Bytes,
}

struct Producer {
    target: KafkaTarget,
    versions: Option<Versions>,
    /// Broker id → `host:port`.
    brokers: HashMap<i32, String>,
    /// Each partition's leader, by partition index.
    leaders: Vec<i32>,
    connections: HashMap<String, TcpStream>,
    /// The producer id and epoch, once the cluster gave them.
    id: Option<(i64, i16)>,
    /// The next sequence number of each partition, for this id.
    sequences: Vec<i32>,
    /// Where the next batch's records without a key go.
    next_partition: usize,
    correlation: i32,
    failing: bool,
}

impl Producer {
    fn new(target: KafkaTarget) -> Self {
        Self {
            target,
            versions: None,
            brokers: HashMap::new(),
            leaders: Vec::new(),
            connections: HashMap::new(),
            id: None,
            sequences: Vec::new(),
            next_partition: 0,
            correlation: 0,
            failing: false,
        }
    }

    /// Writes `records` until every partition's share is acknowledged or
    /// `deadline` passes.
    fn produce(&mut self, records: &[KafkaRecord], deadline: Instant) -> Result<(), String> {
        let mut retry = FIRST_RETRY;
        let mut shares: Vec<Share> = Vec::new();
        let mut planned = false;
        loop {
            let attempt = self.attempt(records, &mut shares, &mut planned);
            let why = match attempt {
                Ok(()) => return Ok(()),
                Err(Failure::Final(why)) => {
                    self.forget_id();
                    return Err(why);
                }
                Err(Failure::NewId(why)) => {
                    // The shares not acknowledged are encoded again for
                    // the new id (a share the broker kept under the old id
                    // is then written twice: the broker cannot tell).
                    self.forget_id();
                    planned = false;
                    why
                }
                Err(Failure::Retry(why)) => {
                    self.leaders.clear();
                    self.connections.clear();
                    why
                }
            };
            let now = Instant::now();
            if now + retry >= deadline {
                // What was written is unknown: the sequences start over.
                self.forget_id();
                return Err(format!(
                    "not acknowledged within the delivery timeout ({why})"
                ));
            }
            thread::sleep(retry);
            retry = (retry * 2).min(LONGEST_RETRY);
        }
    }

    /// One attempt: the metadata and producer id when missing, the shares
    /// when not made yet, then each leader's shares.
    fn attempt(
        &mut self,
        records: &[KafkaRecord],
        shares: &mut Vec<Share>,
        planned: &mut bool,
    ) -> Result<(), Failure> {
        if self.leaders.is_empty() {
            self.read_metadata()?;
        }
        if self.id.is_none() {
            self.init_producer_id()?;
        }
        if !*planned {
            *shares = self.plan(records)?;
            *planned = true;
        }
        // In rounds: a request carries one share per partition, and a
        // partition's shares go in order.
        while !shares.is_empty() {
            let mut by_leader: HashMap<i32, Vec<usize>> = HashMap::new();
            let mut partitions_in_round = Vec::new();
            for (at, share) in shares.iter().enumerate() {
                if partitions_in_round.contains(&share.partition) {
                    continue;
                }
                partitions_in_round.push(share.partition);
                let leader = self.leaders.get(share.partition).copied().unwrap_or(-1);
                by_leader.entry(leader).or_default().push(at);
            }
            let mut done = vec![false; shares.len()];
            let mut failure = None;
            for (leader, members) in by_leader {
                match self.produce_to(leader, shares, &members) {
                    Ok(()) => members.iter().for_each(|at| done[*at] = true),
                    Err(Failure::Final(why)) => return Err(Failure::Final(why)),
                    Err(other) => failure = failure.or(Some(other)),
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

    /// Splits `records` by partition and encodes each share with its
    /// sequence numbers.
    fn plan(&mut self, records: &[KafkaRecord]) -> Result<Vec<Share>, Failure> {
        let partitions = self.leaders.len();
        let (producer_id, epoch) = self.id.unwrap_or((-1, -1));
        let keyless = self.next_partition % partitions.max(1);
        self.next_partition = self.next_partition.wrapping_add(1);
        let mut by_partition: Vec<Vec<&KafkaRecord>> = vec![Vec::new(); partitions];
        for record in records {
            let partition = match &record.key {
                Some(key) => partition_of(key, partitions),
                None => keyless,
            };
            by_partition[partition].push(record);
        }
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        let compression = match self.target.compression {
            Compression::None => records::Compression::None,
            Compression::Gzip => records::Compression::Gzip,
        };
        let mut shares = Vec::new();
        let runs = by_partition
            .into_iter()
            .enumerate()
            .flat_map(|(partition, members)| {
                runs_within(members, MAX_SHARE_BYTES)
                    .into_iter()
                    .map(move |run| (partition, run))
            });
        for (partition, members) in runs {
            let first = self.sequences[partition];
            let count = i32::try_from(members.len()).unwrap_or(i32::MAX);
            // Sequence numbers wrap at i32::MAX, as Kafka's do.
            self.sequences[partition] = wrapping_sequence(first, count);
            let batch: Vec<Record> = members
                .iter()
                .enumerate()
                .map(|(i, record)| Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: records::NO_PARTITION_LEADER_EPOCH,
                    producer_id,
                    producer_epoch: epoch,
                    timestamp_type: records::TimestampType::Creation,
                    offset: i as i64,
                    sequence: wrapping_sequence(first, i32::try_from(i).unwrap_or(i32::MAX)),
                    timestamp,
                    key: record.key.clone().map(Bytes::from),
                    value: Some(Bytes::from(record.value.clone())),
                    headers: Default::default(),
                })
                .collect();
            let mut encoded = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut encoded,
                &batch,
                &RecordEncodeOptions {
                    version: 2,
                    compression,
                },
            )
            .map_err(|error| Failure::Final(format!("cannot encode the batch: {error}")))?;
            shares.push(Share {
                partition,
                encoded: encoded.freeze(),
            });
        }
        Ok(shares)
    }

    /// Sends the shares `members` to their leader in one request.
    fn produce_to(
        &mut self,
        leader: i32,
        shares: &[Share],
        members: &[usize],
    ) -> Result<(), Failure> {
        let address = self
            .brokers
            .get(&leader)
            .cloned()
            .ok_or_else(|| Failure::Retry(format!("no leader known (broker {leader})")))?;
        let versions = self.versions()?;
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
        let response: ProduceResponse = self.call(&address, request, versions.produce)?;
        let mut failure = None;
        let mut answered = 0;
        for topic in &response.responses {
            for partition in &topic.partition_responses {
                answered += 1;
                let error = partition.error_code;
                if error == code::NONE || error == code::DUPLICATE_SEQUENCE_NUMBER {
                    continue;
                }
                let why = format!(
                    "partition {}: error {error}{}",
                    partition.index,
                    partition
                        .error_message
                        .as_ref()
                        .map(|message| format!(" ({})", message.as_str()))
                        .unwrap_or_default()
                );
                let this = if code::FOR_A_NEW_ID.contains(&error) {
                    Failure::NewId(why)
                } else if code::RETRIABLE.contains(&error) {
                    Failure::Retry(why)
                } else {
                    Failure::Final(why)
                };
                failure = Some(match (failure, this) {
                    (Some(Failure::Final(why)), _) | (_, Failure::Final(why)) => {
                        Failure::Final(why)
                    }
                    (Some(Failure::NewId(why)), _) | (_, Failure::NewId(why)) => {
                        Failure::NewId(why)
                    }
                    (_, retry) => retry,
                });
            }
        }
        if answered != members.len() {
            return Err(Failure::Retry(format!(
                "{answered} partitions answered of {}",
                members.len()
            )));
        }
        match failure {
            None => Ok(()),
            Some(failure) => Err(failure),
        }
    }

    fn versions(&self) -> Result<Versions, Failure> {
        self.versions
            .ok_or_else(|| Failure::Retry("the broker's versions are not known yet".into()))
    }

    /// Asks the brokers in turn for the topic's partitions and leaders
    /// (and, first, for the versions they speak).
    fn read_metadata(&mut self) -> Result<(), Failure> {
        let mut failures = Vec::new();
        let bootstrap = self.target.brokers.clone();
        for broker in &bootstrap {
            match self.metadata_from(broker) {
                Ok(()) => return Ok(()),
                Err(Failure::Final(why)) => return Err(Failure::Final(why)),
                Err(Failure::Retry(why) | Failure::NewId(why)) => {
                    self.connections.remove(broker);
                    failures.push(format!("{broker}: {why}"));
                }
            }
        }
        Err(Failure::Retry(format!(
            "no broker gave the topic's metadata ({})",
            failures.join("; ")
        )))
    }

    fn metadata_from(&mut self, broker: &str) -> Result<(), Failure> {
        if self.versions.is_none() {
            self.versions = Some(self.negotiate(broker)?);
        }
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
            return Err(if code::RETRIABLE.contains(&topic.error_code) {
                Failure::Retry(why)
            } else {
                Failure::Final(why)
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
        if self.sequences.len() != partitions {
            // More partitions: the new ones start at 0 for this id.
            self.sequences.resize(partitions, 0);
        }
        self.leaders = leaders;
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
        let pick = |key: i16, (lowest, highest): (i16, i16), name: &str| {
            let range = response.api_keys.iter().find(|api| api.api_key == key);
            match range {
                Some(api) if api.max_version >= lowest && api.min_version <= highest => {
                    Ok(api.max_version.min(highest))
                }
                _ => Err(Failure::Final(format!(
                    "the broker does not speak {name} versions {lowest} to {highest}"
                ))),
            }
        };
        Ok(Versions {
            produce: pick(ProduceRequest::KEY as i16, PRODUCE, "Produce")?,
            metadata: pick(MetadataRequest::KEY as i16, METADATA, "Metadata")?,
            init_producer_id: pick(
                InitProducerIdRequest::KEY as i16,
                INIT_PRODUCER_ID,
                "InitProducerId",
            )?,
        })
    }

    /// A producer id and epoch from any broker; every partition's
    /// sequence starts at 0 for it.
    fn init_producer_id(&mut self) -> Result<(), Failure> {
        let versions = self.versions()?;
        let mut brokers: Vec<String> = self.brokers.values().cloned().collect();
        brokers.sort();
        brokers.extend(self.target.brokers.iter().cloned());
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
                Ok(response) => failures.push(format!("{broker}: error {}", response.error_code)),
                Err(Failure::Retry(why) | Failure::NewId(why) | Failure::Final(why)) => {
                    self.connections.remove(&broker);
                    failures.push(format!("{broker}: {why}"));
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

    /// Sends `request` to `broker` (connecting first when needed) and
    /// reads its answer; a failed connection is closed.
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
    fn exchange(&mut self, broker: &str, body: &[u8]) -> io::Result<Bytes> {
        if !self.connections.contains_key(broker) {
            let stream = connect(broker)?;
            self.connections.insert(broker.to_string(), stream);
        }
        let stream = self
            .connections
            .get_mut(broker)
            .ok_or_else(|| io::Error::other("no connection"))?;
        let length =
            u32::try_from(body.len()).map_err(|_| io::Error::other("request too large"))?;
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&length.to_be_bytes());
        frame.extend_from_slice(body);
        stream.write_all(&frame)?;
        let mut size = [0u8; 4];
        stream.read_exact(&mut size)?;
        let size = usize::try_from(u32::from_be_bytes(size)).unwrap_or(usize::MAX);
        if size > MAX_ANSWER {
            return Err(io::Error::other(format!("an answer of {size} bytes")));
        }
        let mut answer = vec![0u8; size];
        stream.read_exact(&mut answer)?;
        Ok(Bytes::from(answer))
    }
}

/// `records` in runs of at most `bytes` of keys and values (a record
/// larger alone is a run of its own, for the broker to judge).
fn runs_within(records: Vec<&KafkaRecord>, bytes: usize) -> Vec<Vec<&KafkaRecord>> {
    let mut runs: Vec<Vec<&KafkaRecord>> = Vec::new();
    let mut size = 0;
    for record in records {
        let length = record.value.len() + record.key.as_ref().map_or(0, Vec::len);
        match runs.last_mut() {
            Some(run) if size + length <= bytes => {
                run.push(record);
                size += length;
            }
            _ => {
                runs.push(vec![record]);
                size = length;
            }
        }
    }
    runs
}

fn wrapping_sequence(first: i32, offset: i32) -> i32 {
    // Kafka's sequences go from i32::MAX back to 0.
    let next = i64::from(first) + i64::from(offset);
    i32::try_from(next % (i64::from(i32::MAX) + 1)).unwrap_or(0)
}

fn connect(address: &str) -> io::Result<TcpStream> {
    let socket = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
    let stream = TcpStream::connect_timeout(&socket, CONNECT_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
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
        let runs = runs_within(records.iter().collect(), 1_000);
        let sizes: Vec<usize> = runs.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 1, 1, 1], "400+400 | 300 | 2000 alone | 100");
    }

    #[test]
    fn sequences_wrap_as_kafka_s() {
        assert_eq!(wrapping_sequence(5, 3), 8);
        assert_eq!(wrapping_sequence(i32::MAX, 1), 0);
        assert_eq!(wrapping_sequence(i32::MAX - 1, 3), 1);
    }
}
