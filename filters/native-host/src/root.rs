//! A filter configuration and its roots: the configuration as Envoy handed
//! it over (with the metrics defined in config-new and the timer), each
//! thread's loaded module ([`crate::ModuleRoot`]), and [`NativeRoot`], the
//! host a root's work runs over.

use crate::envoy::{self, ConfigScheduler, EnvoyConfig, MetricKind};
use crate::host::{self, MODULE};
use crate::kafka;
use crate::mailbox::{self, Mailbox};
use crate::redis;
use crate::ModuleRoot;
use gateway_common::fleet::RedisTarget;
use gateway_common::hosting::{Caller, RootHost};
use gateway_common::kafka::{KafkaRecord, KafkaTarget};
use gateway_common::metrics::{metric_name, Counter, DefineMetrics, Gauge};
use gateway_common::store::SharedStore;
use gateway_common::stream::{CallNotMade, HttpCall, Level, Telemetry};
use gateway_common::sync::lock;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

/// A metric defined in config-new; its handle's id is its index.
pub(crate) struct Metric {
    name: String,
    kind: MetricKind,
    envoy_id: usize,
}

/// One filter configuration, shared by every thread's root of it.
pub(crate) struct Config {
    pub envoy: EnvoyConfig,
    /// Unique in the process: roots and shared state are keyed by it.
    pub id: u64,
    pub configuration: Vec<u8>,
    metrics: Vec<Metric>,
    main_thread: ThreadId,
    /// Cleared when Envoy destroys the configuration; each thread then
    /// deletes its root of it.
    alive: Arc<AtomicBool>,
    ticker: Option<Ticker>,
    /// The main root's calls in flight: Envoy's callout id, the token.
    callouts: Mutex<Vec<(u64, u32)>>,
    /// The answers of the main root's Redis commands and Kafka batches
    /// (with a timer only:
    /// its scheduler wakes the main thread).
    pub mailbox: Option<Arc<Mailbox>>,
}

/// A configuration's metrics as counts and gauges reach them (a handle's
/// id is its index).
#[derive(Clone, Copy)]
pub(crate) struct MetricTable<'a> {
    envoy: EnvoyConfig,
    metrics: &'a [Metric],
}

impl MetricTable<'_> {
    /// Envoy's id of the metric behind a handle's id.
    fn envoy_id(self, id: Option<u32>) -> Option<usize> {
        let metric = self.metrics.get(usize::try_from(id?).ok()?)?;
        Some(metric.envoy_id)
    }

    pub fn increment(self, counter: Counter, delta: u64) {
        if let Some(id) = self.envoy_id(counter.id()).filter(|_| delta > 0) {
            self.envoy.increment_counter(id, delta);
        }
    }

    pub fn set_gauge(self, gauge: Gauge, value: u64) {
        if let Some(id) = self.envoy_id(gauge.id()) {
            self.envoy.set_gauge(id, value);
        }
    }

    pub fn add_to_gauge(self, gauge: Gauge, delta: i64) {
        if let Some(id) = self.envoy_id(gauge.id()) {
            self.envoy.add_to_gauge(id, delta);
        }
    }
}

impl Config {
    pub fn metrics(&self) -> MetricTable<'_> {
        MetricTable {
            envoy: self.envoy,
            metrics: &self.metrics,
        }
    }

    /// The token of the main root's call `callout`, which it no longer waits for.
    pub fn take_callout(&self, callout: u64) -> Option<u32> {
        take_token(&mut lock(&self.callouts), callout)
    }
}

/// Removes and returns the token of Envoy's callout `callout`.
pub(crate) fn take_token(callouts: &mut Vec<(u64, u32)>, callout: u64) -> Option<u32> {
    let at = callouts.iter().position(|(id, _)| *id == callout)?;
    Some(callouts.swap_remove(at).1)
}

thread_local! {
    static NEXT_TOKEN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    static ROOTS: RefCell<Vec<Root>> = const { RefCell::new(Vec::new()) };
}

/// A token for a call, unique on this thread.
pub(crate) fn next_token() -> u32 {
    NEXT_TOKEN.with(|next| {
        let token = next.get().wrapping_add(1).max(1);
        next.set(token);
        token
    })
}

static NEXT_CONFIG: AtomicU64 = AtomicU64::new(1);

/// Where a root's metrics are: being defined (config-new) or defined.
enum Metrics<'a> {
    Defining(&'a mut Vec<Metric>),
    Defined(&'a [Metric]),
}

/// The host of a root's work: its configuration's metrics, Envoy's log,
/// the process's shared data, and (the main thread's root) calls.
pub(crate) struct NativeRoot<'a> {
    envoy: EnvoyConfig,
    configuration_id: u64,
    metrics: Metrics<'a>,
    /// The main root's calls in flight; a worker's root cannot call.
    callouts: Option<&'a Mutex<Vec<(u64, u32)>>>,
    /// Where the main root's Redis and Kafka answers go.
    mailbox: Option<&'a Arc<Mailbox>>,
}

impl NativeRoot<'_> {
    fn table(&self) -> MetricTable<'_> {
        let metrics = match &self.metrics {
            Metrics::Defining(metrics) => &metrics[..],
            Metrics::Defined(metrics) => metrics,
        };
        MetricTable {
            envoy: self.envoy,
            metrics,
        }
    }

    /// A metric by name: defined in Envoy during config-new, afterwards the
    /// one defined then (Envoy freezes its metrics after config-new).
    fn define(&mut self, kind: MetricKind, filter: &str, name: &str) -> Option<u32> {
        let name = metric_name(filter, name);
        let same = |metric: &Metric| metric.name == name && metric.kind == kind;
        let at = match &mut self.metrics {
            Metrics::Defining(metrics) => match metrics.iter().position(same) {
                Some(at) => at,
                None => {
                    let envoy_id = self.envoy.define(kind, &name)?;
                    metrics.push(Metric {
                        name,
                        kind,
                        envoy_id,
                    });
                    metrics.len() - 1
                }
            },
            Metrics::Defined(metrics) => metrics.iter().position(same)?,
        };
        u32::try_from(at).ok()
    }
}

impl Telemetry for NativeRoot<'_> {
    fn increment(&mut self, counter: Counter, delta: u64) {
        self.table().increment(counter, delta);
    }

    fn set_gauge(&mut self, gauge: Gauge, value: u64) {
        self.table().set_gauge(gauge, value);
    }

    fn add_to_gauge(&mut self, gauge: Gauge, delta: i64) {
        self.table().add_to_gauge(gauge, delta);
    }

    fn logs(&self, level: Level) -> bool {
        host::logs(level)
    }

    fn log(&self, level: Level, message: std::fmt::Arguments<'_>) {
        host::log(level, message);
    }
}

impl DefineMetrics for NativeRoot<'_> {
    fn define_counter(&mut self, filter: &str, name: &str) -> Counter {
        self.define(MetricKind::Counter, filter, name)
            .map_or_else(Counter::default, Counter::from_id)
    }

    fn define_gauge(&mut self, filter: &str, name: &str) -> Gauge {
        self.define(MetricKind::Gauge, filter, name)
            .map_or_else(Gauge::default, Gauge::from_id)
    }
}

impl Caller for NativeRoot<'_> {
    fn dispatch_call(&mut self, call: HttpCall<'_>) -> Result<u32, CallNotMade> {
        let callouts = self.callouts.ok_or(CallNotMade)?;
        let callout = self.envoy.callout(&call).ok_or(CallNotMade)?;
        let token = next_token();
        lock(callouts).push((callout, token));
        Ok(token)
    }

    fn dispatch_redis(
        &mut self,
        target: &RedisTarget,
        slot: u16,
        command: Vec<u8>,
        timeout: Duration,
    ) -> Result<u32, CallNotMade> {
        let mailbox = self.mailbox.ok_or(CallNotMade)?;
        let token = next_token();
        redis::send(target, slot, command, timeout, mailbox, token);
        Ok(token)
    }

    fn dispatch_kafka(
        &mut self,
        target: &KafkaTarget,
        records: Vec<KafkaRecord>,
    ) -> Result<u32, CallNotMade> {
        let mailbox = self.mailbox.ok_or(CallNotMade)?;
        let token = next_token();
        kafka::send(target, records, mailbox, token);
        Ok(token)
    }
}

impl RootHost for NativeRoot<'_> {
    fn shared_data(&self) -> &'static dyn SharedStore {
        host::shared_data()
    }

    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
    }

    /// Every root of one configuration in the process shares its state.
    fn configuration_id(&self) -> Option<u64> {
        Some(self.configuration_id)
    }
}

/// A configuration's root on this thread.
struct Root {
    config: u64,
    alive: Arc<AtomicBool>,
    /// Out of its place while its code runs.
    root: Option<Box<dyn ModuleRoot>>,
}

/// Deletes this thread's roots of destroyed configurations.
pub(crate) fn delete_dead_roots() {
    let dead: Vec<Root> = ROOTS.with(|roots| {
        let mut roots = roots.borrow_mut();
        if roots.iter().all(|root| root.alive.load(Ordering::Acquire)) {
            return Vec::new();
        }
        let (dead, alive) = std::mem::take(&mut *roots)
            .into_iter()
            .partition(|root| !root.alive.load(Ordering::Acquire));
        *roots = alive;
        dead
    });
    for root in dead {
        let _ = host::guarded(|| drop(root));
    }
}

/// Loads the configuration on this thread; false when refused or panicked.
fn create_root(config: &Config) -> bool {
    let Some(module) = MODULE.get() else {
        return false;
    };
    let mut host = NativeRoot {
        envoy: config.envoy,
        configuration_id: config.id,
        metrics: Metrics::Defined(&config.metrics),
        callouts: config.on_main_thread().then_some(&config.callouts),
        mailbox: config.main_mailbox(),
    };
    let loaded = host::guarded(|| module.load(&config.configuration, &mut host));
    let Ok(Some(root)) = loaded else {
        return false;
    };
    ROOTS.with(|roots| {
        roots.borrow_mut().push(Root {
            config: config.id,
            alive: Arc::clone(&config.alive),
            root: Some(root),
        })
    });
    true
}

impl Config {
    fn on_main_thread(&self) -> bool {
        thread::current().id() == self.main_thread
    }

    /// The mailbox of the main thread's root (others cannot call).
    fn main_mailbox(&self) -> Option<&Arc<Mailbox>> {
        self.mailbox.as_ref().filter(|_| self.on_main_thread())
    }
}

/// Runs `code` on this thread's root of `config` (loaded first if `make`
/// and there is none) with its host; `None` if there is no root, it is
/// running already, or the code panicked (the root is then dropped).
pub(crate) fn with_root<R>(
    config: &Config,
    make: bool,
    code: impl FnOnce(&mut dyn ModuleRoot, &mut NativeRoot<'_>) -> R,
) -> Option<R> {
    let take = || {
        ROOTS.with(|roots| {
            roots
                .borrow_mut()
                .iter_mut()
                .find(|root| root.config == config.id)
                .and_then(|root| root.root.take())
        })
    };
    let mut found = take();
    if found.is_none() && make && !has_root(config.id) && create_root(config) {
        found = take();
    }
    let mut root = found?;
    let mut host = NativeRoot {
        envoy: config.envoy,
        configuration_id: config.id,
        metrics: Metrics::Defined(&config.metrics),
        callouts: config.on_main_thread().then_some(&config.callouts),
        mailbox: config.main_mailbox(),
    };
    let result = host::guarded(|| code(&mut *root, &mut host));
    if result.is_ok() {
        ROOTS.with(|roots| {
            if let Some(slot) = roots
                .borrow_mut()
                .iter_mut()
                .find(|s| s.config == config.id)
            {
                slot.root = Some(root);
            }
        });
    } else {
        // Its code panicked: the next stream (or tick) loads it anew.
        ROOTS.with(|roots| roots.borrow_mut().retain(|slot| slot.config != config.id));
        let _ = host::guarded(|| drop(root));
    }
    result.ok()
}

fn has_root(config: u64) -> bool {
    ROOTS.with(|roots| roots.borrow().iter().any(|root| root.config == config))
}

/// config-new: loads the configuration in a main-thread root, which
/// defines the metrics; `None` refuses it.
pub(crate) fn config_new(envoy: EnvoyConfig, configuration: &[u8]) -> Option<Box<Config>> {
    delete_dead_roots();
    let module = MODULE.get()?;
    let id = NEXT_CONFIG.fetch_add(1, Ordering::Relaxed);
    let alive = Arc::new(AtomicBool::new(true));
    let callouts = Mutex::new(Vec::new());
    let mut metrics = Vec::new();
    let loaded = {
        let mut host = NativeRoot {
            envoy,
            configuration_id: id,
            metrics: Metrics::Defining(&mut metrics),
            callouts: Some(&callouts),
            mailbox: None,
        };
        host::guarded(|| module.load(configuration, &mut host))
    };
    let Ok(Some(root)) = loaded else {
        alive.store(false, Ordering::Release);
        return None;
    };
    let ticker = root
        .tick_period()
        .filter(|period| !period.is_zero())
        .and_then(|period| Ticker::start(envoy, period));
    let mailbox = ticker.as_ref().map(|ticker| {
        let scheduler = Arc::clone(&ticker.scheduler);
        Mailbox::new(Box::new(move || scheduler.commit(mailbox::ANSWERS)))
    });
    ROOTS.with(|roots| {
        roots.borrow_mut().push(Root {
            config: id,
            alive: Arc::clone(&alive),
            root: Some(root),
        })
    });
    Some(Box::new(Config {
        envoy,
        id,
        configuration: configuration.to_vec(),
        metrics,
        main_thread: thread::current().id(),
        alive,
        ticker,
        callouts,
        mailbox,
    }))
}

/// config-destroy: stops the timer; each thread deletes its root.
pub(crate) fn config_destroy(config: Config) {
    config.alive.store(false, Ordering::Release);
    // Before the timer's scheduler is deleted: no answer commits it after.
    if let Some(mailbox) = &config.mailbox {
        mailbox.close();
    }
    if let Some(ticker) = config.ticker {
        ticker.stop();
    }
    delete_dead_roots();
}

/// The timer: the main thread's root's work.
pub(crate) fn config_tick(config: &Config) {
    if !config.on_main_thread() || !config.alive.load(Ordering::Acquire) {
        return;
    }
    with_root(config, true, |root, host| root.on_tick(host));
}

// ---- the timer: a thread commits the configuration's scheduler every period ----

struct TickerState {
    stop: Mutex<bool>,
    wake: Condvar,
}

struct Ticker {
    state: Arc<TickerState>,
    thread: JoinHandle<()>,
    /// Deleted on the main thread, once the thread has ended.
    scheduler: Arc<ConfigScheduler>,
}

impl Ticker {
    fn start(config: EnvoyConfig, period: Duration) -> Option<Self> {
        let Some(scheduler) = config.scheduler() else {
            envoy::log(
                envoy::level::ERROR,
                "native module: cannot create the timer; no ticks",
            );
            return None;
        };
        let state = Arc::new(TickerState {
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let scheduler = Arc::new(scheduler);
        let (shared, committed) = (Arc::clone(&state), Arc::clone(&scheduler));
        let thread = thread::Builder::new()
            .name("gateway-ticks".into())
            .spawn(move || tick(&shared, &committed, period))
            .ok()?;
        Some(Self {
            state,
            thread,
            scheduler,
        })
    }

    fn stop(self) {
        *lock(&self.state.stop) = true;
        self.state.wake.notify_all();
        let _ = self.thread.join();
        drop(self.scheduler);
    }
}

fn tick(state: &TickerState, scheduler: &ConfigScheduler, period: Duration) {
    let mut stopped = lock(&state.stop);
    loop {
        let (guard, _) = state
            .wake
            .wait_timeout(stopped, period)
            .unwrap_or_else(|p| p.into_inner());
        stopped = guard;
        if *stopped {
            break;
        }
        scheduler.commit(envoy::WAKE);
    }
}
