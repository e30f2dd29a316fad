//! Nothing secret in any output (CONTRACT §10).
//!
//! Messages name URLs through [`redact_url`] (`postgres://user:***@host/db`). Behind that, a
//! last line of defence: the [`Scrubber`] knows the configuration's secrets — the passwords
//! of `database.url` and `redis.url` (as written and percent-decoded), `server.secret_key`,
//! `jwt.signing_key`, `metrics.token` — and masks them in everything the process writes to
//! stderr through the log, and in the CLI's error line, whatever a library put into an error
//! text.

use std::{borrow::Cow, io, sync::Arc};

use tracing_subscriber::fmt::MakeWriter;

use crate::config::Config;

pub(crate) use restguard_store::redact::redact_url;

/// Secrets shorter than this are not scrubbed from arbitrary text (masking every `a` of a
/// log line would destroy it and hide nothing); URLs are still printed redacted.
const SHORTEST_SCRUBBED: usize = 4;

/// Masks the configuration's secrets in text.
#[derive(Clone, Default)]
pub(crate) struct Scrubber {
    secrets: Arc<[String]>,
}

impl Scrubber {
    /// The secrets `config` holds.
    pub(crate) fn from_config(config: &Config) -> Scrubber {
        let mut secrets: Vec<String> = Vec::new();
        let urls = [
            Some(config.database.url.as_str()),
            config.redis.url.as_ref().map(|u| u.0.as_str()),
        ];
        for password in urls
            .into_iter()
            .flatten()
            .filter_map(restguard_store::redact::url_password)
        {
            secrets.push(password.to_owned());
            let decoded = percent_encoding::percent_decode_str(password).decode_utf8_lossy();
            secrets.push(decoded.into_owned());
        }
        secrets.extend(config.secret_texts());
        secrets.retain(|s| s.len() >= SHORTEST_SCRUBBED);
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Scrubber {
            secrets: secrets.into(),
        }
    }

    /// `text` with every known secret replaced by `***`.
    pub(crate) fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in self.secrets.iter() {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), restguard_store::redact::MASK));
            }
        }
        out
    }

    /// A writer for the log: stderr, scrubbed.
    pub(crate) fn stderr(&self) -> ScrubbedStderr {
        ScrubbedStderr(self.clone())
    }
}

/// Makes [`ScrubbedWriter`]s (the log's `MakeWriter`).
pub(crate) struct ScrubbedStderr(Scrubber);

impl<'a> MakeWriter<'a> for ScrubbedStderr {
    type Writer = ScrubbedWriter;

    fn make_writer(&'a self) -> ScrubbedWriter {
        ScrubbedWriter(self.0.clone())
    }
}

/// Writes to stderr with secrets masked. The log formats each event into one buffer and
/// writes it at once, so a secret is never split between two writes.
pub(crate) struct ScrubbedWriter(Scrubber);

impl io::Write for ScrubbedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        io::stderr().write_all(self.0.scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_secrets_are_masked_anywhere() {
        let mut config = Config::default();
        config.database.url = "postgres://me:p%40ss-word@db/app".into();
        let scrubber = Scrubber::from_config(&config);
        assert_eq!(
            scrubber.scrub("login p@ss-word / p%40ss-word failed"),
            "login *** / *** failed"
        );
        assert_eq!(scrubber.scrub("nothing here"), "nothing here");
        // Too short to scrub from prose; still masked in URLs.
        config.database.url = "postgres://me:pw@db/app".into();
        assert_eq!(Scrubber::from_config(&config).scrub("pwd"), "pwd");
        assert_eq!(redact_url(&config.database.url), "postgres://me:***@db/app");
    }
}
