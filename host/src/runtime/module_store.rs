//! Compiled modules keyed by the sha256 of their bytes: loading the same bytes twice
//! compiles once.

use crate::lock::Recover;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::module::Module;

#[derive(Default)]
pub(super) struct ModuleStore {
    modules: Mutex<HashMap<[u8; 32], Arc<Module>>>,
}

impl ModuleStore {
    pub fn get(&self, sha256: &[u8; 32]) -> Option<Arc<Module>> {
        self.modules.lock().recover().get(sha256).cloned()
    }

    /// Keeps `module` unless a module with the same hash got there first; returns the
    /// one kept.
    pub fn insert(&self, module: Arc<Module>) -> Arc<Module> {
        let mut modules = self.modules.lock().recover();
        modules.entry(module.sha256).or_insert(module).clone()
    }

    pub fn len(&self) -> usize {
        self.modules.lock().recover().len()
    }
}
