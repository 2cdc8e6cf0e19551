//! What both programs share around the lottery itself: their settings and
//! start-up, the stop request and signals, and the log line.

pub(crate) mod locks;
pub(crate) mod logging;
pub(crate) mod settings;
pub(crate) mod shutdown;
