//! indicatif progress bars for store events and byte counts (on stderr).

use indicatif::{ProgressBar, ProgressStyle};
use zeta_engine::store::Progress;

fn byte_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg:32!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// A byte progress bar created lazily on the first update.
#[derive(Debug)]
pub struct ByteBar {
    label: String,
    bar: Option<ProgressBar>,
}

impl ByteBar {
    /// A bar labelled `label`.
    pub fn new(label: &str) -> ByteBar {
        ByteBar {
            label: label.to_string(),
            bar: None,
        }
    }

    /// Sets the position (and length).
    pub fn set(&mut self, done: u64, total: u64) {
        let label = &self.label;
        let bar = self.bar.get_or_insert_with(|| {
            let b = ProgressBar::new(total).with_style(byte_style());
            b.set_message(label.clone());
            b
        });
        bar.set_length(total);
        bar.set_position(done);
    }

    /// Finishes and removes the bar.
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// Turns store progress events into bars; notes are printed above the bar.
#[derive(Debug, Default)]
pub struct StoreBars {
    bar: Option<ProgressBar>,
}

impl StoreBars {
    /// Handles one event.
    pub fn event(&mut self, ev: Progress<'_>) {
        match ev {
            Progress::Begin {
                stage,
                label,
                total,
            } => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
                let b = match total {
                    Some(t) => ProgressBar::new(t).with_style(byte_style()),
                    None => ProgressBar::new_spinner(),
                };
                b.set_message(format!("{} {label}", stage.verb()));
                self.bar = Some(b);
            }
            Progress::Advance { done } => {
                if let Some(b) = &self.bar {
                    b.set_position(done);
                }
            }
            Progress::End => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
            }
            Progress::Note(msg) => match &self.bar {
                Some(b) => b.suspend(|| eprintln!("note: {msg}")),
                None => eprintln!("note: {msg}"),
            },
        }
    }
}
