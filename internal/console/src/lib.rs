//! The web console at `/`: one page of HTML, a script and a stylesheet,
//! with uPlot for the charts, all embedded in the binary (nothing is
//! fetched from elsewhere: the Content-Security-Policy allows this origin
//! only). The pages read and act through the HTTP/JSON API (`/v1`) with the
//! visitor's token, so the console can do nothing the API would not let
//! that caller do.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Each embedded file: its path, content type and bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../assets/index.html"),
    ),
    (
        "/console/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "/console/app.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/app.css"),
    ),
    (
        "/console/vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/vendor/uPlot.iife.min.js"),
    ),
    (
        "/console/vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/vendor/uPlot.min.css"),
    ),
];

const POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                      object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The console's routes, to merge into the HTTP listener's router.
pub fn router() -> axum::Router {
    ASSETS.iter().fold(
        axum::Router::new(),
        |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { asset(content_type, body) }))
        },
    )
}
