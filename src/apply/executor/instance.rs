//! One instance during an apply: its package found, started (intent, then outcome), waited for
//! until healthy and ready (stopped if it never is), and stopped, its log removed when it goes
//! for good.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Check, Executor, StepError, StepResult};
use crate::apply::journal::Record;
use crate::apply::readiness::{self, ReadinessError};
use crate::plan::placement::PlacedInstance;
use crate::provider::{LogPlace, Package, Provider, StartRequest};
use crate::spec::DeployableServiceSpec;
use crate::spec::endpoint::native_uri;
use crate::spec::endpoint::port_of;
use crate::state::{InstanceState, InstanceStatus, NodeState};

/// Where an instance's output goes: `<state_dir>/.logs/<env>/<instance>.log`.
pub fn log_path(state_dir: &Path, env: &str, instance: &str) -> PathBuf {
    state_dir.join(".logs").join(env).join(format!("{instance}.log"))
}

/// An instance started by [`Executor::launch`], not yet known to be healthy.
#[derive(Debug)]
pub(super) struct Launched {
    pub(super) instance: InstanceState,
    node: NodeState,
    log: PathBuf,
}

impl<'a> Executor<'a> {
    /// The readiness check of a service: its own, else its package type's.
    fn readiness_of(&self, spec: &DeployableServiceSpec) -> Option<&'a crate::repo::settings::Readiness> {
        self.settings.readiness_of(&spec.name, spec.package_type())
    }

    /// The package of a service as a path on this machine (looked for once per apply).
    fn package(&self, spec: &DeployableServiceSpec) -> StepResult<Package> {
        let mut packages = self.packages.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = packages.get(&spec.name) {
            return Ok(p.clone());
        }
        let uri = spec.package_uri.as_deref().unwrap_or_default();
        let package = crate::provider::package::locate(uri, self.repo_root)
            .map_err(|e| StepError::Package { service: spec.name.clone(), source: std::sync::Arc::new(e) })?;
        packages.insert(spec.name.clone(), package.clone());
        Ok(package)
    }

    /// Starts an instance and waits until it is healthy and ready.
    pub(super) fn start_instance(
        &self,
        name: &str,
        spec: &DeployableServiceSpec,
        placed: &PlacedInstance,
    ) -> StepResult<InstanceState> {
        let launched = self.launch(name, spec, placed)?;
        self.await_ready(name, spec, &launched)
    }

    /// Starts an instance (journaled: intent, then outcome) without waiting for it.
    pub(super) fn launch(
        &self,
        name: &str,
        spec: &DeployableServiceSpec,
        placed: &PlacedInstance,
    ) -> StepResult<Launched> {
        let node = self
            .live()
            .nodes
            .get(&placed.node)
            .cloned()
            .ok_or_else(|| StepError::NodeMissing { node: placed.node.clone(), instance: placed.id.clone() })?;
        let provider = self.provider_of_node(&node)?;
        let package = if provider.kind() == "simulated" { Package::None } else { self.package(spec)? };
        let token = crate::state::store::new_lineage();
        let mut instance = InstanceState {
            id: placed.id.clone(),
            node: placed.node.clone(),
            status: InstanceStatus::Running,
            native_uri: native_uri(&node.address, spec),
            pid: None,
            start_time: None,
            memory: Some(spec.memory()),
        };
        self.wiring.starting(name, &placed.id);
        self.record(Record::StartIntent {
            service: name.to_string(),
            instance: instance.clone(),
            token: token.clone(),
        })?;
        let log = log_path(self.state_dir, self.env, &placed.id);
        let request = StartRequest {
            env: self.env,
            spec,
            instance_id: &placed.id,
            node: &node,
            package,
            settings: self.settings,
            cache_dir: self.state_dir.join(".cache"),
            token: &token,
            log: log.clone(),
            lineage: &self.lineage,
            log_cap: self.settings.logs_of(name, &node.account),
        };
        let started =
            provider.start(&request).map_err(|source| StepError::Start { instance: placed.id.clone(), source })?;
        instance.pid = started.pid;
        instance.start_time = started.start_time;
        self.record(Record::Started { service: name.to_string(), instance: instance.clone() })?;
        self.progress(name, format!("{} started on {} ({})", placed.id, placed.node, node.address));
        Ok(Launched { instance, node: *node, log })
    }

    /// Waits until a started instance is healthy and ready; stops it if it never is.
    pub(super) fn await_ready(
        &self,
        name: &str,
        spec: &DeployableServiceSpec,
        launched: &Launched,
    ) -> StepResult<InstanceState> {
        let Launched { instance, node, log } = launched;
        let provider = self.provider_of_node(node)?;
        if let Err(check) = self.check(provider, name, spec, instance, node) {
            // Stopped first: once it is, its last lines are in its log (which stays).
            let _ = self.stop_instance(name, &instance.id);
            let place = LogPlace { env: self.env, lineage: &self.lineage, local: log };
            let output = provider.logs(instance, node, place, 5).unwrap_or_default();
            return Err(StepError::Unready { instance: instance.id.clone(), check, output });
        }
        Ok(instance.clone())
    }

    /// The health check, then the readiness check (if the service has one), within the
    /// instance's health timeout.
    fn check(
        &self,
        provider: &dyn Provider,
        name: &str,
        spec: &DeployableServiceSpec,
        instance: &InstanceState,
        node: &NodeState,
    ) -> Result<(), Check> {
        // The timeout runs from the start of the wait: an instance waited for after others of
        // its step has, if anything, longer since its start.
        let checked = self.clock.instant();
        let health_timeout = self
            .options
            .health_timeout
            .unwrap_or_else(|| Duration::from_millis(self.settings.timeouts_of(name, &node.account).0));
        provider.wait_healthy(instance, node, port_of(spec), health_timeout).map_err(Check::Health)?;
        let Some(readiness) = self.readiness_of(spec) else { return Ok(()) };
        let url = readiness
            .path
            .as_deref()
            .map(|p| readiness::readiness_url(&node.address, port_of(spec), p, spec.endpoint_name()));
        let still_up = || {
            if provider.alive(instance, node) {
                Ok(())
            } else {
                Err(ReadinessError::Exited { instance: instance.id.clone() })
            }
        };
        let left = health_timeout.saturating_sub(self.clock.since(checked));
        readiness::wait_ready(url.as_deref(), readiness, left, &still_up).map_err(Check::Readiness)
    }

    /// A recorded instance of a service and the node it runs on.
    pub(super) fn instance_on_node(&self, name: &str, id: &str) -> Option<(InstanceState, NodeState)> {
        let live = self.live();
        let instance = live.services.get(name)?.instances.iter().find(|i| i.id == id)?.clone();
        let node = live.nodes.get(&instance.node)?.clone();
        Some((instance, *node))
    }

    /// Stops an instance the plan takes away for good (replaced, scaled in, destroyed) and,
    /// unless `--keep-logs`, removes its log: it goes with the instance. A log that cannot be
    /// removed is a warning.
    pub(super) fn retire_instance(&self, name: &str, id: &str) -> StepResult {
        let target = self.instance_on_node(name, id);
        self.stop_instance(name, id)?;
        if let Some((instance, node)) = target {
            self.remove_log(name, &instance, &node);
        }
        Ok(())
    }

    /// Removes the log of a stopped instance (unless logs are kept); a failure is a warning.
    pub(super) fn remove_log(&self, name: &str, instance: &InstanceState, node: &NodeState) {
        if self.options.keep_logs {
            return;
        }
        let log = log_path(self.state_dir, self.env, &instance.id);
        let removed = match self.provider_of_node(node) {
            Ok(provider) => provider
                .remove_logs(instance, node, LogPlace { env: self.env, lineage: &self.lineage, local: &log })
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = removed {
            self.warnings
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(format!("service `{name}`: the log of {} stays: {e}", instance.id));
        }
    }

    /// Stops a recorded instance (journaled: intent, then outcome); it leaves the state.
    pub(super) fn stop_instance(&self, name: &str, id: &str) -> StepResult {
        let Some((instance, node)) = self.instance_on_node(name, id) else {
            return Ok(());
        };
        let provider = self.provider_of_node(&node)?;
        self.record(Record::StopIntent { service: name.to_string(), instance: id.to_string() })?;
        self.stop_process(provider, name, &instance, &node)?;
        self.record(Record::Stopped { service: name.to_string(), instance: id.to_string() })?;
        self.progress(name, format!("{id} stopped"));
        Ok(())
    }

    /// Has the provider stop an instance's process, with its service's grace time.
    pub(super) fn stop_process(
        &self,
        provider: &dyn Provider,
        name: &str,
        instance: &InstanceState,
        node: &NodeState,
    ) -> StepResult {
        provider
            .stop(instance, node, self.stop_grace(name, node))
            .map_err(|source| StepError::Stop { instance: instance.id.clone(), source })
    }

    /// How long an instance of `service` on `node` has between SIGTERM and SIGKILL.
    fn stop_grace(&self, service: &str, node: &NodeState) -> Duration {
        Duration::from_millis(self.settings.timeouts_of(service, &node.account).1)
    }
}
