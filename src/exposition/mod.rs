//! Exposition: the metric table, the text-format encoder and the self-metrics. Pure rendering
//! of a snapshot (its gzip writer is crates/hinted-deflate); it knows nothing of HTTP.

pub mod cardinality;
pub mod encode;
pub mod names;
pub mod selfmetrics;
