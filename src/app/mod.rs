//! What both programs share around the lottery itself: their settings (one
//! table per program, read through `settings`) and start-up, the stop request
//! and signals, the log line, and poison-tolerant locks.

pub(crate) mod client_settings;
pub(crate) mod locks;
pub(crate) mod logging;
pub(crate) mod server_settings;
pub(crate) mod settings;
pub(crate) mod shutdown;
pub(crate) mod startup;
#[cfg(test)]
mod tests;
