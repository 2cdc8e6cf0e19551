//! Moving bytes: the read buffer, the stream (plain TCP or TLS), the TLS
//! settings, and `Connection`, which turns the stream into whole messages.

pub(crate) mod buffer;
pub(crate) mod connection;
pub(crate) mod tls;
pub(crate) mod transport;
