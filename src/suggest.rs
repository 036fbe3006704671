//! "Did you mean …?": the known name closest to a mistyped one, by edit distance.
//!
//! The distance is the optimal string alignment distance of [`strsim`] (insertions, deletions,
//! substitutions and swaps of two neighbours each count 1, so `prot` is 1 from `port`),
//! compared without regard to case (`Dev` is 0 from `dev`). A name is suggested only when it
//! is close: at most a third of the typed name's length apart (at least 1), so a short typo
//! finds its name and an unrelated word finds none.
//!
//! A leaf: depends on nothing of enact.

/// The candidate closest to `typed`, if one is close enough to be what was meant; on a tie the
/// first in `candidates`' order.
pub fn closest<'a, I>(typed: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let typed_lower = typed.to_lowercase();
    let limit = (typed.chars().count() / 3).max(1);
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        if candidate == typed {
            continue;
        }
        let distance = strsim::osa_distance(&typed_lower, &candidate.to_lowercase());
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, name)| name)
}

/// "did you mean `x`?" for the closest candidate, or `None`.
pub fn did_you_mean<'a, I>(typed: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    closest(typed, candidates).map(|name| format!("did you mean `{name}`?"))
}

/// A hint that starts with "did you mean `x`?" when a candidate is close, followed by
/// "Otherwise " and `otherwise`; `otherwise` alone when none is.
pub fn hint<'a, I>(typed: &str, candidates: I, otherwise: &str) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    match did_you_mean(typed, candidates) {
        Some(suggestion) => format!("{suggestion} Otherwise {otherwise}"),
        None => otherwise.to_string(),
    }
}

/// The names serde puts in backticks in an "unknown field" or "unknown variant" message: the
/// typed one first, then the expected ones.
pub fn names_in_serde_message(message: &str) -> Vec<&str> {
    message.split('`').skip(1).step_by(2).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_name_and_unrelated_words_none() {
        let fields = ["name", "port", "packageUri", "packageType", "numberOfInstances"];
        assert_eq!(closest("prot", fields), Some("port"));
        assert_eq!(closest("packageURI", fields), Some("packageUri"));
        assert_eq!(closest("numberOfInstance", fields), Some("numberOfInstances"));
        assert_eq!(closest("colour", fields), None);
        let envs = ["dev", "prod", "test"];
        assert_eq!(closest("prd", envs), Some("prod"));
        assert_eq!(closest("Dev", envs), Some("dev"));
        assert_eq!(closest("staging", envs), None);
        assert_eq!(closest("dev", envs), None, "the name itself is no suggestion");
        assert_eq!(
            closest(
                "CD-marketingmanger-marketingapplication",
                ["CD-marketingmanager-marketingapplication", "CD-marketingapplication-marketingmanager"]
            ),
            Some("CD-marketingmanager-marketingapplication")
        );
    }

    #[test]
    fn the_hint_leads_with_the_suggestion() {
        assert_eq!(hint("lcoal", ["local", "ssh"], "define it"), "did you mean `local`? Otherwise define it");
        assert_eq!(hint("zzz", ["local"], "define it"), "define it");
        assert_eq!(
            names_in_serde_message("unknown field `prot`, expected one of `name`, `port`"),
            ["prot", "name", "port"]
        );
    }
}
