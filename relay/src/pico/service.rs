//! Pico as a [`ServiceFamily`] of the HTTP service.

use super::{Pico, owns};
use crate::family::{ServeContext, ServeFuture, ServiceFamily};
use hyper::Request;
use hyper::body::Incoming;

impl ServiceFamily for Pico {
    fn name(&self) -> &'static str {
        "pico"
    }

    fn owns(&self, path: &str) -> bool {
        owns(path)
    }

    fn serve(&self, req: Request<Incoming>, cx: ServeContext) -> ServeFuture<'_> {
        Box::pin(Self::serve_in(self, req, cx))
    }

    fn render_metrics(&self, out: &mut String) {
        out.push_str(&Self::render_metrics(self));
    }
}
