//! The recipe under test: resolving its name or path, checking out refs, and finding
//! release versions (git tags like `1.4.0+6.44.1-alpine`) and the upgrade base.
use crate::process::{Cmd, Executor};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "recipe name {0:?} is not valid: use lowercase letters, digits, '-', '_' or '.' \
         (no path separators, no '..'), or give the path of an existing git repository"
    )]
    BadName(String),
    #[error(
        "recipe {name:?} not found: {path} does not exist; put the recipe's git repository \
         there (runner.recipes_dir) or pass its path"
    )]
    NotFound { name: String, path: PathBuf },
    #[error(
        "{0} is not a git repository (no .git); a recipe must be a git checkout with release tags"
    )]
    NotARepo(PathBuf),
    #[error(
        "ref {git_ref:?} not found in recipe {recipe}; give a branch, tag or commit that exists (`git -C {path} tag -l` lists releases)"
    )]
    RefNotFound {
        recipe: String,
        git_ref: String,
        path: PathBuf,
    },
    #[error(
        "UPGRADE_BASE_VERSION {version:?} is not a tag of recipe {recipe}; set it to a release \
         tag (`git tag -l`) in {meta}"
    )]
    BaseTagMissing {
        recipe: String,
        version: String,
        meta: PathBuf,
    },
    #[error(
        "recipe {recipe} has no release tag below {git_ref} to upgrade from; tag a release \
         (e.g. `git tag -a 1.0.0+1.0`) or set UPGRADE_BASE_VERSION in {meta}"
    )]
    NoBaseRelease {
        recipe: String,
        git_ref: String,
        meta: PathBuf,
    },
    #[error("git {args} failed in {dir}: {stderr}")]
    Git {
        args: String,
        dir: PathBuf,
        stderr: String,
    },
    #[error("cannot run git: {0}; install git")]
    GitMissing(#[source] std::io::Error),
    #[error("{0}; install git")]
    GitRun(String),
    #[error("cannot create {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Recipe names become stack names, file names and lock names.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && !name.contains("..")
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::BadName(name.to_string()))
    }
}

/// Where the recipe's source repository is: `arg` is an existing directory (a path) or
/// a name under `recipes_dir`. Returns the recipe name and the source path.
pub fn resolve(arg: &str, recipes_dir: &Path) -> Result<(String, PathBuf)> {
    let as_path = Path::new(arg);
    if (arg.contains('/') || arg == ".") && as_path.is_dir() {
        let path = as_path
            .canonicalize()
            .map_err(|_| Error::NotARepo(as_path.to_owned()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        validate_name(&name)?;
        if !path.join(".git").exists() {
            return Err(Error::NotARepo(path));
        }
        return Ok((name, path));
    }
    validate_name(arg)?;
    let path = recipes_dir.join(arg);
    if !path.is_dir() {
        return Err(Error::NotFound {
            name: arg.to_string(),
            path,
        });
    }
    if !path.join(".git").exists() {
        return Err(Error::NotARepo(path));
    }
    Ok((arg.to_string(), path))
}

/// Run git in `dir`, returning trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(Error::GitMissing)?;
    if !out.status.success() {
        return Err(Error::Git {
            args: args.join(" "),
            dir: dir.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Run a git command that talks to the recipe's remote (clone, fetch) in `dir`
/// through the run's executor.
fn git_remote(exec: &Executor, dir: &Path, args: &[&str]) -> Result<()> {
    let out = exec
        .run(
            Cmd::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .env("GIT_TERMINAL_PROMPT", "0"),
        )
        .map_err(|e| Error::GitRun(e.to_string()))?;
    if !out.exit.success() {
        return Err(Error::Git {
            args: format!("{} ({})", args.join(" "), out.exit),
            dir: dir.to_owned(),
            stderr: out.stderr.trim().to_string(),
        });
    }
    Ok(())
}

/// A clone of the recipe for one run (`$ABRA_DIR/recipes/<recipe>`).
#[derive(Debug, Clone)]
pub struct Checkout {
    pub recipe: String,
    pub dir: PathBuf,
}

impl Checkout {
    /// Clone `source` (path or URL) into `dir`, fetching `fetch_ref` too when given
    /// (a PR head such as `refs/pull/7/head` is not among the cloned branches).
    ///
    /// Both may go over the network, so they run through the run's executor: logged,
    /// masked, and stopped by a cancel or the run's deadline like any other child.
    pub fn clone(
        exec: &Executor,
        recipe: &str,
        source: &str,
        dir: &Path,
        fetch_ref: Option<&str>,
    ) -> Result<Checkout> {
        let parent = dir.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(parent).map_err(|e| Error::Io(parent.to_owned(), e))?;
        git_remote(
            exec,
            parent,
            &[
                "clone",
                "-q",
                "--no-checkout",
                source,
                &dir.to_string_lossy(),
            ],
        )?;
        let checkout = Checkout {
            recipe: recipe.to_string(),
            dir: dir.to_owned(),
        };
        // A PR head (`refs/pull/7/head`) is not among the cloned branches: fetch it
        // into a private ref so its commits are present.
        if let Some(r) = fetch_ref.filter(|r| r.starts_with("refs/")) {
            git_remote(
                exec,
                dir,
                &["fetch", "-q", "origin", &format!("+{r}:refs/ccci/fetched")],
            )?;
        }
        Ok(checkout)
    }

    /// The commit `git_ref` names: a commit, tag, local or remote branch.
    pub fn resolve(&self, git_ref: &str) -> Result<String> {
        for candidate in [
            git_ref.to_string(),
            format!("refs/tags/{git_ref}"),
            format!("origin/{git_ref}"),
        ] {
            if let Ok(sha) = git(
                &self.dir,
                &[
                    "rev-parse",
                    "-q",
                    "--verify",
                    &format!("{candidate}^{{commit}}"),
                ],
            ) {
                return Ok(sha);
            }
        }
        Err(Error::RefNotFound {
            recipe: self.recipe.clone(),
            git_ref: git_ref.to_string(),
            path: self.dir.clone(),
        })
    }

    /// Check out `commit` (detached); the working tree then is what a chaos deploy uses.
    pub fn checkout(&self, commit: &str) -> Result<()> {
        git(
            &self.dir,
            &["checkout", "-q", "--force", "--detach", commit],
        )?;
        Ok(())
    }

    /// Release tags (`<semver>+<upstream>` or plain semver), oldest first.
    pub fn releases(&self) -> Result<Vec<(semver::Version, String)>> {
        let tags = git(&self.dir, &["tag", "-l"])?;
        let mut releases: Vec<(semver::Version, String)> = tags
            .lines()
            .filter_map(|t| {
                semver::Version::parse(t.trim())
                    .ok()
                    .map(|v| (v, t.trim().to_string()))
            })
            .filter(|(v, _)| v.pre.is_empty())
            .collect();
        releases.sort();
        Ok(releases)
    }

    /// The version to upgrade from: `pinned` (must be a tag), else the newest release
    /// tag whose commit is an ancestor of `sha` and is not `sha` itself.
    pub fn upgrade_base(
        &self,
        sha: &str,
        git_ref: &str,
        pinned: Option<&str>,
        meta_path: &Path,
    ) -> Result<String> {
        if let Some(version) = pinned {
            return match self.resolve_tag(version) {
                Some(_) => Ok(version.to_string()),
                None => Err(Error::BaseTagMissing {
                    recipe: self.recipe.clone(),
                    version: version.to_string(),
                    meta: meta_path.to_owned(),
                }),
            };
        }
        for (_, tag) in self.releases()?.into_iter().rev() {
            let Some(tag_commit) = self.resolve_tag(&tag) else {
                continue;
            };
            if tag_commit == sha {
                continue;
            }
            let is_ancestor = Command::new("git")
                .arg("-C")
                .arg(&self.dir)
                .args(["merge-base", "--is-ancestor", &tag_commit, sha])
                .status()
                .map_err(Error::GitMissing)?
                .success();
            if is_ancestor {
                return Ok(tag);
            }
        }
        Err(Error::NoBaseRelease {
            recipe: self.recipe.clone(),
            git_ref: git_ref.to_string(),
            meta: meta_path.to_owned(),
        })
    }

    fn resolve_tag(&self, tag: &str) -> Option<String> {
        git(
            &self.dir,
            &[
                "rev-parse",
                "-q",
                "--verify",
                &format!("refs/tags/{tag}^{{commit}}"),
            ],
        )
        .ok()
    }

    /// The compose files of the recipe at `commit` (top-level `compose*.yml`, `.yaml`
    /// and `docker-compose*`), with their text: every file a deploy of that commit
    /// could use, whatever `COMPOSE_FILE` selects.
    pub fn compose_files(&self, commit: &str) -> Result<Vec<(String, String)>> {
        let names = git(&self.dir, &["ls-tree", "--name-only", commit])?;
        let mut files = Vec::new();
        for name in names.lines() {
            let compose = (name.starts_with("compose") || name.starts_with("docker-compose"))
                && (name.ends_with(".yml") || name.ends_with(".yaml"));
            if compose {
                let text = git(&self.dir, &["show", &format!("{commit}:{name}")])?;
                files.push((name.to_string(), text));
            }
        }
        Ok(files)
    }

    /// Copy the tracked `tests/` directory at `commit` into `dest` (`dest/tests/`, the
    /// snapshot the custom tier runs, so later checkouts cannot change it). Returns
    /// false if the recipe has no `tests/` at that commit.
    pub fn snapshot_tests(&self, commit: &str, dest: &Path) -> Result<bool> {
        let listing = git(
            &self.dir,
            &["ls-tree", "-r", "--name-only", commit, "tests/"],
        )?;
        if listing.is_empty() {
            return Ok(false);
        }
        std::fs::create_dir_all(dest).map_err(|e| Error::Io(dest.to_owned(), e))?;
        // Written straight into `dest` (the repository's index and tree stay as they are).
        let work_tree = format!("--work-tree={}", dest.display());
        git(
            &self.dir,
            &[
                &work_tree,
                "restore",
                &format!("--source={commit}"),
                "--",
                "tests/",
            ],
        )?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("hello").is_ok());
        assert!(validate_name("broken-upgrade").is_ok());
        for bad in ["", "../x", "a/b", "..", ".hidden", "UP", "a b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    fn repo_with_tags() -> (tempfile::TempDir, Checkout) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let run = |args: &[&str]| {
            let ok = Command::new("git")
                .arg("-C")
                .arg(&src)
                .args(args)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.org")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.org")
                .status()
                .unwrap()
                .success();
            assert!(ok, "{args:?}");
        };
        run(&["init", "-q", "-b", "main"]);
        for (i, tag) in ["1.0.0+1.0", "1.2.0+1.2", "1.10.0+2.0", ""]
            .iter()
            .enumerate()
        {
            std::fs::write(src.join("f"), i.to_string()).unwrap();
            run(&["add", "f"]);
            run(&["commit", "-q", "-m", "c"]);
            if !tag.is_empty() {
                run(&["tag", "-a", tag, "-m", tag]);
            }
        }
        let co = Checkout::clone(
            &crate::process::test_executor(dir.path()),
            "r",
            &src.to_string_lossy(),
            &dir.path().join("co"),
            None,
        )
        .unwrap();
        (dir, co)
    }

    #[test]
    fn upgrade_base_is_newest_release_below_ref() {
        let (_d, co) = repo_with_tags();
        let head = co.resolve("main").unwrap();
        let meta = Path::new("meta.toml");
        // semver order, not string order: 1.10.0 > 1.2.0
        assert_eq!(
            co.upgrade_base(&head, "main", None, meta).unwrap(),
            "1.10.0+2.0"
        );
        let tagged = co.resolve("1.10.0+2.0").unwrap();
        assert_eq!(
            co.upgrade_base(&tagged, "1.10.0+2.0", None, meta).unwrap(),
            "1.2.0+1.2"
        );
        let first = co.resolve("1.0.0+1.0").unwrap();
        let err = co
            .upgrade_base(&first, "1.0.0+1.0", None, meta)
            .unwrap_err();
        assert!(err.to_string().contains("UPGRADE_BASE_VERSION"), "{err}");
        assert_eq!(
            co.upgrade_base(&head, "main", Some("1.0.0+1.0"), meta)
                .unwrap(),
            "1.0.0+1.0"
        );
        assert!(matches!(
            co.upgrade_base(&head, "main", Some("9.9.9+9"), meta),
            Err(Error::BaseTagMissing { .. })
        ));
    }

    #[test]
    fn snapshot_copies_tests_at_a_commit_and_leaves_the_checkout_alone() {
        let (d, co) = repo_with_tags();
        let head = co.resolve("main").unwrap();
        let dest = d.path().join("snap");
        assert!(
            !co.snapshot_tests(&head, &dest).unwrap(),
            "no tests/ in this recipe"
        );
        let with_tests = co.resolve("main").unwrap();
        // A commit that ships tests/: made in the source and fetched.
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("tests")).unwrap();
        std::fs::write(src.join("tests/01.sh"), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            src.join("tests/01.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let env = [
            ("GIT_AUTHOR_NAME", "t"),
            ("GIT_AUTHOR_EMAIL", "t@example.org"),
            ("GIT_COMMITTER_NAME", "t"),
            ("GIT_COMMITTER_EMAIL", "t@example.org"),
        ];
        for args in [vec!["add", "tests"], vec!["commit", "-q", "-m", "tests"]] {
            assert!(
                Command::new("git")
                    .arg("-C")
                    .arg(&src)
                    .args(&args)
                    .envs(env)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        git(&co.dir, &["fetch", "-q", "origin"]).unwrap();
        let tested = co.resolve("origin/main").unwrap();
        assert_ne!(tested, with_tests);
        let status_before = git(&co.dir, &["status", "--porcelain"]).unwrap();
        assert!(co.snapshot_tests(&tested, &dest).unwrap());
        let mode = std::fs::metadata(dest.join("tests/01.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "executable bit kept");
        assert_eq!(
            git(&co.dir, &["status", "--porcelain"]).unwrap(),
            status_before,
            "checkout untouched"
        );
    }

    #[test]
    fn unknown_ref_is_named() {
        let (_d, co) = repo_with_tags();
        let err = co.resolve("nope").unwrap_err().to_string();
        assert!(err.contains("\"nope\""), "{err}");
    }
}
