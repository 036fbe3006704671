//! The simulated provider: nodes and instances exist only in state, and every operation takes
//! the account's `latencyMs`. For rehearsing a large apply (how long, how many nodes) and for
//! benchmarks of the executor.

use std::time::Duration;

use super::{NodeRequest, Provider, ProviderResult, StartRequest, Started};
use crate::state::{InstanceState, NewNode, NodeState};

/// The provider of a `simulated` account: every operation waits `latency` and succeeds.
#[derive(Debug, Clone)]
pub struct SimulatedProvider {
    latency: Duration,
}

impl SimulatedProvider {
    /// A simulated provider whose every operation (a batch of nodes made or freed, each start,
    /// stop and wiring call) takes `latency` (the account's `latencyMs`); at zero, nothing
    /// waits.
    pub fn new(latency: Duration) -> Self {
        SimulatedProvider { latency }
    }

    fn pause(&self) {
        if !self.latency.is_zero() {
            std::thread::sleep(self.latency);
        }
    }
}

impl Provider for SimulatedProvider {
    fn kind(&self) -> &'static str {
        "simulated"
    }

    fn is_instant(&self) -> bool {
        self.latency.is_zero()
    }

    fn starts_processes(&self) -> bool {
        false
    }

    fn create_nodes(&self, nodes: &[NewNode], _request: &NodeRequest<'_>) -> ProviderResult<Vec<NodeState>> {
        // One call per batch, as a cloud API would take.
        self.pause();
        Ok(nodes
            .iter()
            .map(|n| NodeState {
                account: n.account.clone(),
                provider: "simulated".into(),
                address: format!("{}.simulated.invalid", n.id),
                memory: Some(n.memory),
                size: Some(n.size.clone()),
                provider_id: None,
                spare: false,
            })
            .collect())
    }

    fn destroy_node(&self, _id: &str, _node: &NodeState) -> ProviderResult<()> {
        self.pause();
        Ok(())
    }

    fn destroy_nodes(&self, nodes: &[(&str, &NodeState)]) -> Vec<ProviderResult<()>> {
        // One call per batch, as a cloud API would take (ec2's `TerminateInstances`).
        if !nodes.is_empty() {
            self.pause();
        }
        nodes.iter().map(|_| Ok(())).collect()
    }

    fn start(&self, _request: &StartRequest<'_>) -> ProviderResult<Started> {
        self.pause();
        Ok(Started::default())
    }

    fn wait_healthy(&self, _: &InstanceState, _: &NodeState, _: u16, _: Duration) -> ProviderResult<()> {
        Ok(())
    }

    fn stop(&self, _: &InstanceState, _: &NodeState, _: Duration) -> ProviderResult<()> {
        self.pause();
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
        Ok(format!("{} is simulated: it has no output", instance.id))
    }

    fn observe(&self, _node: &NodeState, instances: &[(&InstanceState, u16)]) -> Vec<crate::state::observed::Health> {
        // Nothing runs: the state is the truth.
        instances.iter().map(|_| crate::state::observed::Health::Healthy).collect()
    }

    fn find(&self, _: &NodeState, _: &str) -> Option<Started> {
        None
    }

    fn wire(&self, _call: &super::wire::WireCall<'_>) -> Result<(), super::wire::WireError> {
        self.pause();
        Ok(())
    }
}
