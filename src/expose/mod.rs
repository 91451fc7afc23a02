//! Exposition: the metric table, the text-format encoder, its gzip writer, self-metrics and
//! the HTTP server.

pub mod cardinality;
pub mod encode;
pub mod gzip;
pub mod names;
pub mod selfmetrics;
pub mod server;
