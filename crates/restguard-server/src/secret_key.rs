//! The key-encryption key (KEK) that seals the signing keys and the digest key at rest
//! (CONTRACT §10, "Keys at rest"): where it comes from, its creation on first start, the check
//! against the database, and the key file's part in rotation.
//!
//! Resolution, the same for `serve` and every CLI command:
//! 1. `server.secret_key` (normally `RESTGUARD_SERVER__SECRET_KEY`): base64 of 32 bytes; no
//!    file is read or written.
//! 2. Otherwise `server.secret_key_file`, by default `restguard.key` beside the SQLite file
//!    (in the working directory for PostgreSQL). When it does not exist and the database holds
//!    no sealed key, a new key is written there (mode 0600; of several processes starting
//!    together, one writes it and the others read it).
//! 3. `database.url = "memory:"` keeps nothing, so its key lives in memory only.
//!
//! Then every sealed value must open under the key, and values stored in clear by an older
//! version are sealed in place (one transaction). A wrong key, or a missing key file while
//! the database holds sealed values, stops the process with one line before anything is
//! written: new keys are never made over old data.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{anyhow, bail};
use restguard::sealing::{self, Inventory, KekId, KeyEncryptionKey, UnlockError};
use restguard_core::store::SecretStore;

use crate::config::Config;

/// Where the key-encryption key comes from.
#[derive(Debug, Clone)]
pub(crate) enum KeySource {
    /// `server.secret_key` (the environment variable).
    Setting,
    /// A key file.
    File(PathBuf),
    /// An in-memory database: a key for this process only.
    Ephemeral,
}

impl KeySource {
    /// Where the key for `config` comes from (nothing is read yet).
    pub(crate) fn of(config: &Config) -> anyhow::Result<KeySource> {
        let server = &config.server;
        match (&server.secret_key, &server.secret_key_file) {
            (Some(_), Some(_)) => {
                bail!("server.secret_key and server.secret_key_file are both set: set only one")
            }
            (Some(_), None) => Ok(KeySource::Setting),
            (None, Some(file)) => Ok(KeySource::File(file.clone())),
            (None, None) => Ok(
                default_file(&config.database.url).map_or(KeySource::Ephemeral, KeySource::File)
            ),
        }
    }

    /// How messages name it.
    fn describe(&self) -> String {
        match self {
            KeySource::Setting => "server.secret_key (RESTGUARD_SERVER__SECRET_KEY)".to_owned(),
            KeySource::File(path) => format!("server.secret_key_file {}", path.display()),
            KeySource::Ephemeral => "the in-memory database's key".to_owned(),
        }
    }
}

/// The default key file for a database URL: `restguard.key` beside a SQLite file, in the
/// working directory otherwise; `None` for databases that live in memory.
fn default_file(url: &str) -> Option<PathBuf> {
    const NAME: &str = "restguard.key";
    if url == "memory:" {
        return None;
    }
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Some(PathBuf::from(NAME));
    };
    if url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let path = rest.strip_prefix("//").unwrap_or(rest);
    let path = path.split('?').next().unwrap_or(path);
    let dir = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new(""));
    Some(dir.join(NAME))
}

/// The key for `config`, checked against the database behind `store` (every sealed value
/// opens under it), with values stored in clear sealed in place.
pub(crate) async fn unlock(
    config: &Config,
    store: &dyn SecretStore,
) -> anyhow::Result<Arc<KeyEncryptionKey>> {
    let source = KeySource::of(config)?;
    let kek = match &source {
        KeySource::Setting => {
            let text = config
                .server
                .secret_key
                .as_ref()
                .map(|k| k.0 .0.as_str())
                .unwrap_or_default();
            KeyEncryptionKey::parse(text).map_err(|e| anyhow!("server.secret_key: {e}"))?
        }
        KeySource::Ephemeral => KeyEncryptionKey::generate(),
        KeySource::File(path) => match read_key_file(path)? {
            Some(kek) => kek,
            None => {
                // No key: only a database without sealed values may get a new one.
                let inventory = sealing::inventory(store)
                    .await
                    .map_err(|e| anyhow!("{}", crate::error_chain(&e)))?;
                if let Some(sealed_with) = inventory.sealed.keys().next() {
                    bail!(
                        "server.secret_key_file {} does not exist, but the keys in the database \
                         are encrypted under key-encryption key {sealed_with}: restore that key \
                         file (or set RESTGUARD_SERVER__SECRET_KEY){}; a new key would not open them",
                        path.display(),
                        interrupted_rotation_hint(path, *sealed_with),
                    );
                }
                create_key_file(path, &inventory)?
            }
        },
    };
    match sealing::seal_in_place(store, &kek).await {
        Ok(0) => {}
        Ok(sealed) => tracing::info!(
            sealed,
            kek = %kek.id(),
            "encrypted the keys stored in clear in the database under the key-encryption key"
        ),
        Err(UnlockError::WrongKey {
            slot,
            sealed_with,
            have,
        }) => {
            let hint = match &source {
                KeySource::File(path) => interrupted_rotation_hint(path, sealed_with),
                _ => String::new(),
            };
            bail!(
                "{} is key-encryption key {have}, but the keys in the database ({slot}, …) are \
                 encrypted under {sealed_with}: give the key that belongs to this database{hint}",
                source.describe()
            );
        }
        Err(UnlockError::Store(e)) => bail!("{}", crate::error_chain(&e)),
        Err(other) => bail!("{}: {other}", source.describe()),
    }
    Ok(Arc::new(kek))
}

/// Text for an error: when `<path>.new` holds the key the database is sealed under, a
/// `restguard keys rotate-kek` was interrupted after its transaction.
fn interrupted_rotation_hint(path: &Path, sealed_with: KekId) -> String {
    let pending = pending_path(path);
    match read_key_file(&pending) {
        Ok(Some(kek)) if kek.id() == sealed_with => format!(
            " (an interrupted `restguard keys rotate-kek` left it in {}: move that file to {})",
            pending.display(),
            path.display()
        ),
        _ => String::new(),
    }
}

/// Where `rotate-kek` writes the new key before the database switches to it.
pub(crate) fn pending_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

/// The key in `path`, or `None` when the file does not exist.
fn read_key_file(path: &Path) -> anyhow::Result<Option<KeyEncryptionKey>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => bail!("server.secret_key_file {}: {e}", path.display()),
    };
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let (Some(line), None) = (lines.next(), lines.next()) else {
        bail!(
            "server.secret_key_file {}: expected one line of base64 (32 bytes)",
            path.display()
        );
    };
    let kek = KeyEncryptionKey::parse(line)
        .map_err(|e| anyhow!("server.secret_key_file {}: {e}", path.display()))?;
    warn_if_readable_by_others(path);
    Ok(Some(kek))
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                "the key-encryption key file is accessible to other users; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// The key file's text.
fn key_file_text(kek: &KeyEncryptionKey) -> String {
    format!(
        "# restguard key-encryption key {}: it opens the signing keys and the digest key stored\n\
         # in the database. Keep it secret and back it up together with the database: neither\n\
         # is of any use without the other.\n{}\n",
        kek.id(),
        kek.encoded().expose()
    )
}

/// Writes `kek` to a new file at `path` (mode 0600), fully, then fsyncs it.
fn write_new_file(path: &Path, kek: &KeyEncryptionKey) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(key_file_text(kek).as_bytes())?;
    file.sync_all()
}

/// Makes the directory entry of a new or renamed file durable.
fn sync_dir(path: &Path) {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// A new key in a new file at `path`. The file appears complete or not at all (written under
/// a temporary name, then linked): of several processes starting together on one database,
/// one creates it and the others read that one.
fn create_key_file(path: &Path, inventory: &Inventory) -> anyhow::Result<KeyEncryptionKey> {
    let kek = KeyEncryptionKey::generate();
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        restguard::digest::random_secret("")
    ));
    let temporary = PathBuf::from(temporary);
    let created = write_new_file(&temporary, &kek).and_then(|()| fs::hard_link(&temporary, path));
    let _ = fs::remove_file(&temporary);
    match created {
        Ok(()) => {
            sync_dir(path);
            tracing::info!(
                file = %path.display(),
                kek = %kek.id(),
                keys_in_clear = inventory.clear,
                "created the key-encryption key file; back it up together with the database"
            );
            Ok(kek)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_key_file(path)?
            .ok_or_else(|| anyhow!("server.secret_key_file {}: vanished", path.display())),
        Err(e) => bail!(
            "server.secret_key_file {}: cannot create it: {e}",
            path.display()
        ),
    }
}

/// Rotation, step 1: the new key written beside the current file (`<file>.new`), so that it
/// is on disk before the database switches to it.
pub(crate) fn stage_new_key(path: &Path, kek: &KeyEncryptionKey) -> anyhow::Result<PathBuf> {
    let pending = pending_path(path);
    match fs::remove_file(&pending) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => bail!("{}: {e}", pending.display()),
    }
    write_new_file(&pending, kek).map_err(|e| anyhow!("{}: {e}", pending.display()))?;
    sync_dir(&pending);
    Ok(pending)
}

/// Rotation, step 3 (after the database switched): the new key takes the file's place.
pub(crate) fn commit_new_key(path: &Path, pending: &Path) -> anyhow::Result<()> {
    fs::rename(pending, path).map_err(|e| {
        anyhow!(
            "the database is now encrypted under the key in {}, but moving it to {} failed: {e} (move it by hand)",
            pending.display(),
            path.display()
        )
    })?;
    sync_dir(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_key_file_is_beside_the_sqlite_file() {
        for (url, file) in [
            ("sqlite://restguard.db", Some("restguard.key")),
            ("sqlite:restguard.db", Some("restguard.key")),
            (
                "sqlite:///var/lib/rg/data.db",
                Some("/var/lib/rg/restguard.key"),
            ),
            ("sqlite://data/x.db?mode=rwc", Some("data/restguard.key")),
            ("postgres://u:p@db/x", Some("restguard.key")),
            ("memory:", None),
            ("sqlite::memory:", None),
        ] {
            assert_eq!(default_file(url), file.map(PathBuf::from), "{url}");
        }
    }

    #[test]
    fn key_files_hold_one_key_and_comments() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("restguard.key");
        let kek = create_key_file(&path, &Inventory::default()).expect("created");
        let read = read_key_file(&path).expect("readable").expect("exists");
        assert_eq!(read.id(), kek.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A second creator reads the first one's key.
        assert_eq!(
            create_key_file(&path, &Inventory::default())
                .expect("read")
                .id(),
            kek.id()
        );
        assert!(read_key_file(&dir.path().join("none"))
            .expect("ok")
            .is_none());
        fs::write(&path, "# only a comment\n").expect("write");
        assert!(read_key_file(&path).is_err());
        fs::write(&path, "not base64\n").expect("write");
        let e = read_key_file(&path).expect_err("no key").to_string();
        assert!(
            e.contains("base64 of 32 bytes") && !e.contains("not base64"),
            "{e}"
        );
    }
}
