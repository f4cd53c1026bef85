//! Mixture-of-Agents: the aggregator's prompt, and which proposers a query calls.
//!
//! An ensemble fans a query out to `k` proposer models and asks an aggregator model to answer it with their
//! answers in view (Wang et al., "Mixture-of-Agents Enhances Large Language Model Capabilities", 2024). The
//! aggregator sees the conversation unchanged, preceded by a system message that lists the proposals, each cut
//! to a bound so one long answer cannot crowd out the others or the aggregator's context window.

/// What the aggregator is told before the proposals.
const INSTRUCTIONS: &str = "You have been given answers from several models to the latest user message. \
Synthesise them into one answer of the highest quality: weigh them critically, since some may be biased or \
wrong, do not simply copy one, and do not mention that several answers were given. Reply to the user directly.";

/// The system message of the aggregator: the instructions, then the numbered proposals, each cut to
/// `max_chars` characters (on a character boundary, marked `[...]` when cut).
pub fn aggregator_prompt<S: AsRef<str>>(proposals: &[S], max_chars: usize) -> String {
    let mut out =
        String::with_capacity(INSTRUCTIONS.len() + proposals.iter().map(|p| p.as_ref().len() + 16).sum::<usize>());
    out.push_str(INSTRUCTIONS);
    out.push_str("\n\nAnswers:");
    for (i, proposal) in proposals.iter().enumerate() {
        let text = proposal.as_ref().trim();
        out.push_str(&format!("\n\n{}. ", i + 1));
        match text.char_indices().nth(max_chars) {
            Some((cut, _)) => {
                out.push_str(&text[..cut]);
                out.push_str(" [...]");
            }
            None => out.push_str(text),
        }
    }
    out
}

/// The proposers a query calls: the first `k` available ones, in the configured order (indices into the
/// proposers). With fewer than `k` available, those there are.
pub fn pick_proposers(available: &[bool], k: usize) -> Vec<usize> {
    available.iter().enumerate().filter(|(_, a)| **a).map(|(i, _)| i).take(k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_lists_every_proposal_cut_to_the_bound() {
        let long = "é".repeat(50);
        let p = aggregator_prompt(&["  four  ", long.as_str()], 10);
        assert!(p.starts_with(INSTRUCTIONS));
        assert!(p.contains("\n\n1. four\n\n2. "), "{p}");
        assert!(p.ends_with(&format!("{} [...]", "é".repeat(10))), "cut on a character boundary: {p}");
    }

    #[test]
    fn proposers_are_the_first_k_available() {
        assert_eq!(pick_proposers(&[true, false, true, true], 2), [0, 2]);
        assert_eq!(pick_proposers(&[false, false, true], 2), [2]);
        assert!(pick_proposers(&[false], 1).is_empty());
    }
}
