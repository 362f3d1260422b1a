//! The dead-drop as a [`ServiceFamily`] of the HTTP service: its four paths, and every
//! path nobody owns on the public listeners (hivemind's upstream 404).

use super::DeadDrop;
use crate::family::{ServeContext, ServeFuture, ServiceFamily};
use hyper::Request;
use hyper::body::Incoming;

impl ServiceFamily for DeadDrop {
    fn name(&self) -> &'static str {
        "deaddrop"
    }

    fn owns(&self, path: &str) -> bool {
        Self::owns(path)
    }

    fn owns_unknown_paths(&self) -> bool {
        true
    }

    fn serve(&self, req: Request<Incoming>, cx: ServeContext) -> ServeFuture<'_> {
        Box::pin(Self::serve(self, req, cx.peer, cx.body_deadline))
    }

    fn render_metrics(&self, out: &mut String) {
        out.push_str(&Self::render_metrics(self));
    }
}
