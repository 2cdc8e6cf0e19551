//! Log output shared by both programs.
//!
//! Every line is `TIMESTAMP LEVEL action: NAME | result: success|fail|in_progress | key: value ...`
//! on standard error; the message part is written at each call site as a plain
//! format string, so `grep` finds it in the code and in the logs alike.

use log::LevelFilter;
use std::io::Write;

/// Starts logging at `level`. Safe to call once per process.
pub fn init(level: LevelFilter) {
    env_logger::Builder::new()
        .filter_level(level)
        .format(|buf, record| {
            writeln!(
                buf,
                "{} {:<5} {}",
                buf.timestamp_millis(),
                record.level(),
                record.args()
            )
        })
        .init();
}
