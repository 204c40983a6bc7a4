//! Progress bars on stderr for model store events (downloads, hashing).

use indicatif::{ProgressBar, ProgressStyle};
use zeta_engine::store::Progress;

/// Turns store progress events into indicatif bars; notes go above the bar.
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
                self.clear();
                let b = match total {
                    Some(t) => ProgressBar::new(t).with_style(
                        ProgressStyle::with_template(
                            "{msg:32!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    ),
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
            Progress::End => self.clear(),
            Progress::Note(msg) => match &self.bar {
                Some(b) => b.suspend(|| eprintln!("note: {msg}")),
                None => eprintln!("note: {msg}"),
            },
        }
    }

    /// Removes the current bar, if any.
    pub fn clear(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
