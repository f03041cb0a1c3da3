//! Finding PostgreSQL's server binaries (initdb, postgres, pg_ctl, pg_basebackup, psql).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::LocalPgError;

/// Binaries every cluster needs, all from the same directory.
const REQUIRED: &[&str] = &["initdb", "postgres", "pg_ctl", "pg_basebackup"];

const INSTALL_HINT: &str = "install PostgreSQL's server and client: on Debian/Ubuntu \
`sudo apt-get update && sudo apt-get install -y postgresql postgresql-contrib` (or run \
./scripts/deps.sh, which does that), on Fedora/RHEL `sudo dnf install postgresql-server \
postgresql-contrib`, on macOS `brew install postgresql`; \
or point SWITCHYARD_PG_BINDIR at a directory containing initdb, postgres, pg_ctl and \
pg_basebackup";

/// A directory holding PostgreSQL's server binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    pub bindir: PathBuf,
}

impl PgBinaries {
    /// Finds the binaries: `$SWITCHYARD_PG_BINDIR` if set, then `initdb` in `$PATH`
    /// (symlinks resolved, so Debian's `/usr/local/bin/initdb -> /usr/lib/postgresql/15/bin`
    /// works), then `pg_config --bindir`, then the highest version under
    /// `/usr/lib/postgresql/*/bin` (and `/usr/pgsql-*/bin`, `/usr/local/pgsql/bin`).
    /// A candidate counts only if it holds initdb, postgres, pg_ctl and pg_basebackup.
    pub fn find() -> Result<PgBinaries, LocalPgError> {
        let mut tried: Vec<String> = Vec::new();

        if let Some(dir) = std::env::var_os("SWITCHYARD_PG_BINDIR") {
            let dir = PathBuf::from(dir);
            if Self::complete(&dir) {
                return Ok(PgBinaries { bindir: dir });
            }
            return Err(LocalPgError::BinariesNotFound(format!(
                "SWITCHYARD_PG_BINDIR={} does not contain {}",
                dir.display(),
                REQUIRED.join(", ")
            )));
        }

        if let Some(initdb) = find_in_path("initdb") {
            let real = std::fs::canonicalize(&initdb).unwrap_or(initdb.clone());
            if let Some(dir) = real.parent() {
                if Self::complete(dir) {
                    return Ok(PgBinaries {
                        bindir: dir.to_path_buf(),
                    });
                }
                tried.push(format!("{} (from $PATH, incomplete)", dir.display()));
            }
        } else {
            tried.push("initdb in $PATH (not found)".into());
        }

        if let Some(pg_config) = find_in_path("pg_config") {
            if let Ok(out) = Command::new(&pg_config).arg("--bindir").output() {
                if out.status.success() {
                    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                    if Self::complete(&dir) {
                        return Ok(PgBinaries { bindir: dir });
                    }
                    tried.push(format!(
                        "{} (pg_config --bindir, incomplete)",
                        dir.display()
                    ));
                }
            }
        } else {
            tried.push("pg_config in $PATH (not found)".into());
        }

        let mut candidates: Vec<(Vec<u32>, PathBuf)> = Vec::new();
        for (parent, prefix) in [("/usr/lib/postgresql", ""), ("/usr", "pgsql-")] {
            let Ok(entries) = std::fs::read_dir(parent) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(ver) = name.strip_prefix(prefix) else {
                    continue;
                };
                let key: Option<Vec<u32>> = ver.split('.').map(|p| p.parse().ok()).collect();
                if let Some(key) = key {
                    candidates.push((key, e.path().join("bin")));
                }
            }
        }
        candidates.sort();
        for (_, dir) in candidates.iter().rev() {
            if Self::complete(dir) {
                return Ok(PgBinaries {
                    bindir: dir.clone(),
                });
            }
            tried.push(format!("{} (incomplete)", dir.display()));
        }
        let local = PathBuf::from("/usr/local/pgsql/bin");
        if Self::complete(&local) {
            return Ok(PgBinaries { bindir: local });
        }
        tried.push("/usr/lib/postgresql/*/bin".into());

        Err(LocalPgError::BinariesNotFound(format!(
            "looked at: {}. To fix: {INSTALL_HINT}",
            tried.join("; ")
        )))
    }

    fn complete(dir: &Path) -> bool {
        REQUIRED.iter().all(|b| is_executable(&dir.join(b)))
    }

    /// Path of a binary in the bindir (e.g. `bin("initdb")`).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// `psql`: the bindir's own if present, else the one in `$PATH` (Debian's wrapper).
    pub fn psql(&self) -> PathBuf {
        let own = self.bin("psql");
        if is_executable(&own) {
            return own;
        }
        find_in_path("psql").unwrap_or(own)
    }

    /// The major version from `postgres --version` (e.g. 15), if it can be determined.
    pub fn major_version(&self) -> Option<u32> {
        let out = Command::new(self.bin("postgres"))
            .arg("--version")
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        let ver = text.split(')').nth(1)?.split_whitespace().next()?;
        ver.split('.').next()?.parse().ok()
    }

    /// Whether the `pg_stat_statements` extension (control file and shared library) is
    /// installed alongside these binaries.
    pub fn has_pg_stat_statements(&self) -> bool {
        let mut share_dirs: Vec<PathBuf> = Vec::new();
        let mut lib_dirs: Vec<PathBuf> = Vec::new();
        let pg_config = self.bin("pg_config");
        if is_executable(&pg_config) {
            for (flag, dirs) in [
                ("--sharedir", &mut share_dirs),
                ("--pkglibdir", &mut lib_dirs),
            ] {
                if let Ok(out) = Command::new(&pg_config).arg(flag).output() {
                    if out.status.success() {
                        dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
                    }
                }
            }
        }
        let prefix = self.bindir.parent().map(Path::to_path_buf);
        if let Some(prefix) = &prefix {
            share_dirs.push(prefix.join("share"));
            share_dirs.push(prefix.join("share/postgresql"));
            lib_dirs.push(prefix.join("lib"));
            lib_dirs.push(prefix.join("lib/postgresql"));
            // Debian layout: /usr/lib/postgresql/15/bin -> /usr/share/postgresql/15
            if let Some(ver) = prefix.file_name() {
                share_dirs.push(Path::new("/usr/share/postgresql").join(ver));
            }
        }
        let control = share_dirs
            .iter()
            .any(|d| d.join("extension/pg_stat_statements.control").is_file());
        let library = lib_dirs.iter().any(|d| {
            d.join("pg_stat_statements.so").is_file()
                || d.join("pg_stat_statements.dylib").is_file()
        });
        control && library
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}
