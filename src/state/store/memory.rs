//! [`MemoryStore`]: the [`StateStore`] of unit tests, in memory.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{BACKUPS_KEPT, Backup, Head, StateStore, successor};
use crate::error::{Error, Result};
use crate::state::model::State;

/// An in-memory [`StateStore`] for unit tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    pub(super) current: RefCell<BTreeMap<String, State>>,
    history: RefCell<BTreeMap<String, Vec<State>>>,
}

impl StateStore for MemoryStore {
    fn read(&self, env: &str) -> Result<Option<State>> {
        Ok(self.current.borrow().get(env).cloned())
    }

    fn write(&self, state: &State) -> Result<State> {
        let current = self.read(&state.env)?;
        let written = successor(current.as_ref().map(Head::of).as_ref(), state)?;
        if let Some(current) = current {
            let mut history = self.history.borrow_mut();
            let kept = history.entry(state.env.clone()).or_default();
            kept.push(current);
            if kept.len() > BACKUPS_KEPT {
                kept.remove(0);
            }
        }
        self.current.borrow_mut().insert(state.env.clone(), written.clone());
        Ok(written)
    }

    fn backups(&self, env: &str) -> Result<Vec<Backup>> {
        Ok(self
            .history
            .borrow()
            .get(env)
            .map(|states| states.iter().map(|s| Backup { serial: s.serial, path: PathBuf::new() }).collect())
            .unwrap_or_default())
    }

    fn read_serial(&self, env: &str, serial: u64) -> Result<State> {
        self.read(env)?
            .into_iter()
            .chain(self.history.borrow().get(env).into_iter().flatten().cloned())
            .find(|s| s.serial == serial)
            .ok_or_else(|| Error::msg(format!("env `{env}` has no recorded state with serial {serial}")))
    }
}
