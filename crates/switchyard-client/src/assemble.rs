//! Putting a streamed answer back together from the chunks of several attempts.
//!
//! Two attempts of one query may both publish chunks to the client's reply subject (a hedge that lost, or a retry
//! after a stream broke), interleaved, and chunks published by different nodes may arrive out of order. This
//! module is the pure part of the stream rules of [`crate`]: no bus, no clock. It buffers every chunk by attempt
//! and sequence number, emits the deltas of the attempt it follows (the first one to send a chunk) in `seq`
//! order, and on the final frame makes the emitted text the winner's: if the winner is another attempt it emits
//! [`StreamEvent::Restart`] and then the winner's chunks from the start.

use std::collections::BTreeMap;

use switchyard_protocol::client::QueryReply;

/// What a streaming query yields, in order: deltas, possibly a restart and more deltas, then one `Done`.
///
/// The deltas emitted after the last `Restart` (or from the start), concatenated, are exactly
/// [`StreamDone::text`].
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The next piece of text of the attempt being followed, in sequence order.
    Delta {
        /// The attempt the text belongs to (0 when it comes from an answer that was not streamed).
        attempt: u32,
        text: String,
    },
    /// The text emitted so far belongs to an attempt that did not answer: discard it. The deltas that follow
    /// are the answering attempt's, from its beginning.
    Restart {
        /// The attempt whose deltas follow.
        attempt: u32,
    },
    /// The end of the stream.
    Done(Box<StreamDone>),
}

/// The end of a stream: the answer, and the text the stream delivered for it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamDone {
    /// The attempt that answered (0 when the answer came without chunks, e.g. to a de-duplicated copy).
    pub attempt: u32,
    /// The winning attempt's chunks in sequence order (the reply's content when it came without chunks).
    pub text: String,
    /// The final summary; its `content` is the node's full text of the answer (the chunks' text when the final
    /// frame left it out, as a node does when the frame would not fit in one bus message).
    pub reply: QueryReply,
}

/// Fewer chunks of the winning attempt arrived than it published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Missing {
    pub attempt: u32,
    pub expected: u64,
    pub got: u64,
}

/// Buffers chunks per attempt and decides what to emit.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    attempts: BTreeMap<u32, BTreeMap<u64, String>>,
    /// The attempt whose deltas are emitted live: the first one that sent a chunk.
    followed: Option<u32>,
    /// The next sequence number of `followed` to emit.
    next_seq: u64,
    /// What was emitted since the start or the last restart.
    emitted: String,
    /// A final frame is known; chunks are only buffered until [`Assembler::finish`] succeeds.
    finishing: bool,
}

impl Assembler {
    /// Takes one chunk and returns the deltas it makes emittable (none when it is out of order, belongs to an
    /// attempt not followed, or repeats a chunk already seen).
    pub fn chunk(&mut self, attempt: u32, seq: u64, delta: String) -> Vec<StreamEvent> {
        let buffer = self.attempts.entry(attempt).or_default();
        if buffer.contains_key(&seq) {
            return Vec::new();
        }
        buffer.insert(seq, delta);
        let followed = *self.followed.get_or_insert(attempt);
        if self.finishing || attempt != followed {
            return Vec::new();
        }
        let mut events = Vec::new();
        while let Some(text) = self.attempts.get(&followed).and_then(|b| b.get(&self.next_seq)).cloned() {
            self.next_seq += 1;
            self.emit(&mut events, followed, text);
        }
        events
    }

    /// Takes the final frame: attempt `attempt` answered after publishing `chunks` chunks.
    ///
    /// Returns the remaining events, ending with [`StreamEvent::Done`], or what is missing when some of the
    /// winner's chunks have not arrived (they may still come: chunks and the final frame can be published by
    /// different nodes). It can be called again after more chunks came.
    pub fn finish(&mut self, attempt: u32, chunks: u64, reply: &QueryReply) -> Result<Vec<StreamEvent>, Missing> {
        if attempt == 0 || chunks == 0 {
            return Ok(self.finish_from_content(attempt, reply));
        }
        let empty = BTreeMap::new();
        let buffer = self.attempts.get(&attempt).unwrap_or(&empty);
        let winner: Vec<String> = buffer.range(..chunks).map(|(_, text)| text.clone()).collect();
        let got = winner.len() as u64;
        if got < chunks {
            self.finishing = true;
            return Err(Missing { attempt, expected: chunks, got });
        }
        let mut events = Vec::new();
        let start = if self.followed == Some(attempt) && self.next_seq <= chunks {
            self.next_seq
        } else {
            if !self.emitted.is_empty() {
                self.restart(&mut events, attempt);
            }
            0
        };
        for text in winner.iter().skip(usize::try_from(start).unwrap_or(usize::MAX)) {
            self.emit(&mut events, attempt, text.clone());
        }
        self.followed = Some(attempt);
        self.next_seq = chunks;
        let text = winner.concat();
        let mut reply = reply.clone();
        if reply.content.is_empty() {
            // A final frame that would not fit in one bus message leaves the content to its chunks.
            reply.content.clone_from(&text);
        }
        events.push(StreamEvent::Done(Box::new(StreamDone { attempt, text, reply })));
        Ok(events)
    }

    /// What is missing of the followed attempt when it failed after publishing `chunks` chunks: the chunks that
    /// went out before its error are still shown, so the error waits for them. `None` when they were all emitted,
    /// or when another attempt is the one shown (the failed one's chunks would never be).
    pub fn missing_before_error(&self, attempt: u32, chunks: u64) -> Option<Missing> {
        (attempt != 0 && self.followed.is_none_or(|followed| followed == attempt) && self.next_seq < chunks)
            .then_some(Missing { attempt, expected: chunks, got: self.next_seq })
    }

    /// An answer without chunks: its content is the text. What was already emitted stays when it is a prefix of
    /// the content (the same words, whoever streamed them); otherwise the consumer is told to restart.
    fn finish_from_content(&mut self, attempt: u32, reply: &QueryReply) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        let content = reply.content.clone();
        let rest = match content.strip_prefix(self.emitted.as_str()) {
            Some(rest) => rest.to_owned(),
            None => {
                self.restart(&mut events, attempt);
                content.clone()
            }
        };
        if !rest.is_empty() {
            self.emit(&mut events, attempt, rest);
        }
        events.push(StreamEvent::Done(Box::new(StreamDone { attempt, text: content, reply: reply.clone() })));
        events
    }

    fn emit(&mut self, events: &mut Vec<StreamEvent>, attempt: u32, text: String) {
        self.emitted.push_str(&text);
        events.push(StreamEvent::Delta { attempt, text });
    }

    fn restart(&mut self, events: &mut Vec<StreamEvent>, attempt: u32) {
        self.emitted.clear();
        events.push(StreamEvent::Restart { attempt });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use switchyard_protocol::Usage;
    use switchyard_protocol::client::Trace;

    pub(crate) fn reply(content: &str) -> QueryReply {
        QueryReply {
            id: Some("q".into()),
            content: content.into(),
            model: "m".into(),
            provider: "p".into(),
            finish_reason: None,
            usage: Usage::default(),
            cost_usd: 0.0,
            latency_ms: 0.0,
            logprobs: None,
            trace: Trace::default(),
        }
    }

    /// A frame fed to the assembler: `(attempt, seq, text)` chunks, or the final `(attempt, chunks, content)`.
    enum In {
        C(u32, u64, &'static str),
        Done(u32, u64, &'static str),
    }

    /// Feeds `frames`; returns what a live printer would show (deltas, `|` for a restart), the final text, or
    /// the gap.
    fn check(frames: &[In], shown: &str, text: Result<&str, Missing>) {
        let mut assembler = Assembler::default();
        let mut out = String::new();
        let mut done = None;
        let mut missing = None;
        for frame in frames {
            let events = match frame {
                In::C(attempt, seq, delta) => assembler.chunk(*attempt, *seq, (*delta).into()),
                In::Done(attempt, chunks, content) => match assembler.finish(*attempt, *chunks, &reply(content)) {
                    Ok(events) => {
                        missing = None;
                        events
                    }
                    Err(m) => {
                        missing = Some(m);
                        Vec::new()
                    }
                },
            };
            for event in events {
                match event {
                    StreamEvent::Delta { text, .. } => out.push_str(&text),
                    StreamEvent::Restart { .. } => out.push('|'),
                    StreamEvent::Done(d) => done = Some(d.text),
                }
            }
        }
        assert_eq!(out, shown, "shown text");
        match text {
            Ok(text) => assert_eq!(done.as_deref(), Some(text), "final text"),
            Err(m) => assert_eq!(missing, Some(m), "gap"),
        }
        if let Some(done) = done {
            // The deltas after the last restart are exactly the final text.
            assert_eq!(out.rsplit('|').next(), Some(done.as_str()));
        }
    }

    #[test]
    fn a_final_frame_without_content_takes_the_text_of_its_chunks() {
        let mut assembler = Assembler::default();
        assembler.chunk(1, 0, "long ".into());
        assembler.chunk(1, 1, "answer".into());
        let events = assembler.finish(1, 2, &reply("")).expect("every chunk came");
        let Some(StreamEvent::Done(done)) = events.last() else { panic!("no final event: {events:?}") };
        assert_eq!(done.text, "long answer");
        assert_eq!(done.reply.content, "long answer", "the reply's content is the chunks' text");
    }

    #[test]
    fn in_order_chunks_are_emitted_live() {
        use In::*;
        check(&[C(1, 0, "a"), C(1, 1, "b"), C(1, 2, "c"), Done(1, 3, "abc")], "abc", Ok("abc"));
    }

    #[test]
    fn out_of_order_chunks_are_reordered() {
        use In::*;
        check(&[C(1, 1, "b"), C(1, 0, "a"), C(1, 3, "d"), C(1, 2, "c"), Done(1, 4, "abcd")], "abcd", Ok("abcd"));
        // A repeated chunk is taken once.
        check(&[C(1, 0, "a"), C(1, 0, "a"), C(1, 1, "b"), Done(1, 2, "ab")], "ab", Ok("ab"));
    }

    #[test]
    fn interleaved_attempts_end_with_the_winners_text() {
        use In::*;
        // Attempt 1 sends first and is followed live; attempt 2 wins: restart, then attempt 2 from its start.
        let frames = [C(1, 0, "x0"), C(2, 0, "y0"), C(1, 1, "x1"), C(2, 1, "y1"), C(1, 2, "x2"), Done(2, 2, "y0y1")];
        check(&frames, "x0x1x2|y0y1", Ok("y0y1"));
        // The followed attempt wins: the other attempt's chunks never show.
        let frames = [C(1, 0, "x0"), C(2, 0, "y0"), C(1, 1, "x1"), C(2, 1, "y1"), Done(1, 2, "x0x1")];
        check(&frames, "x0x1", Ok("x0x1"));
        // The winner is another attempt, but nothing of the followed one was shown yet: no restart needed.
        check(&[C(1, 1, "x1"), C(2, 0, "y0"), Done(2, 1, "y0")], "y0", Ok("y0"));
        // Chunks past the count of the final frame are not part of the answer.
        check(&[C(1, 0, "a"), C(1, 1, "b"), Done(1, 1, "a")], "ab|a", Ok("a"));
    }

    #[test]
    fn missing_chunks_of_the_winner_are_a_gap_until_they_come() {
        use In::*;
        check(&[C(1, 0, "a"), C(1, 2, "c"), Done(1, 3, "abc")], "a", Err(Missing { attempt: 1, expected: 3, got: 2 }));
        check(&[C(1, 0, "a"), Done(2, 2, "yy")], "a", Err(Missing { attempt: 2, expected: 2, got: 0 }));
        // The late chunk arrives after the final frame: finishing again succeeds.
        check(&[C(1, 0, "a"), C(1, 2, "c"), Done(1, 3, "abc"), C(1, 1, "b"), Done(1, 3, "abc")], "abc", Ok("abc"));
    }

    #[test]
    fn an_answer_without_chunks_is_delivered_from_its_content() {
        use In::*;
        check(&[Done(0, 0, "whole")], "whole", Ok("whole"));
        // A de-duplicated copy's answer after some of the original's chunks: continue where they stopped.
        check(&[C(1, 0, "who"), Done(0, 0, "whole")], "whole", Ok("whole"));
        // ... or restart when they do not match.
        check(&[C(1, 0, "nope"), Done(0, 0, "whole")], "nope|whole", Ok("whole"));
    }
}
