//! OpenAI Chat Completions, Completions and Embeddings: the request view, response
//! rewriting, the streaming adapter and the aggregation of a stream into a whole body.

mod aggregate;
mod request;
mod response;
mod stream;

pub use aggregate::{AggregateSink, Aggregated, Aggregator};
pub use request::{BodyEdits, ParsedRequest};
pub use response::rewrite_response;
pub use stream::{OpenAiEventStream, error_event};
