//! Logging a repeating condition once per episode instead of once per occurrence (a database
//! or a file-descriptor table that stays exhausted must not flood the log; docs/SECURITY.md,
//! "Log floods"). The occurrences themselves are counted in `/metrics` by the caller.

use std::time::{Duration, Instant};

/// How long a condition must stay away before its next occurrence is a new episode (and is
/// logged again).
pub const EPISODE_QUIET: Duration = Duration::from_secs(10);

/// Tells the first occurrence of a repeating condition (a new episode, to log) from its
/// repeats (to count only): an episode ends once `EPISODE_QUIET` passes without one, or when
/// the caller `end`s it (the condition is known to be over).
#[derive(Debug, Default)]
pub struct Episode {
    last: Option<Instant>,
}

impl Episode {
    /// Records one occurrence; true when it starts a new episode.
    pub fn occurred(&mut self) -> bool {
        let now = Instant::now();
        let new = self
            .last
            .is_none_or(|last| now.duration_since(last) >= EPISODE_QUIET);
        self.last = Some(now);
        new
    }

    /// Ends the episode: the next occurrence starts a new one.
    pub fn end(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_quiet_time_are_one_episode() {
        let mut e = Episode::default();
        assert!(e.occurred());
        assert!(!e.occurred());
        e.last = Some(Instant::now() - EPISODE_QUIET);
        assert!(e.occurred());
        assert!(!e.occurred());
        e.end();
        assert!(e.occurred());
    }
}
