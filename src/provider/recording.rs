//! A fake provider for tests: nothing runs, every call is recorded in order. The executor's
//! ordering rules (health before announce, unwire before stop, new before old, each list told
//! once) are checked by replaying what it recorded against a model of the consumers; the real
//! providers are proven by the integration tests on real processes and real sshd.
//!
//! It can be told to fail ([`RecordingProvider::fail`]): a start, a health check or a stop of a
//! named instance, or of every instance of a named service, fails with a [`ProviderError`], so
//! tests see what a failure does to the rest of an apply.
//!
//! Depends on the provider trait and the state only.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::wire::{WireCall, WireError};
use super::{NodeRequest, Provider, ProviderError, ProviderResult, StartRequest, Started};
use crate::state::{InstanceState, NewNode, NodeState};

/// One call the executor made, in the order it made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Nodes made (one batch): their ids.
    NodesCreated(Vec<String>),
    /// A node freed: its id.
    NodeDestroyed(String),
    /// An instance started (not yet healthy).
    Started {
        /// Its service's name.
        service: String,
        /// Its id in the state.
        instance: String,
        /// Its `nativeUri`.
        uri: String,
    },
    /// The instance passed its health check.
    Healthy {
        /// Its id in the state.
        instance: String,
    },
    /// The instance stopped.
    Stopped {
        /// Its id in the state.
        instance: String,
        /// Its `nativeUri`.
        uri: String,
    },
    /// `setInvocationAddress(role, provider, endpoints)` sent to the consumer at `consumer`.
    Wired {
        /// The consumer instance's `nativeUri`.
        consumer: String,
        /// The role told.
        role: String,
        /// The provider's service name(s).
        provider: String,
        /// The whole list told for the role.
        endpoints: Vec<String>,
    },
}

/// How long a held health check waits at most for its node ([`RecordingProvider::hold_health_until_node`]).
pub const HOLD_AT_MOST: Duration = Duration::from_secs(5);

/// An operation of the fake that can be told to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    /// [`Provider::start`]: nothing starts, and nothing is recorded.
    Start,
    /// [`Provider::wait_healthy`]: the instance never gets healthy (no [`Call::Healthy`]).
    Health,
    /// [`Provider::stop`]: the instance keeps running (no [`Call::Stopped`]).
    Stop,
}

/// The fake: clones share one record of calls, and the failures they were told.
#[derive(Debug, Clone, Default)]
pub struct RecordingProvider {
    calls: Arc<Mutex<Vec<Call>>>,
    /// (operation, instance id or service name) that fail.
    failing: Arc<Mutex<BTreeSet<(Operation, String)>>>,
    /// Instance id → node id: the instance's health check waits until the node is made.
    holding: Arc<Mutex<std::collections::BTreeMap<String, String>>>,
}

impl RecordingProvider {
    /// A fake with no call recorded and nothing failing.
    pub fn new() -> Self {
        RecordingProvider::default()
    }

    /// From now on, `operation` fails for the instance `who`, or for every instance of the
    /// service `who` (an instance id is `<service>-<n>`).
    pub fn fail(&self, operation: Operation, who: &str) {
        self.failing.lock().unwrap_or_else(PoisonError::into_inner).insert((operation, who.to_string()));
    }

    /// From now on, the health check of instance `instance` waits until node `node` is made
    /// (a [`Call::NodesCreated`] names it), for at most [`HOLD_AT_MOST`]: to show what runs
    /// while a step waits.
    pub fn hold_health_until_node(&self, instance: &str, node: &str) {
        self.holding.lock().unwrap_or_else(PoisonError::into_inner).insert(instance.to_string(), node.to_string());
    }

    /// Waits while `instance` is held ([`RecordingProvider::hold_health_until_node`]).
    fn hold(&self, instance: &str) {
        let Some(node) = self.holding.lock().unwrap_or_else(PoisonError::into_inner).get(instance).cloned() else {
            return;
        };
        let deadline = std::time::Instant::now() + HOLD_AT_MOST;
        while std::time::Instant::now() < deadline {
            let made = self
                .calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|c| matches!(c, Call::NodesCreated(ids) if ids.contains(&node)));
            if made {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The error of `operation` on `instance`, if it was told to fail.
    fn failure(&self, operation: Operation, instance: &str) -> ProviderResult<()> {
        let service = instance.rsplit_once('-').map_or(instance, |(service, _)| service);
        let failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        if failing.contains(&(operation, instance.to_string())) || failing.contains(&(operation, service.to_string())) {
            return Err(ProviderError::new(format!("{operation:?} of {instance} fails (as the test asked)")));
        }
        Ok(())
    }

    /// Every call recorded so far, and a fresh start.
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn push(&self, call: Call) {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).push(call);
    }
}

impl Provider for RecordingProvider {
    fn kind(&self) -> &'static str {
        "simulated"
    }

    fn is_instant(&self) -> bool {
        true
    }

    fn starts_processes(&self) -> bool {
        false
    }

    fn create_nodes(&self, nodes: &[NewNode], _request: &NodeRequest<'_>) -> ProviderResult<Vec<NodeState>> {
        self.push(Call::NodesCreated(nodes.iter().map(|n| n.id.clone()).collect()));
        Ok(nodes
            .iter()
            .map(|n| NodeState {
                account: n.account.clone(),
                provider: "simulated".into(),
                address: format!("{}.recorded.invalid", n.id),
                memory: Some(n.memory),
                size: Some(n.size.clone()),
                provider_id: None,
                spare: false,
            })
            .collect())
    }

    fn destroy_node(&self, id: &str, _node: &NodeState) -> ProviderResult<()> {
        self.push(Call::NodeDestroyed(id.to_string()));
        Ok(())
    }

    fn start(&self, request: &StartRequest<'_>) -> ProviderResult<Started> {
        self.failure(Operation::Start, request.instance_id)?;
        self.push(Call::Started {
            service: request.spec.name.clone(),
            instance: request.instance_id.to_string(),
            uri: crate::spec::endpoint::native_uri(&request.node.address, request.spec),
        });
        Ok(Started::default())
    }

    fn wait_healthy(&self, instance: &InstanceState, _: &NodeState, _: u16, _: Duration) -> ProviderResult<()> {
        self.hold(&instance.id);
        self.failure(Operation::Health, &instance.id)?;
        self.push(Call::Healthy { instance: instance.id.clone() });
        Ok(())
    }

    fn stop(&self, instance: &InstanceState, _: &NodeState, _: Duration) -> ProviderResult<()> {
        self.failure(Operation::Stop, &instance.id)?;
        self.push(Call::Stopped { instance: instance.id.clone(), uri: instance.native_uri.clone() });
        Ok(())
    }

    fn alive(&self, instance: &InstanceState, _: &NodeState) -> bool {
        instance.status == crate::state::InstanceStatus::Running
    }

    fn logs(
        &self,
        instance: &InstanceState,
        _: &NodeState,
        _: super::LogPlace<'_>,
        _: usize,
    ) -> ProviderResult<String> {
        Ok(format!("{} is recorded: it has no output", instance.id))
    }

    fn observe(&self, _node: &NodeState, instances: &[(&InstanceState, u16)]) -> Vec<crate::state::observed::Health> {
        instances.iter().map(|_| crate::state::observed::Health::Healthy).collect()
    }

    fn find(&self, _: &NodeState, _: &str) -> Option<Started> {
        None
    }

    fn wire(&self, call: &WireCall<'_>) -> Result<(), WireError> {
        self.push(Call::Wired {
            consumer: call.consumer.to_string(),
            role: call.role.to_string(),
            provider: call.provider.to_string(),
            endpoints: call.endpoints.to_vec(),
        });
        Ok(())
    }
}
