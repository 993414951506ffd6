//! Objects in S3: `s3://` locations, the keys of event notifications, one client per
//! bucket with the SDK's credentials and endpoint, streaming downloads into a file and
//! multipart uploads from one.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use futures_util::StreamExt;
use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{CredentialProvider, ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;

/// `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Url {
    pub bucket: String,
    pub key: String,
}

impl S3Url {
    /// Parses `s3://bucket/key` (the key may be empty: `s3://bucket/` or `s3://bucket`).
    pub fn parse(url: &str) -> Result<Self> {
        let Some(rest) = url.strip_prefix("s3://") else {
            bail!("{url:?} is not an s3:// URL");
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("{url:?} names no bucket (expected s3://bucket/key)");
        }
        Ok(S3Url {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Whether `text` is an `s3://` URL (every surface that takes a path checks this).
    pub fn is_s3(text: &str) -> bool {
        text.starts_with("s3://")
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// The object key of an S3 event notification, which arrives form-URL-encoded (a space
/// as `+`, other bytes as `%XX`), decoded. A malformed escape or a key that is not UTF-8
/// is an error naming the raw key.
pub fn decode_event_key(raw: &str) -> Result<String> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (
                    b.get(i + 1).and_then(|&c| hex(c)),
                    b.get(i + 2).and_then(|&c| hex(c)),
                ) {
                    (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                    _ => bail!("object key {raw:?}: malformed %-escape at byte {i}"),
                }
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).with_context(|| format!("object key {raw:?} is not UTF-8 once decoded"))
}

/// The SDK's credentials chain (environment, profile, web identity, container and
/// instance metadata) for object_store's signer.
#[derive(Debug)]
struct SdkCredentials(SharedCredentialsProvider);

#[async_trait::async_trait]
impl CredentialProvider for SdkCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let c = self
            .0
            .provide_credentials()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        Ok(Arc::new(AwsCredential {
            key_id: c.access_key_id().to_owned(),
            secret_key: c.secret_access_key().to_owned(),
            token: c.session_token().map(str::to_owned),
        }))
    }
}

/// One object_store client per bucket, configured once from the SDK's configuration:
/// region, credentials and endpoint (`AWS_ENDPOINT_URL[_S3]` or the profile's
/// `endpoint_url`; plain `http://` endpoints are allowed and addressed path-style, as
/// local S3-compatible servers need).
pub struct Buckets {
    region: Option<String>,
    endpoint: Option<String>,
    credentials: Option<SharedCredentialsProvider>,
    clients: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl fmt::Debug for Buckets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buckets")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Buckets {
    /// Clients configured from `sdk`; `s3_endpoint` (the service-specific endpoint, e.g.
    /// from `AWS_ENDPOINT_URL_S3`) wins over the SDK's general one.
    pub fn new(sdk: &SdkConfig, s3_endpoint: Option<String>) -> Self {
        Buckets {
            region: sdk.region().map(|r| r.to_string()),
            endpoint: s3_endpoint.or_else(|| sdk.endpoint_url().map(str::to_owned)),
            credentials: sdk.credentials_provider(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The client of `bucket`.
    pub fn get(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(bucket) {
            return Ok(c.clone());
        }
        let mut b = AmazonS3Builder::new().with_bucket_name(bucket);
        if let Some(r) = &self.region {
            b = b.with_region(r);
        }
        if let Some(e) = &self.endpoint {
            b = b
                .with_endpoint(e)
                .with_allow_http(e.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let Some(c) = &self.credentials {
            b = b.with_credentials(Arc::new(SdkCredentials(c.clone())));
        }
        let client: Arc<dyn ObjectStore> = Arc::new(
            b.build()
                .with_context(|| format!("cannot configure an S3 client for bucket {bucket}"))?,
        );
        clients.insert(bucket.to_owned(), client.clone());
        Ok(client)
    }
}

/// The object_store path of `url`'s key, verbatim (`Path::from` would percent-encode
/// `%` and other characters, addressing a different object). Keys object_store cannot
/// address (empty segments as in `a//b` or a leading or trailing `/`, `.` or `..`
/// segments, control characters) are an error naming the key.
pub fn object_path(url: &S3Url) -> Result<ObjectPath> {
    let k = &url.key;
    if k.starts_with('/') || k.ends_with('/') {
        bail!("{url}: a key that starts or ends with '/' cannot be addressed");
    }
    ObjectPath::parse(k).with_context(|| format!("{url}: the key cannot be addressed"))
}

/// What a download read.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub bytes: u64,
    /// The object's ETag as S3 gives it (quotes removed), when it has one.
    pub e_tag: Option<String>,
}

/// Streams `url`'s object into the file `dest` (created), never holding more than one
/// response chunk in memory.
pub async fn download(store: &dyn ObjectStore, url: &S3Url, dest: &Path) -> Result<Downloaded> {
    let got = store
        .get(&object_path(url)?)
        .await
        .with_context(|| format!("cannot read {url}"))?;
    let e_tag = got
        .meta
        .e_tag
        .as_ref()
        .map(|t| t.trim_matches('"').to_owned());
    let mut file = tokio::fs::File::create(dest)
        .await
        .with_context(|| format!("cannot create {}", dest.display()))?;
    let mut stream = got.into_stream();
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("reading {url}"))?;
        bytes += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .with_context(|| format!("writing {}", dest.display()))?;
    }
    file.flush()
        .await
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(Downloaded { bytes, e_tag })
}

/// Uploads the file `src` as `url` in parts of 10 MB (one plain PUT when smaller),
/// streaming it from disk. The object appears whole or not at all.
pub async fn upload(store: Arc<dyn ObjectStore>, src: &Path, url: &S3Url) -> Result<u64> {
    let mut file = tokio::fs::File::open(src)
        .await
        .with_context(|| format!("cannot open {}", src.display()))?;
    let mut w = BufWriter::new(store, object_path(url)?);
    let n = match tokio::io::copy(&mut file, &mut w).await {
        Ok(n) => n,
        Err(e) => {
            let _ = w.abort().await;
            return Err(e).with_context(|| format!("uploading {} to {url}", src.display()));
        }
    };
    w.shutdown()
        .await
        .with_context(|| format!("uploading {} to {url}", src.display()))?;
    Ok(n)
}

/// Writes `bytes` as `url` in one PUT.
pub async fn put(store: &dyn ObjectStore, url: &S3Url, bytes: Vec<u8>) -> Result<()> {
    store
        .put(&object_path(url)?, bytes.into())
        .await
        .with_context(|| format!("cannot write {url}"))?;
    Ok(())
}

/// The object `url` whole, or `None` when there is none.
pub async fn get_if_exists(store: &dyn ObjectStore, url: &S3Url) -> Result<Option<Vec<u8>>> {
    match store.get(&object_path(url)?).await {
        Ok(got) => Ok(Some(
            got.bytes()
                .await
                .with_context(|| format!("reading {url}"))?
                .to_vec(),
        )),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {url}")),
    }
}

/// Deletes `url` (nothing when it does not exist).
pub async fn delete(store: &dyn ObjectStore, url: &S3Url) -> Result<()> {
    match store.delete(&object_path(url)?).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot delete {url}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_are_form_url_decoded() {
        assert_eq!(
            decode_event_key("incoming/fleet+1.csv").unwrap(),
            "incoming/fleet 1.csv"
        );
        assert_eq!(
            decode_event_key("a%2Bb%20c%C3%A9.csv").unwrap(),
            "a+b cé.csv"
        );
        assert_eq!(decode_event_key("plain/key.csv").unwrap(), "plain/key.csv");
        let e = decode_event_key("bad%2").unwrap_err().to_string();
        assert!(e.contains("malformed %-escape at byte 3"), "{e}");
        let e = decode_event_key("bad%zz.csv").unwrap_err().to_string();
        assert!(e.contains("bad%zz.csv"), "{e}");
        let e = decode_event_key("%FF.csv").unwrap_err().to_string();
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn s3_urls_parse_and_print_back() {
        let u = S3Url::parse("s3://bucket/in/daily.csv").unwrap();
        assert_eq!(
            (u.bucket.as_str(), u.key.as_str()),
            ("bucket", "in/daily.csv")
        );
        assert_eq!(u.to_string(), "s3://bucket/in/daily.csv");
        assert_eq!(S3Url::parse("s3://bucket").unwrap().key, "");
        assert!(S3Url::parse("s3:///key").is_err());
        assert!(S3Url::parse("/tmp/x").is_err());
    }
}
