//! The staging store where partitions are exported: a GCS bucket (`gs://bucket/prefix`),
//! optionally at a custom endpoint (the local GCS emulator), or a local directory standing in
//! for the bucket (`file:///dir` or a plain path). Opened as an `object_store::ObjectStore`,
//! used as it is.

use std::sync::Arc;

use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore};

/// Errors opening the staging store.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("staging uri `{0}` is not supported: use gs://bucket/prefix, file:///dir or a path")]
    UnsupportedUri(String),
    #[error("staging uri `{uri}`: {source}")]
    Open {
        uri: String,
        #[source]
        source: object_store::Error,
    },
}

/// An opened staging store and the prefix inside it that the uri points at.
#[derive(Debug, Clone)]
pub struct Staging {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
}

/// Opens `uri`. `gcs_endpoint` (e.g. `http://127.0.0.1:4443`) switches a `gs://` uri to a
/// custom endpoint without OAuth, as the GCS emulator needs.
pub fn open(uri: &str, gcs_endpoint: Option<&str>) -> Result<Staging, StagingError> {
    let open_err = |source| StagingError::Open {
        uri: uri.to_string(),
        source,
    };
    if let Some(rest) = uri.strip_prefix("gs://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StagingError::UnsupportedUri(uri.to_string()));
        }
        let mut builder = GoogleCloudStorageBuilder::new().with_bucket_name(bucket);
        if let Some(endpoint) = gcs_endpoint {
            let key = serde_json::json!({
                "private_key": "", "private_key_id": "", "client_email": "",
                "gcs_base_url": endpoint.trim_end_matches('/'), "disable_oauth": true,
            });
            builder = builder
                .with_service_account_key(key.to_string())
                .with_client_options(ClientOptions::new().with_allow_http(true));
        } else {
            builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
        }
        let store = builder.build().map_err(open_err)?;
        return Ok(Staging {
            store: Arc::new(store),
            prefix: Path::from(prefix),
        });
    }
    let dir = uri.strip_prefix("file://").unwrap_or(uri);
    if dir.is_empty() || dir.contains("://") {
        return Err(StagingError::UnsupportedUri(uri.to_string()));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        open_err(object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        })
    })?;
    let store = LocalFileSystem::new_with_prefix(dir).map_err(open_err)?;
    Ok(Staging {
        store: Arc::new(store),
        prefix: Path::from(""),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_schemes_and_empty_buckets() {
        assert!(matches!(
            open("s3://bucket/x", None),
            Err(StagingError::UnsupportedUri(_))
        ));
        assert!(matches!(
            open("gs:///x", None),
            Err(StagingError::UnsupportedUri(_))
        ));
        assert!(matches!(
            open("", None),
            Err(StagingError::UnsupportedUri(_))
        ));
    }

    #[test]
    fn splits_bucket_and_prefix() {
        let s = open("gs://bucket/exports/run1", Some("http://127.0.0.1:1")).unwrap();
        assert_eq!(s.prefix.as_ref(), "exports/run1");
    }
}
