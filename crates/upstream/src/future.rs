/// Response future of [`crate::Upstream`]. Dropping it cancels the upstream request.
pub type ResponseFuture = switchyard_core::BoxResponseFuture;
