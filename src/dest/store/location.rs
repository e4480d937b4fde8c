//! Where a remote destination is: the `s3://BUCKET/PREFIX` form of DST, the OpenDAL operator
//! that reaches it, and the words for what went wrong on the way.

use std::io;
use std::time::Duration;

use opendal::Operator;
use opendal::layers::{RetryLayer, TimeoutLayer};

use crate::dest::scheme_of;
use crate::error::{About, Error, Why};

/// A DST given as a URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub bucket: String,
    /// The folder inside the bucket, without slashes at either end ("" for the whole bucket).
    pub prefix: String,
}

impl Location {
    /// Reads `s3://BUCKET/PREFIX`.
    pub(crate) fn parse(text: &str) -> Result<Location, Error> {
        let bad = |why| Error::new(About::Destination(text.into()), why);
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| bad(Why::UnknownScheme(scheme_of(text))))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad(Why::NoBucket));
        }
        let prefix: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
        if prefix.iter().any(|p| *p == "." || *p == "..") {
            return Err(bad(Why::DotsInBucket));
        }
        Ok(Location {
            bucket: bucket.to_string(),
            prefix: prefix.join("/"),
        })
    }

    /// The URL as the user reads it, for messages and `Copied:` lines.
    pub(crate) fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// The operator for this bucket and prefix. Endpoint, region and credentials come the way
    /// every S3 tool finds them: `AWS_ENDPOINT_URL`, `AWS_REGION` (else `us-east-1`),
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, or `AWS_PROFILE` in
    /// the shared config and credentials files. The EC2 instance metadata address is never
    /// asked: a desktop or a server outside EC2 would wait on it for nothing.
    pub(crate) fn operator(&self) -> opendal::Result<Operator> {
        opendal::install_default();
        let mut s3 = opendal::services::S3::default()
            .bucket(&self.bucket)
            .root(&format!("/{}", self.prefix))
            .disable_ec2_metadata();
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".to_string());
        s3 = s3.region(&region);
        if let Ok(profile) = std::env::var("AWS_PROFILE") {
            s3 = s3.profile(&profile);
        }
        let op = Operator::new(s3)?;
        Ok(op
            // Transient failures (a node restarting, a dropped connection, 503 Slow Down) are
            // tried again with growing pauses; a write that keeps failing is reported, never
            // counted as copied.
            .layer(
                RetryLayer::new()
                    .with_jitter()
                    .with_max_times(6)
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(10)),
            )
            .layer(
                TimeoutLayer::new()
                    .with_timeout(Duration::from_secs(120))
                    .with_io_timeout(Duration::from_secs(60)),
            ))
    }
}

/// What went wrong, in one phrase, without any of the request's headers (they carry the
/// signature): the kind, what the store said, and the lowest cause (a refused connection).
pub(crate) fn words(e: &opendal::Error) -> String {
    use opendal::ErrorKind as K;
    let what = match e.kind() {
        K::NotFound => "not found".to_string(),
        K::PermissionDenied => "access denied (check AWS_ACCESS_KEY_ID and \
                                 AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
            .to_string(),
        K::ConditionNotMatch | K::AlreadyExists => "the name is taken".to_string(),
        K::RateLimited => "the store asks to slow down".to_string(),
        K::ConfigInvalid => format!("invalid setting: {}", e.message()),
        _ => e.message().to_string(),
    };
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut lowest = None;
    while let Some(c) = cause {
        lowest = Some(c.to_string());
        cause = c.source();
    }
    match lowest {
        Some(c) if !c.is_empty() && !what.contains(&c) => format!("{what}: {c}"),
        _ => what,
    }
}

/// The same error as an `io::Error` of the kind the engine matches on.
pub(crate) fn to_io(e: &opendal::Error) -> io::Error {
    use opendal::ErrorKind as K;
    let kind = match e.kind() {
        K::NotFound => io::ErrorKind::NotFound,
        K::PermissionDenied => io::ErrorKind::PermissionDenied,
        K::ConditionNotMatch | K::AlreadyExists => io::ErrorKind::AlreadyExists,
        K::IsADirectory => io::ErrorKind::IsADirectory,
        K::NotADirectory => io::ErrorKind::NotADirectory,
        K::Unsupported => io::ErrorKind::Unsupported,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, words(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let loc = Location::parse("s3://bucket/a/b/").unwrap();
        assert_eq!(loc.bucket, "bucket");
        assert_eq!(loc.prefix, "a/b");
        assert_eq!(loc.url(), "s3://bucket/a/b");
        let whole = Location::parse("s3://bucket").unwrap();
        assert_eq!(whole.prefix, "");
        assert_eq!(whole.url(), "s3://bucket");
    }

    #[test]
    fn bad_urls_say_why() {
        let e = Location::parse("s3:///x").unwrap_err();
        assert!(matches!(*e.why, Why::NoBucket), "{e}");
        assert_eq!(
            e.to_string(),
            "destination s3:///x: no bucket named (s3://BUCKET/PREFIX)"
        );
        let e = Location::parse("s3://b/../x").unwrap_err();
        assert!(matches!(*e.why, Why::DotsInBucket), "{e}");
    }
}
