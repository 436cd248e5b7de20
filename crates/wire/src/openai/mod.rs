//! OpenAI Chat Completions, Completions and Embeddings: the request view, response
//! rewriting and the streaming adapter.

mod request;
mod response;
mod stream;

pub use request::{BodyEdits, ParsedRequest};
pub use response::rewrite_response;
pub use stream::OpenAiEventStream;
