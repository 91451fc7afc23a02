//! Exposition: the metric table, the text-format encoder, its gzip writer and the self-metrics.
//! Pure rendering of a snapshot; it knows nothing of HTTP.

pub mod cardinality;
pub mod encode;
pub mod names;
pub mod selfmetrics;
