//! Property tests of the plan: deterministic, and carrying out a plan's changes (in the model)
//! leaves nothing to plan.

use enact::plan::converge::apply_model;
use enact::plan::model::RolloutOrder;
use enact::plan::{PlanInput, plan};
use enact::repo::settings::{Account, NodeSelector, Policy, Reservoir, RolloutSettings, Settings, SimulatedAccount};
use enact::spec::{Choreography, DeployableServiceSpec, LegacyServiceSpec, Memory, ServiceDependency, ServiceType};
use enact::state::State;
use proptest::prelude::*;

/// A service before names and dependencies are resolved.
#[derive(Debug, Clone)]
struct Shape {
    legacy: bool,
    instances: i64,
    memory: Memory,
    port: i64,
    version: u8,
    rest: bool,
    deps: Vec<usize>,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        prop::bool::weighted(0.15),
        0i64..4,
        prop_oneof![Just(Memory::Small), Just(Memory::Medium), Just(Memory::Large)],
        // Few ports, so instances often need distinct nodes.
        prop_oneof![Just(8000i64), Just(8001), Just(9000)],
        0u8..3,
        any::<bool>(),
        prop::collection::vec(0usize..64, 0..3),
    )
        .prop_map(|(legacy, instances, memory, port, version, rest, deps)| Shape {
            legacy,
            instances,
            memory,
            port,
            version,
            rest,
            deps,
        })
}

/// A valid choreography from shapes: dependencies point at other services (cycles allowed).
fn build(shapes: &[Shape], names: &[usize]) -> Choreography {
    let mut chor = Choreography::default();
    let n = names.len();
    for (i, s) in shapes.iter().enumerate().take(n) {
        let name = format!("svc{}", names[i]);
        let dependencies: Vec<ServiceDependency> = s
            .deps
            .iter()
            .map(|d| format!("svc{}", names[d % n]))
            .filter(|d| *d != name)
            .map(|d| ServiceDependency { service_spec_name: d.clone(), service_spec_role: d })
            .collect();
        if s.legacy {
            chor.legacy_service_specs.push(LegacyServiceSpec {
                name: name.clone(),
                roles: vec![name.clone()],
                dependencies,
                service_type: None,
                native_uris: vec![format!("http://10.0.0.{}:80/{name}", i + 1)],
            });
        } else {
            chor.deployable_service_specs.push(DeployableServiceSpec {
                name: name.clone(),
                roles: vec![name.clone()],
                dependencies,
                service_type: s.rest.then_some(ServiceType::Rest),
                package_uri: Some(format!("services/{name}.py")),
                port: Some(s.port),
                number_of_instances: Some(s.instances),
                resource_impact: Some(enact::spec::model::ResourceImpact {
                    memory: Some(s.memory),
                    ..Default::default()
                }),
                version: Some(format!("1.{}", s.version)),
                ..Default::default()
            });
        }
    }
    chor.normalize();
    chor
}

/// The node selection policy `policy % 3`; from 3 on (half the cases), with the services in a
/// simulated account that keeps a reservoir of 0–3 spares.
fn settings(policy: u8) -> Settings {
    let kind = match policy % 3 {
        0 => Policy::AlwaysCreate,
        1 => Policy::RoundRobin,
        _ => Policy::LimitedRoundRobin,
    };
    let mut settings =
        Settings { node_selector: Some(NodeSelector { policy: kind, vm_limit: Some(10_000) }), ..Default::default() };
    if policy % 6 >= 3 {
        let initial_size = u32::from(policy / 6 % 4);
        let reservoir = Reservoir { initial_size, threshold: i64::from((policy / 24 % 2).min(initial_size as u8)) };
        with_reservoir(&mut settings, reservoir);
    }
    settings
}

/// Places the services in the simulated account `sim`, which keeps `reservoir`.
fn with_reservoir(settings: &mut Settings, reservoir: Reservoir) {
    settings.accounts.insert("sim".into(), Account::Simulated(SimulatedAccount::default()));
    settings.default_account = Some("sim".into());
    settings.reservoir = Some(reservoir);
}

fn input<'a>(spec: &'a Choreography, state: &'a State, settings: &'a Settings) -> PlanInput<'a> {
    PlanInput { env: "dev", spec, state, settings, targets: &[], observed: None }
}

/// Two random choreographies over overlapping names: the first is applied, the second planned.
fn scenario() -> impl Strategy<Value = (Choreography, Choreography, u8)> {
    (prop::collection::vec(shape(), 0..24), prop::collection::vec(shape(), 0..24), any::<u8>(), 0usize..12).prop_map(
        |(old, new, policy, shift)| {
            let old_names: Vec<usize> = (0..old.len()).collect();
            let new_names: Vec<usize> = (shift..shift + new.len()).collect();
            (build(&old, &old_names), build(&new, &new_names), policy)
        },
    )
}

/// A few services, then the same ones edited the way rolling replacements come about: a new
/// version, sometimes another memory size or instance count; with a `vmLimit` of 1–7.
fn rolling_scenario() -> impl Strategy<Value = (Choreography, Choreography, u32)> {
    let edit = (1u8..3, prop::bool::weighted(0.2), prop::bool::weighted(0.2), prop::bool::weighted(0.3));
    (prop::collection::vec((shape(), edit), 1..5), 1u32..8).prop_map(|(services, limit)| {
        let old: Vec<Shape> = services.iter().map(|(s, _)| Shape { legacy: false, ..s.clone() }).collect();
        let new: Vec<Shape> = services
            .iter()
            .map(|(s, (bump, resize, rescale, same))| {
                let mut n = Shape { legacy: false, ..s.clone() };
                if !same {
                    n.version = s.version.wrapping_add(*bump);
                }
                if *resize {
                    n.memory = if s.memory == Memory::Small { Memory::Medium } else { Memory::Small };
                }
                if *rescale {
                    n.instances = (s.instances + 1) % 4;
                }
                n
            })
            .collect();
        let names: Vec<usize> = (0..old.len()).collect();
        (build(&old, &names), build(&new, &names), limit)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_plan_is_deterministic((old, new, policy) in scenario(), seed in any::<u64>()) {
        let settings = settings(policy);
        let empty = State::empty("dev");
        let prior = apply_model(&empty, &old, &plan(input(&old, &empty, &settings)).unwrap());
        let first = plan(input(&new, &prior, &settings)).unwrap().plan.to_json();
        let second = plan(input(&new, &prior, &settings)).unwrap().plan.to_json();
        prop_assert_eq!(&first, &second);

        // The order services are written in does not matter either.
        let mut shuffled = new;
        let len = shuffled.deployable_service_specs.len();
        if len > 1 {
            shuffled.deployable_service_specs.rotate_left((seed as usize) % len);
            shuffled.deployable_service_specs.swap(0, len - 1);
        }
        shuffled.normalize();
        let third = plan(input(&shuffled, &prior, &settings)).unwrap().plan.to_json();
        prop_assert_eq!(&first, &third);
    }

    #[test]
    fn carrying_out_a_plan_leaves_nothing_to_plan((old, new, policy) in scenario()) {
        let settings = settings(policy);
        let empty = State::empty("dev");
        let prior = apply_model(&empty, &old, &plan(input(&old, &empty, &settings)).unwrap());
        let planned = plan(input(&new, &prior, &settings)).unwrap();
        let after = apply_model(&prior, &new, &planned);
        let again = plan(input(&new, &after, &settings)).unwrap().plan;
        prop_assert!(!again.has_changes(), "changes left: {}", again.to_json());
        prop_assert!(again.nodes.is_empty(), "nodes left: {:?}", again.nodes);

        // Every instance the model recorded sits on a node it knows, and no node holds two
        // instances on one port.
        let mut used = std::collections::HashSet::new();
        for (name, service) in &after.services {
            if let enact::state::AppliedSpec::Deployable(spec) = &*service.spec {
                prop_assert_eq!(service.instances.len() as u32, spec.instances(), "{}", name);
                for instance in &service.instances {
                    prop_assert!(after.nodes.contains_key(&instance.node), "{} on unknown node", instance.id);
                    prop_assert!(!after.nodes[&instance.node].spare, "{} on a spare node", instance.id);
                    prop_assert!(used.insert((instance.node.clone(), spec.port)), "port {:?} twice on {}", spec.port, instance.node);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Under `LIMITED_ROUND_ROBIN` with a small `vmLimit` a plan either places every instance on
    /// at most `vmLimit` nodes, never two on one port of a node, or is refused naming the limit.
    /// At no moment of the apply do more than `vmLimit` nodes exist: apply creates the new nodes
    /// first and frees the emptied ones last, so the state's nodes plus the new ones stay within
    /// the limit. Every rollout says what its placement does.
    /// (Debug builds check placement's load index against a scan of all nodes at every choice.)
    #[test]
    fn a_small_vm_limit_is_kept_or_refused((old, new, _) in scenario(), limit in 1u32..8) {
        vm_limit_is_kept_or_refused(&old, &new, limit, None)?;
    }

    /// The same, on rolling replacements of a few services.
    #[test]
    fn a_small_vm_limit_is_kept_or_refused_while_rolling((old, new, limit) in rolling_scenario()) {
        vm_limit_is_kept_or_refused(&old, &new, limit, None)?;
    }

    /// The same with a reservoir of spare nodes, which count against the limit.
    #[test]
    fn a_small_vm_limit_is_kept_with_spares_or_refused(
        (old, new, _) in scenario(), limit in 1u32..8, initial_size in 1u32..4, threshold in 0u32..4,
    ) {
        let reservoir = Reservoir { initial_size, threshold: i64::from(threshold.min(initial_size)) };
        vm_limit_is_kept_or_refused(&old, &new, limit, Some(reservoir))?;
    }
}

/// The body of the `vmLimit` properties: `old` planned from nothing, then `new` from there. With
/// a `reservoir`, the services go to a simulated account that keeps one: the spares freed first
/// leave room, the spares made last count once the emptied nodes are gone.
fn vm_limit_is_kept_or_refused(
    old: &Choreography,
    new: &Choreography,
    limit: u32,
    reservoir: Option<Reservoir>,
) -> Result<(), TestCaseError> {
    let mut settings = Settings {
        node_selector: Some(NodeSelector { policy: Policy::LimitedRoundRobin, vm_limit: Some(limit) }),
        ..Default::default()
    };
    if let Some(reservoir) = reservoir {
        with_reservoir(&mut settings, reservoir);
    }
    let empty = State::empty("dev");
    let check = |prior: &State, spec: &Choreography| -> Result<Option<State>, TestCaseError> {
        match plan(input(spec, prior, &settings)) {
            Ok(planned) => {
                let placement = &planned.placement;
                let existing = prior.nodes.len() - placement.freed_spares.len() + placement.new_nodes.len();
                prop_assert!(
                    existing <= limit as usize,
                    "{} state nodes - {} spares freed + {} new nodes exceed vmLimit {}",
                    prior.nodes.len(),
                    placement.freed_spares.len(),
                    placement.new_nodes.len(),
                    limit
                );
                check_rollouts(&planned)?;
                let after = apply_model(prior, spec, &planned);
                prop_assert!(after.nodes.len() <= limit as usize, "{} nodes after the apply", after.nodes.len());
                if reservoir.is_some() && !spec.deployable_service_specs.is_empty() {
                    let spares = after.nodes.values().filter(|n| n.spare).count();
                    prop_assert!(
                        spares > 0 || after.nodes.len() == limit as usize,
                        "no spare, yet room under the limit"
                    );
                }
                let mut used = std::collections::HashSet::new();
                for service in after.services.values() {
                    if let enact::state::AppliedSpec::Deployable(s) = &*service.spec {
                        for instance in &service.instances {
                            prop_assert!(
                                used.insert((instance.node.clone(), s.port)),
                                "port {:?} twice on {}",
                                s.port,
                                instance.node
                            );
                        }
                    }
                }
                Ok(Some(after))
            }
            Err(errors) => {
                let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
                prop_assert!(text.iter().all(|e| e.contains("vmLimit")), "{:?}", text);
                Ok(None)
            }
        }
    };
    if let Some(prior) = check(&empty, old)? {
        prop_assert!(prior.nodes.len() <= limit as usize, "{} nodes over vmLimit {}", prior.nodes.len(), limit);
        check(&prior, new)?;
    }
    Ok(())
}

/// Every rolling replacement has a rollout that matches its placement: `oldFirst` lists the
/// `after_stopping` instances in order, the order follows from them, and the service is never
/// left without a serving instance more often than an instance stops first.
fn check_rollouts(planned: &enact::plan::Planned) -> Result<(), TestCaseError> {
    for change in &planned.plan.changes {
        let started: Vec<_> = planned.placement.started.iter().filter(|p| p.service == change.service).collect();
        let old_first: Vec<String> = started.iter().filter_map(|p| p.after_stopping.clone()).collect();
        let Some(rollout) = &change.rollout else {
            prop_assert!(old_first.is_empty(), "{}: instances stop first but there is no rollout", change.service);
            continue;
        };
        prop_assert_eq!(&rollout.old_first, &old_first, "{}", change.service);
        let order = match old_first.len() {
            0 => RolloutOrder::NewBeforeOld,
            n if n == started.len() => RolloutOrder::OldBeforeNew,
            _ => RolloutOrder::Mixed,
        };
        prop_assert_eq!(rollout.order, order, "{}", change.service);
        prop_assert!(rollout.empty_windows as usize <= old_first.len(), "{}", change.service);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// With `rollout.maxUnavailable` 0 no plan stops an old instance before its replacement is
    /// ready: it is refused instead, naming the setting (or the limit, as above).
    #[test]
    fn max_unavailable_0_never_plans_an_old_first_stop((old, new, limit) in rolling_scenario()) {
        let loose = Settings {
            node_selector: Some(NodeSelector { policy: Policy::LimitedRoundRobin, vm_limit: Some(limit) }),
            ..Default::default()
        };
        let strict = Settings { rollout: Some(RolloutSettings { max_unavailable: Some(0) }), ..loose.clone() };
        let empty = State::empty("dev");
        let Ok(first) = plan(input(&old, &empty, &loose)) else {
            return Ok(());
        };
        let prior = apply_model(&empty, &old, &first);
        match (plan(input(&new, &prior, &strict)), plan(input(&new, &prior, &loose))) {
            (Ok(planned), _) => {
                prop_assert!(planned.plan.changes.iter().filter_map(|c| c.rollout.as_ref()).all(|r| r.old_first.is_empty()));
            }
            (Err(errors), loose) => {
                let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
                let refused_by_setting = text.iter().all(|e| e.contains("`rollout.maxUnavailable` is 0"));
                // Refused for the setting exactly when the loose plan stops an instance first.
                match loose {
                    Ok(planned) => {
                        prop_assert!(refused_by_setting, "{:?}", text);
                        prop_assert!(planned.plan.changes.iter().filter_map(|c| c.rollout.as_ref()).any(|r| !r.old_first.is_empty()));
                    }
                    Err(_) => prop_assert!(text.iter().all(|e| e.contains("vmLimit")), "{:?}", text),
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// `export` then import (what `merge` reads) gives the same choreography, and exporting
    /// again gives the same bytes.
    #[test]
    fn import_of_export_is_the_identity((chor, _, _) in scenario(), seed in any::<u64>()) {
        let text = chor.to_canonical_json();
        let mut imported: Choreography = serde_json::from_str(&text).unwrap();
        imported.normalize();
        prop_assert_eq!(&imported, &chor);
        prop_assert_eq!(&imported.to_canonical_json(), &text);
        // Written in another order, the same choreography exports to the same bytes.
        let mut shuffled = chor;
        let len = shuffled.deployable_service_specs.len();
        if len > 1 {
            shuffled.deployable_service_specs.rotate_left((seed as usize) % len);
        }
        prop_assert_eq!(shuffled.to_canonical_json(), text);
    }
}
