//! One service's change: a create, replace, update or destroy carried out by the ordering rules
//! of `docs/wiring.md` (health before announce, unwire before stop, new before old).

use std::collections::{HashSet, VecDeque};

use super::at_once::at_once_if;
use super::{Executor, StepError, StepResult};
use crate::apply::journal::Record;
use crate::plan::placement::PlacedInstance;
use crate::plan::{Action, Change};
use crate::spec::{DeployableServiceSpec, Service};
use crate::state::{AppliedSpec, InstanceState, NodeState, ServiceState};

impl Executor<'_> {
    /// One service's change.
    pub(super) fn run_step(&self, change: &Change) -> StepResult {
        let name = change.service.as_str();
        let desired = self.desired.get(name).copied();
        let paused = self.live().services.get(name).is_some_and(|s| s.paused);
        if paused && change.action != Action::Destroy {
            // Apply leaves a paused service alone (the plan may still rewire it when a provider
            // changes): its instances are stopped, `resume` wires them afresh, and recording the
            // desired spec would claim a change that was never carried out.
            return Ok(());
        }
        let entry = desired.map(|s| ServiceState {
            spec: Box::new(AppliedSpec::from_service(s)),
            instances: Vec::new(),
            paused,
            incomplete: false,
        });
        self.record(Record::StepBegun { service: name.to_string(), entry: entry.clone() })?;
        let started: Vec<&PlacedInstance> = self.started.get(name).cloned().unwrap_or_default();
        let stopped: Vec<String> = self.planned.placement.stopped.get(name).cloned().unwrap_or_default();
        let spec = match desired {
            Some(Service::Deployable(s)) => Some(s),
            _ => None,
        };
        match change.action {
            Action::Destroy => {
                self.roll(name, None, &[], &stopped)?;
                self.record(Record::ServiceRemoved { service: name.to_string() })?;
                return Ok(());
            }
            Action::Create | Action::Replace => {
                self.roll(name, spec, &started, &stopped)?;
                if started.is_empty() && stopped.is_empty() {
                    // A legacy service, or one with no instances: wire it and tell its consumers.
                    self.wire_service(name, None)?;
                    self.push(name)?;
                }
            }
            Action::Update => self.update(change, spec, &started, &stopped)?,
        }
        if let Some(entry) = entry {
            self.record(Record::ServiceApplied { service: name.to_string(), entry })?;
        }
        Ok(())
    }

    /// An update: a rolling replacement when the instances themselves change (memory, a
    /// restart, another account; dead instances are replaced that way too), else a scale out
    /// or in; then the consumers of providers it moved to are rewired.
    fn update(
        &self,
        change: &Change,
        spec: Option<&DeployableServiceSpec>,
        started: &[&PlacedInstance],
        stopped: &[String],
    ) -> StepResult {
        let name = change.service.as_str();
        // Dead instances are replaced like a rolling replacement: each leaves every list and
        // stops before its replacement starts (placement says so).
        let rolling = change.memory.is_some()
            || !change.restart.is_empty()
            || change.fields.iter().any(|f| f.path == "/cloudAccount");
        if rolling {
            self.roll(name, spec, started, stopped)?;
        } else {
            // Scale out: new instances up and wired; scale in: leaving instances out of
            // every list. Consumers learn both in one call, then the leaving ones stop.
            if let Some(spec) = spec
                && !started.is_empty()
            {
                let fresh = self.start_all(name, spec, started)?;
                self.wire_instances(name, &fresh)?;
            }
            let moved = change.fields.iter().any(|f| f.path == "/nativeURIs");
            if moved {
                // A legacy service at new URIs: those hold nothing yet.
                self.wire_service(name, None)?;
            }
            if !started.is_empty() || !stopped.is_empty() || moved {
                self.push_leaving(name, stopped)?;
            }
            self.stop_all(name, stopped)?;
        }
        if !change.rewire.is_empty() {
            self.wire_service(name, Some(&change.rewire))?;
        }
        Ok(())
    }

    /// Replaces `stopped` by `started` one at a time, new before old: start, health-check and
    /// wire the new one; take the old one out of every consumer's list; stop it.
    fn roll(
        &self,
        name: &str,
        spec: Option<&DeployableServiceSpec>,
        started: &[&PlacedInstance],
        stopped: &[String],
    ) -> StepResult {
        if stopped.is_empty() && !started.is_empty() {
            // Nothing old keeps serving: start every new instance at once, then announce them.
            let Some(spec) = spec else { return Ok(()) };
            let fresh = self.start_all(name, spec, started)?;
            self.wire_instances(name, &fresh)?;
            return self.push(name);
        }
        if started.is_empty() && !stopped.is_empty() {
            // Everything goes: out of every consumer's list at once, then stopped together.
            self.push_leaving(name, stopped)?;
            return self.stop_all(name, stopped);
        }
        let mut remaining: VecDeque<&String> = stopped.iter().collect();
        // Takes an old instance out of every consumer's list, then stops it.
        let retire = |old: &String| -> StepResult {
            self.push_leaving(name, std::slice::from_ref(old))?;
            self.retire_instance(name, old)
        };
        for placed in started {
            if let Some(old) = &placed.after_stopping {
                // No spare slot: this one takes the old one's place, so the old one goes first.
                remaining.retain(|r| *r != old);
                retire(old)?;
            }
            if let Some(spec) = spec {
                let instance = self.start_instance(name, spec, placed)?;
                self.wire_instances(name, std::slice::from_ref(&instance.id))?;
            }
            match remaining.pop_front() {
                Some(old) => retire(old)?,
                None => self.push(name)?,
            }
        }
        while let Some(old) = remaining.pop_front() {
            retire(old)?;
        }
        Ok(())
    }

    /// Starts new instances together: every one is started (at most
    /// [`super::INSTANCES_AT_ONCE`] starts in flight), then every one is waited for until
    /// healthy and ready (as many waits); their ids once every one is.
    fn start_all(
        &self,
        name: &str,
        spec: &DeployableServiceSpec,
        started: &[&PlacedInstance],
    ) -> StepResult<Vec<String>> {
        let mut errors = Vec::new();
        let mut launched = Vec::with_capacity(started.len());
        for result in at_once_if(!self.instant(), started, |placed| self.launch(name, spec, placed)) {
            match result {
                Ok(instance) => launched.push(instance),
                Err(e) => errors.push(e),
            }
        }
        let mut fresh = Vec::with_capacity(launched.len());
        for result in at_once_if(!self.instant(), &launched, |instance| self.await_ready(name, spec, instance)) {
            match result {
                Ok(instance) => fresh.push(instance.id),
                Err(e) => errors.push(e),
            }
        }
        StepError::from_all(errors).map(|()| fresh)
    }

    /// Stops instances the plan takes away for good, together: every stop intent on disk with
    /// one sync, then at most [`super::INSTANCES_AT_ONCE`] stops at a time, each log removed
    /// after its stop (unless logs are kept).
    fn stop_all(&self, name: &str, ids: &[String]) -> StepResult {
        if ids.len() <= 1 {
            return ids.iter().try_for_each(|id| self.retire_instance(name, id));
        }
        let found: Vec<(InstanceState, NodeState)> = {
            let live = self.live();
            let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
            let instances = live.services.get(name).map(|s| s.instances.as_slice()).unwrap_or_default();
            instances
                .iter()
                .filter(|i| wanted.contains(i.id.as_str()))
                .filter_map(|i| Some((i.clone(), (**live.nodes.get(&i.node)?).clone())))
                .collect()
        };
        let intents: Vec<Record> = found
            .iter()
            .map(|(i, _)| Record::StopIntent { service: name.to_string(), instance: i.id.clone() })
            .collect();
        self.record_all(&intents)?;
        let stop = |(instance, node): &(InstanceState, NodeState)| -> StepResult {
            let provider = self.provider_of_node(node)?;
            self.stop_process(provider, name, instance, node)?;
            self.record(Record::Stopped { service: name.to_string(), instance: instance.id.clone() })?;
            self.progress(name, format!("{} stopped", instance.id));
            self.remove_log(name, instance, node);
            Ok(())
        };
        let errors: Vec<StepError> =
            at_once_if(!self.instant(), &found, stop).into_iter().filter_map(Result::err).collect();
        StepError::from_all(errors)
    }
}
