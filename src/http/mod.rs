//! The HTTP server: its connection limits, its web config (TLS, basic auth), bearer-token
//! reviews. It calls into the agent for bodies; nothing below it knows it exists.

pub mod connections;
pub mod delegated;
pub mod server;
pub mod webconfig;
