//! The ec2 provider: nodes are EC2 instances made with `RunInstances`, one call for all the
//! nodes of one instance type in a step, tagged with the environment's lineage, its name and the
//! node's id; instances are deployed on them over SSH.

pub mod api;
pub mod batch;
pub mod nodes;
