//! How the nodes of one step become `RunInstances` calls, and how the instances EC2 made are
//! told apart again.
//!
//! One call makes every node of one instance type (`MinCount` = `MaxCount` = N). The tags of a
//! call are the same on every instance it makes, so a node's id is not a tag of its own: the
//! call's tag [`NODES_TAG`] lists the batch's node ids (their account prefix once, a colon, then
//! number ranges: `aws-:1-40,45`), and each instance's place in the call (its `AmiLaunchIndex`,
//! 0 to N − 1) picks its id from that list. A batch whose list would not fit in one tag value
//! (256 characters, EC2's limit) is split.

use std::collections::BTreeMap;

/// The tag that holds an instance's environment lineage.
pub const LINEAGE_TAG: &str = "enact:lineage";
/// The tag that holds the environment's name.
pub const ENV_TAG: &str = "enact:env";
/// The tag that holds the account's name in `enact.json`.
pub const ACCOUNT_TAG: &str = "enact:account";
/// The tag that holds the node ids of the call that made the instance (see the module docs).
pub const NODES_TAG: &str = "enact:nodes";
/// The tag that holds the call's idempotency token: an interrupted call's instances are found
/// by it.
pub const REQUEST_TAG: &str = "enact:request";

/// The longest tag value EC2 takes, in characters.
pub const MAX_TAG_VALUE: usize = 256;

/// Node ids written compactly: the common prefix once, a colon, then the numbers in their order,
/// runs of consecutive numbers as ranges (`["aws-1", "aws-2", "aws-3", "aws-7"]` → `aws-:1-3,7`). `None` when the ids do not all have
/// the form `<prefix><number>` with one prefix (the caller then splits the batch).
pub fn encode_ids(ids: &[String]) -> Option<String> {
    let (prefix, _) = split_id(ids.first()?)?;
    let mut numbers = Vec::with_capacity(ids.len());
    for id in ids {
        let (p, n) = split_id(id)?;
        if p != prefix {
            return None;
        }
        numbers.push(n);
    }
    // The order of the ids is the order of the launch indexes: keep it, writing runs of
    // consecutive numbers as ranges.
    let mut text = format!("{prefix}:");
    let mut i = 0;
    while i < numbers.len() {
        let start = numbers[i];
        let mut end = start;
        while i + 1 < numbers.len() && numbers[i + 1] == end + 1 {
            end += 1;
            i += 1;
        }
        if !text.ends_with(':') {
            text.push(',');
        }
        if start == end {
            text.push_str(&start.to_string());
        } else {
            text.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    Some(text)
}

/// The ids [`encode_ids`] wrote, in their order; `None` when `text` is not such a list.
pub fn decode_ids(text: &str) -> Option<Vec<String>> {
    let (prefix, ranges) = text.rsplit_once(':')?;
    let mut ids = Vec::new();
    for range in ranges.split(',') {
        let (start, end) = match range.split_once('-') {
            Some((a, b)) => (a.parse::<u64>().ok()?, b.parse::<u64>().ok()?),
            None => {
                let n = range.parse::<u64>().ok()?;
                (n, n)
            }
        };
        if end < start || end - start > 100_000 {
            return None;
        }
        ids.extend((start..=end).map(|n| format!("{prefix}{n}")));
    }
    Some(ids)
}

/// `aws-12` → (`aws-`, 12).
fn split_id(id: &str) -> Option<(&str, u64)> {
    let digits = id.len() - id.bytes().rev().take_while(u8::is_ascii_digit).count();
    let (prefix, number) = id.split_at(digits);
    if prefix.is_empty() || number.is_empty() || (number.len() > 1 && number.starts_with('0')) {
        return None;
    }
    Some((prefix, number.parse().ok()?))
}

/// The node ids of one `RunInstances` call, of one instance type, and the tag value that names
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The instance type of every node of the batch.
    pub instance_type: String,
    /// The node ids, in launch-index order.
    pub ids: Vec<String>,
    /// [`encode_ids`] of `ids`, at most [`MAX_TAG_VALUE`] characters.
    pub tag: String,
}

/// The `RunInstances` calls that make `nodes` (node id, instance type): one per instance type,
/// split where the ids would not fit in one tag value or a call would ask for more than
/// `per_call` nodes.
pub fn batches<'a>(nodes: impl IntoIterator<Item = (&'a str, &'a str)>, per_call: usize) -> Vec<Batch> {
    let per_call = per_call.max(1);
    let mut by_type: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (id, instance_type) in nodes {
        by_type.entry(instance_type).or_default().push(id.to_string());
    }
    let mut out = Vec::new();
    for (instance_type, ids) in by_type {
        let mut current: Vec<String> = Vec::new();
        for id in ids {
            current.push(id);
            let fits = current.len() <= per_call && encode_ids(&current).is_some_and(|t| t.len() <= MAX_TAG_VALUE);
            if !fits && current.len() > 1 {
                let last = current.pop().expect("more than one");
                out.push(batch_of(instance_type, std::mem::take(&mut current)));
                current.push(last);
            }
        }
        if !current.is_empty() {
            out.push(batch_of(instance_type, current));
        }
    }
    out
}

fn batch_of(instance_type: &str, ids: Vec<String>) -> Batch {
    // An id that has no number of its own is listed alone, as it is.
    let tag = encode_ids(&ids).unwrap_or_else(|| ids.join(","));
    Batch { instance_type: instance_type.to_string(), ids, tag }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn ids_are_written_as_ranges_and_read_back_in_order() {
        let list = ids(&["aws-1", "aws-2", "aws-3", "aws-7", "aws-9", "aws-10"]);
        let text = encode_ids(&list).expect("one prefix");
        assert_eq!(text, "aws-:1-3,7,9-10");
        assert_eq!(decode_ids(&text), Some(list));
        for list in [ids(&["my-aws-12", "my-aws-13"]), ids(&["aws2-1", "aws2-3"]), ids(&["a-9", "a-10", "a-11"])] {
            assert_eq!(decode_ids(&encode_ids(&list).expect("one prefix")), Some(list));
        }
    }

    #[test]
    fn ids_of_two_prefixes_or_without_numbers_are_not_one_list() {
        assert_eq!(encode_ids(&ids(&["aws-1", "gcp-2"])), None);
        assert_eq!(encode_ids(&ids(&["aws-x"])), None);
        assert_eq!(encode_ids(&ids(&["aws-01"])), None);
        assert_eq!(decode_ids("aws-"), None);
        assert_eq!(decode_ids("aws-:5-2"), None);
        assert_eq!(decode_ids("aws-:x"), None);
    }

    #[test]
    fn one_call_per_instance_type_split_only_when_the_tag_is_full() {
        let nodes: Vec<(String, &str)> =
            (1..=200).map(|i| (format!("aws-{i}"), if i % 2 == 0 { "t3.small" } else { "t3.micro" })).collect();
        let made = batches(nodes.iter().map(|(id, t)| (id.as_str(), *t)), usize::MAX);
        // Every other number: 100 numbers of one type do not fit in 256 characters, so each
        // type takes two calls.
        assert_eq!(made.len(), 4, "{made:?}");
        for batch in &made {
            assert!(batch.tag.len() <= MAX_TAG_VALUE, "{}", batch.tag);
            assert_eq!(decode_ids(&batch.tag).as_ref(), Some(&batch.ids));
        }
        let micro: Vec<String> =
            made.iter().filter(|b| b.instance_type == "t3.micro").flat_map(|b| b.ids.clone()).collect();
        let expected: Vec<String> = (1..=200).step_by(2).map(|i| format!("aws-{i}")).collect();
        assert_eq!(micro, expected);
        let contiguous: Vec<String> = (1..=200).map(|i| format!("aws-{i}")).collect();
        let one = batches(contiguous.iter().map(|id| (id.as_str(), "t3.micro")), usize::MAX);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].tag, "aws-:1-200");
        let each = batches(contiguous.iter().map(|id| (id.as_str(), "t3.micro")), 1);
        assert_eq!(each.len(), 200, "one call per node when asked");
        let tens = batches(contiguous.iter().map(|id| (id.as_str(), "t3.micro")), 64);
        assert_eq!(tens.iter().map(|b| b.ids.len()).collect::<Vec<_>>(), [64, 64, 64, 8]);
    }
}
