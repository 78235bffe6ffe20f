//! The process-wide runtime: engine, linker, module store.

use anyhow::anyhow;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{CONTRACT, v2, v3};
use super::epoch::{Ticker, start_ticker};
use super::instance::GameInstance;
use super::limits::RuntimeLimits;
use super::module::{Module, ModuleError, Pre, check_contract};
use super::module_store::ModuleStore;
use super::room_data::{RoomData, RoomInit};

/// One per process. Shared as `Arc<Runtime>`.
pub struct Runtime {
    engine: Engine,
    /// Advances the engine's epoch while a call runs (`epoch.rs`).
    ticker: Arc<Ticker>,
    /// Built once: the `ludus:game/host` functions and a WASI that grants nothing.
    linker: Linker<RoomData>,
    modules: ModuleStore,
    limits: RuntimeLimits,
    /// The call deadlines in force: `limits`' at start, changed live by the node's
    /// settings (`runtime.tick_deadline`, `runtime.message_deadline`).
    deadlines: Arc<LiveDeadlines>,
    /// Games' failures (traps, deadlines, limits) on this node since it started.
    failures: AtomicU64,
}

/// Call deadlines shared by every instance, read at each call.
#[derive(Debug, Default)]
pub struct LiveDeadlines {
    message_us: AtomicU64,
    tick_us: AtomicU64,
}

impl LiveDeadlines {
    fn new(limits: &RuntimeLimits) -> Self {
        let d = LiveDeadlines::default();
        d.set_message(limits.message_deadline);
        d.set_tick(limits.tick_deadline);
        d
    }

    pub fn message(&self) -> Duration {
        Duration::from_micros(self.message_us.load(Ordering::Relaxed))
    }

    pub fn tick(&self) -> Duration {
        Duration::from_micros(self.tick_us.load(Ordering::Relaxed))
    }

    pub fn set_message(&self, d: Duration) {
        self.message_us
            .store(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn set_tick(&self, d: Duration) {
        self.tick_us.store(d.as_micros() as u64, Ordering::Relaxed);
    }
}

impl Runtime {
    pub fn new(limits: RuntimeLimits) -> anyhow::Result<Arc<Self>> {
        let mut pool = PoolingAllocationConfig::default();
        let n = limits.max_instances.max(1);
        // A wasip2 component holds a few core instances and tables (the game plus
        // adapter shims) and one memory.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(4))
            .total_tables(n.saturating_mul(4))
            .total_memories(n)
            .max_memory_size(limits.memory_bytes);

        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .concurrency_support(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine =
            Engine::new(&config).map_err(|e| anyhow!("creating the wasmtime engine: {e:#}"))?;
        let ticker = start_ticker(&engine);

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| anyhow!("linking WASI: {e:#}"))?;
        v3::Game::add_to_linker::<_, HasSelf<_>>(&mut linker, |data| data)
            .map_err(|e| anyhow!("linking the ludus:game host interfaces: {e:#}"))?;
        v2::Game::add_to_linker::<_, HasSelf<_>>(&mut linker, |data| data)
            .map_err(|e| anyhow!("linking the ludus:game 0.2.0 host interface: {e:#}"))?;

        Ok(Arc::new(Runtime {
            engine,
            ticker,
            linker,
            modules: ModuleStore::default(),
            deadlines: Arc::new(LiveDeadlines::new(&limits)),
            limits,
            failures: AtomicU64::new(0),
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine's epoch ticker: every call into an instance runs inside
    /// [`Ticker::enter`].
    pub fn ticker(&self) -> &Arc<Ticker> {
        &self.ticker
    }

    pub fn limits(&self) -> &RuntimeLimits {
        &self.limits
    }

    /// The call deadlines in force (every instance reads them at each call).
    pub fn deadlines(&self) -> &Arc<LiveDeadlines> {
        &self.deadlines
    }

    /// Counts a game's failure on this node (its room restored or closed).
    pub fn count_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Games' failures on this node since it started.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Modules compiled so far.
    pub fn module_count(&self) -> usize {
        self.modules.len()
    }

    /// Compiles and validates a module (or returns the one already compiled from the
    /// same bytes). CPU-heavy: call it off the tick path, or use [`Runtime::load`].
    ///
    /// Validation: the bytes are a component, it exports this host's contract, its
    /// imports are all provided, and a trial instance answers `describe`.
    pub fn load_blocking(&self, bytes: &[u8]) -> Result<Arc<Module>, ModuleError> {
        let sha256: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(module) = self.modules.get(&sha256) {
            return Ok(module);
        }
        if is_core_module(bytes) {
            return Err(ModuleError::NotAComponent("it is a core module".into()));
        }
        if !bytes.starts_with(b"\0asm") {
            return Err(ModuleError::NotAComponent(
                "it does not start with the wasm magic bytes".into(),
            ));
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| ModuleError::Compile(format!("{e:#}")))?;
        let contract = check_contract(&component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| ModuleError::Link(format!("{e:#}")))?;
        let link = |e: wasmtime::Error| ModuleError::Link(format!("{e:#}"));
        let pre = if contract == CONTRACT {
            Pre::V3(v3::GamePre::new(pre).map_err(link)?)
        } else {
            Pre::V2(v2::GamePre::new(pre).map_err(link)?)
        };

        // The trial instance needs the module; its name and version come from the trial.
        let shell = Arc::new(Module {
            sha256,
            name: String::new(),
            version: String::new(),
            size: bytes.len(),
            contract,
            pre,
        });
        let described =
            GameInstance::new(self, &shell, &RoomInit::trial()).and_then(|mut i| i.describe());
        let mut module = Arc::into_inner(shell).expect("the trial instance is dropped by now");
        (module.name, module.version) = described.map_err(|e| ModuleError::Trial(e.to_string()))?;
        Ok(self.modules.insert(Arc::new(module)))
    }

    /// [`Runtime::load_blocking`] on a blocking thread, for async callers.
    pub async fn load(self: &Arc<Self>, bytes: Vec<u8>) -> Result<Arc<Module>, ModuleError> {
        let rt = self.clone();
        tokio::task::spawn_blocking(move || rt.load_blocking(&bytes))
            .await
            .unwrap_or_else(|e| {
                Err(ModuleError::Compile(format!(
                    "compilation task failed: {e}"
                )))
            })
    }

    /// A fresh instance of `module` for the room `room` (not yet initialised).
    pub fn instantiate(
        &self,
        module: &Arc<Module>,
        room: &RoomInit,
    ) -> Result<GameInstance, crate::runtime::GuestError> {
        GameInstance::new(self, module, room)
    }
}

/// A core module starts with the wasm magic and version 1; a component with the magic
/// and its own version/layer word.
fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes.starts_with(b"\0asm") && bytes[4..8] == [1, 0, 0, 0]
}
