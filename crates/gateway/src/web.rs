//! The web page (`web/`), compiled into the binary so that `earshot serve` works from any
//! directory. Plain ES modules: no build step.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "../../web/"]
#[include = "*.html"]
#[include = "*.js"]
#[include = "*.css"]
#[include = "*.svg"]
#[exclude = "test/*"]
#[exclude = "e2e/*"]
#[exclude = "node_modules/*"]
struct WebAssets;

pub async fn index() -> Response {
    asset("index.html")
}

pub async fn file(Path(path): Path<String>) -> Response {
    asset(&path)
}

fn asset(path: &str) -> Response {
    match WebAssets::get(path) {
        Some(file) => (
            [
                (header::CONTENT_TYPE, file.metadata.mimetype().to_string()),
                // The page is small and changes with the binary: always revalidate.
                (header::CACHE_CONTROL, "no-cache".to_string()),
            ],
            file.data,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no such file: /{path}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_modules_are_embedded_but_not_the_tests() {
        for path in [
            "index.html",
            "earshot-client.js",
            "dsp.js",
            "capture-worklet.js",
        ] {
            assert!(WebAssets::get(path).is_some(), "{path}");
        }
        assert!(WebAssets::iter().all(|path| !path.starts_with("test/")));
        let script = WebAssets::get("earshot-client.js").unwrap();
        assert_eq!(script.metadata.mimetype(), "text/javascript");
    }
}
