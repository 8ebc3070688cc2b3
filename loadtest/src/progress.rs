//! What a run shows a person: a progress line on stderr while it runs (only when
//! stderr is a terminal, so logs and `--json` pipelines stay clean) and a final
//! two-column table on stdout.

use std::io::IsTerminal;
use std::time::Duration;

use tokio::task::JoinHandle;

/// How often the progress line is redrawn.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Redraws `line()` on stderr every [`PROGRESS_EVERY`] until dropped or
/// [`finish`](Progress::finish)ed. A no-op when stderr is not a terminal.
pub struct Progress {
    task: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(mut line: impl FnMut() -> String + Send + 'static) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress { task: None };
        }
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                eprint!("\r{:<79}", line());
            }
        });
        Progress { task: Some(task) }
    }

    /// Stops redrawing and moves to a fresh line.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            eprintln!();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Prints a notice to stderr, over the progress line when there is one.
pub fn notice(message: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("\r{message:<79}");
    } else {
        eprintln!("{message}");
    }
}

/// A final report: rows of (what, value), printed with the names aligned.
#[derive(Default)]
pub struct Table {
    title: String,
    rows: Vec<(String, String)>,
}

impl Table {
    pub fn new(title: impl Into<String>) -> Self {
        Table {
            title: title.into(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.rows.push((name.into(), value.into()));
        self
    }

    pub fn render(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|(n, _)| n.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = format!("{}\n", self.title);
        for (name, value) in &self.rows {
            out.push_str(&format!("  {name:<width$}  {value}\n"));
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_values() {
        let mut table = Table::new("mode x");
        table.row("events", "10").row("lateness ms", "p50 1");
        assert_eq!(
            table.render(),
            "mode x\n  events       10\n  lateness ms  p50 1\n"
        );
    }
}
