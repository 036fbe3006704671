//! The progress display of an apply: how [`Printer::progress`](super::printer::Printer::progress)
//! shows the executor's [`Event`]s on stderr, a bar on a terminal, plain lines otherwise.

use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::printer::Printer;
use crate::apply::events::{Event, Subscriber};
use crate::paint::Painter;
use crate::plan::Action;

/// A progress bar on a terminal, plain lines otherwise (stderr either way): a line per step
/// done, failed or skipped (none with `--quiet`), and what each step does with `--verbose`.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    paint: Painter,
    verbose: bool,
    quiet: bool,
    started: Mutex<Option<Instant>>,
}

impl Progress {
    /// A display for `printer`'s settings; a bar when stderr is a `terminal` (and not `--quiet`).
    pub fn new(printer: &Printer, terminal: bool) -> Self {
        let Printer { paint, verbose, quiet } = *printer;
        let bar = (terminal && !quiet).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps  {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress { bar, paint, verbose, quiet, started: Mutex::new(None) }
    }

    fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(text),
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            }
        }
    }

    /// Clears the bar once the apply is over (the lines stay).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// How a step of `action` is told while it runs and once done.
fn verb(action: Action) -> (&'static str, &'static str) {
    match action {
        Action::Create => ("creating", "created"),
        Action::Update => ("updating", "updated"),
        Action::Replace => ("redeploying", "redeployed"),
        Action::Destroy => ("destroying", "destroyed"),
    }
}

impl Subscriber for Progress {
    fn on(&self, event: &Event<'_>) {
        match event {
            Event::Begin { steps } => {
                if let Ok(mut s) = self.started.lock() {
                    *s = Some(Instant::now());
                }
                if let Some(bar) = &self.bar {
                    bar.set_length(*steps as u64);
                }
            }
            Event::StepStarted { service, action } => {
                let (doing, _) = verb(*action);
                match &self.bar {
                    Some(bar) => bar.set_message(format!("{doing} {service}")),
                    None if self.verbose => self.line(&format!("{service}: {doing}…")),
                    None => {}
                }
            }
            Event::Progress { service, message } => {
                if self.verbose {
                    self.line(&format!("{service}: {message}"));
                }
            }
            Event::StepDone { service, action, elapsed } => {
                let (_, done) = verb(*action);
                self.line(&format!("{} {service}: {done} [{:.1}s]", self.paint.green("✓"), elapsed.as_secs_f64()));
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
            }
            Event::StepFailed { service, error } => {
                self.line(&format!("{} {service}: {error}", self.paint.red("✗")));
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
            }
            Event::StepSkipped { service } => {
                self.line(&format!("{} {service}: skipped, a step it depends on failed", self.paint.yellow("-")));
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
            }
        }
    }
}
