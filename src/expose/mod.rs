//! Exposition: the metric table, the text-format encoder, its gzip writer, self-metrics and
//! the HTTP server (its connection limits and its web config: TLS, basic auth).

pub mod cardinality;
pub mod connections;
pub mod delegated;
pub mod encode;
pub mod gzip;
pub mod names;
pub mod selfmetrics;
pub mod server;
pub mod webconfig;
