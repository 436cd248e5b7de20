/// Response future of [`crate::Fallback`]: the whole attempt loop up to the commit point.
/// Dropping it (the client went away) cancels the attempt in flight at once.
pub type ResponseFuture = switchyard_core::BoxResponseFuture;
