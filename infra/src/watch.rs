//! Files a service reads at start and takes up again when they change (the tokens file, a
//! TLS certificate and its key), so a token is revoked or a certificate renewed without a
//! restart. Changes are found by reading the files every few seconds and comparing their
//! digest: that works on every filesystem and with every way of replacing a file (an
//! editor's rename, a Kubernetes secret's symlink swap), where change notifications miss
//! some.
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// How often watched files are read again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// The contents of a set of files as read at one moment.
#[derive(Debug, Clone)]
pub struct Files {
    paths: Vec<PathBuf>,
    pub contents: Vec<Vec<u8>>,
    digest: [u8; 32],
}

impl Files {
    /// Reads every file of `paths`, in order.
    pub fn read(paths: &[PathBuf]) -> Result<Files, (PathBuf, std::io::Error)> {
        let mut contents = Vec::with_capacity(paths.len());
        for path in paths {
            contents.push(std::fs::read(path).map_err(|e| (path.clone(), e))?);
        }
        Ok(Files { paths: paths.to_vec(), digest: digest(&contents), contents })
    }

    pub fn path(&self, index: usize) -> &Path {
        &self.paths[index]
    }

    /// Calls `reload` with the files' new contents each time they differ from the last
    /// ones seen, checked every `every`, until `reload` returns `false` (its owner is
    /// gone). A file that cannot be read is left as it was: it is being replaced, or it
    /// went away, and the service goes on with what it has. Needs a tokio runtime.
    pub fn watch(self, every: Duration, mut reload: impl FnMut(&Files) -> bool + Send + 'static) {
        tokio::spawn(async move {
            let mut seen = self.digest;
            loop {
                tokio::time::sleep(every).await;
                let files = match Files::read(&self.paths) {
                    Ok(files) => files,
                    Err((path, e)) => {
                        tracing::warn!(
                            path = %path.display(),
                            error = &e as &dyn std::error::Error,
                            "A watched file cannot be read. Going on with what was read before."
                        );
                        continue;
                    }
                };
                if files.digest == seen {
                    continue;
                }
                seen = files.digest;
                if !reload(&files) {
                    return;
                }
            }
        });
    }
}

fn digest(contents: &[Vec<u8>]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for content in contents {
        hash.update((content.len() as u64).to_be_bytes());
        hash.update(content);
    }
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn a_change_of_content_is_reported_once_and_an_unchanged_file_never() {
        let dir = std::env::temp_dir().join(format!("orderflow-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("watched");
        std::fs::write(&path, "one").expect("write");
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let files = Files::read(std::slice::from_ref(&path)).expect("read");
        let log = seen.clone();
        files.watch(Duration::from_millis(20), move |files| {
            log.lock().expect("log").push(String::from_utf8_lossy(&files.contents[0]).into_owned());
            true
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(seen.lock().expect("log").is_empty(), "nothing changed yet");
        std::fs::write(&path, "two").expect("write");
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Written again with the same content: not a change.
        std::fs::write(&path, "two").expect("write");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(*seen.lock().expect("log"), vec!["two".to_string()]);
    }
}
