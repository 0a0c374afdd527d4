//! The crash pass's log: one line per job start (`S <n>`) and end (`D <n>`), appended by
//! every worker of a system's pass, and what it says.

use std::path::Path;

/// The log read so far.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Jobs done at least once.
    pub done: usize,
    /// Jobs started and never done (running, or cut off by the kill).
    pub running: usize,
    /// Jobs started more than once.
    pub run_twice: usize,
    /// Jobs done more than once.
    pub done_twice: usize,
}

impl Tally {
    /// Reads `log` (missing: nothing yet) of a pass of `jobs` jobs.
    pub fn read(log: &Path, jobs: usize) -> Result<Self, String> {
        match std::fs::read_to_string(log) {
            Ok(text) => Ok(Self::of(&text, jobs)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(format!("reading {} failed ({err})", log.display())),
        }
    }

    /// Counts `text`'s lines; one cut off mid-write, or about no job of the pass, is skipped.
    fn of(text: &str, jobs: usize) -> Self {
        let mut starts = vec![0u32; jobs];
        let mut ends = vec![0u32; jobs];
        for line in text.lines() {
            let Some((mark, n)) = line.split_once(' ') else {
                continue;
            };
            let Some(n) = n.parse::<usize>().ok().filter(|n| *n < jobs) else {
                continue;
            };
            match mark {
                "S" => starts[n] += 1,
                "D" => ends[n] += 1,
                _ => {}
            }
        }
        let mut tally = Self::default();
        for (started, ended) in starts.into_iter().zip(ends) {
            tally.done += usize::from(ended > 0);
            tally.running += usize::from(started > 0 && ended == 0);
            tally.run_twice += usize::from(started > 1);
            tally.done_twice += usize::from(ended > 1);
        }
        tally
    }
}
