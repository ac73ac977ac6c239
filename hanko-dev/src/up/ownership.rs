//! Directories that `up`, running as root, hands to the `postgres` OS user.
//!
//! Some of them live under the world-writable `/var/tmp`, where another
//! local user can create a path first. A chown or chmod as root through a
//! symbolic link planted there would hand any file, `/etc` for example, to
//! the `postgres` user. So every directory is checked with `lstat` before
//! it is changed, and the change goes through an open handle to the checked
//! directory, never through its path. The cluster's parent directory in
//! `/var/tmp` stays root's, so postgres cannot swap its entries.

use std::fs::{DirBuilder, Metadata, OpenOptions, Permissions};
use std::io::ErrorKind;
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::postgres::DEBIAN_PACKAGE;

/// The Unix user and group ids a directory is handed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
}

impl Owner {
    /// The root user and group, for directories that only lead to the
    /// postgres user's: postgres may enter them but not rename what is
    /// inside, so it cannot swap in a link while `up` works below them.
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };

    /// Looks up the ids of the `postgres` OS user with `id`.
    ///
    /// # Errors
    ///
    /// Fails, naming the Debian package that creates the user, when `id`
    /// cannot find it.
    pub fn postgres() -> Result<Self> {
        Ok(Self {
            uid: id_of_postgres("-u")?,
            gid: id_of_postgres("-g")?,
        })
    }
}

fn id_of_postgres(flag: &str) -> Result<u32> {
    let output = std::process::Command::new("id")
        .args([flag, "postgres"])
        .output()
        .context("running `id` failed")?;
    let text = String::from_utf8_lossy(&output.stdout);
    match text.trim().parse() {
        Ok(id) if output.status.success() => Ok(id),
        _ => bail!(
            "the postgres OS user was not found by `id {flag} postgres`; \
             `apt-get install {DEBIAN_PACKAGE}` creates it"
        ),
    }
}

/// Creates `dir` unless it exists, then makes `owner` its owner with
/// `mode`.
///
/// # Errors
///
/// Fails, naming the path, when `dir` is a symbolic link, is not a
/// directory, or is owned by a user other than root and `owner`, and when
/// it cannot be created or changed. The parent must exist.
pub fn create_owned_dir(dir: &Path, owner: Owner, mode: u32) -> Result<()> {
    match DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error).with_context(|| format!("creating {}", dir.display())),
    }

    let checked = std::fs::symlink_metadata(dir)
        .with_context(|| format!("reading the metadata of {}", dir.display()))?;
    check_trusted_dir(dir, &checked, owner)?;

    // A symbolic link or a FIFO put in place after the check fails to open
    // instead of being followed or blocking, and another directory moved
    // there shows in the device and inode numbers.
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .with_context(|| format!("opening {} as a directory", dir.display()))?;
    let opened = handle
        .metadata()
        .with_context(|| format!("reading the metadata of {}", dir.display()))?;
    if (opened.dev(), opened.ino()) != (checked.dev(), checked.ino()) {
        bail!(
            "{} was replaced while `hanko-dev up` checked it; make sure no other user \
             can write to its parent directory, then run `hanko-dev up` again",
            dir.display()
        );
    }

    std::os::unix::fs::fchown(&handle, Some(owner.uid), Some(owner.gid))
        .with_context(|| format!("changing the owner of {}", dir.display()))?;
    handle
        .set_permissions(Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", dir.display()))
}

/// Rejects a path that a chown as root must not go through, which is a
/// symbolic link, a file that is not a directory, or a directory that
/// another user controls.
fn check_trusted_dir(dir: &Path, metadata: &Metadata, owner: Owner) -> Result<()> {
    if metadata.file_type().is_symlink() {
        bail!(
            "{} is a symbolic link; `hanko-dev up` does not follow links in directories it \
             hands to the postgres OS user. Remove the link and run `hanko-dev up` again",
            dir.display()
        );
    }
    if !metadata.is_dir() {
        bail!(
            "{} exists but is not a directory; remove it and run `hanko-dev up` again",
            dir.display()
        );
    }
    let uid = metadata.uid();
    if uid != 0 && uid != owner.uid {
        let expected = if owner.uid == 0 {
            "root".to_owned()
        } else {
            format!("root or uid {} (postgres)", owner.uid)
        };
        bail!(
            "{} is owned by uid {uid}, not by {expected}, so another user may control what \
             is inside it; remove it and run `hanko-dev up` again",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::unix::fs::symlink;

    use super::*;

    /// Returns the ids that this test process gives the files it creates,
    /// so the tests can hand directories to themselves without root.
    fn current_owner(temp: &Path) -> Owner {
        let metadata = std::fs::metadata(temp).expect("temp dir metadata");
        Owner {
            uid: metadata.uid(),
            gid: metadata.gid(),
        }
    }

    /// Creates the directory a planted link points to, with mode 0755, so
    /// a test can see whether anything changed it.
    fn link_target(temp: &Path) -> std::path::PathBuf {
        let target = temp.join("etc");
        std::fs::create_dir(&target).expect("mkdir");
        std::fs::set_permissions(&target, Permissions::from_mode(0o755)).expect("chmod");
        target
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).expect("metadata").mode() & 0o7777
    }

    #[test]
    fn new_dir_is_created_private() {
        let temp = tempfile::tempdir().expect("temp dir");
        let owner = current_owner(temp.path());
        let dir = temp.path().join("hanko-edge-0123456789abcdef");

        create_owned_dir(&dir, owner, 0o700).expect("created");

        let metadata = std::fs::symlink_metadata(&dir).expect("metadata");
        assert!(metadata.is_dir());
        assert_eq!(metadata.uid(), owner.uid);
        assert_eq!(metadata.gid(), owner.gid);
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn existing_dir_of_owner_is_made_private() {
        let temp = tempfile::tempdir().expect("temp dir");
        let owner = current_owner(temp.path());
        let dir = temp.path().join("postgres");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).expect("chmod");

        create_owned_dir(&dir, owner, 0o700).expect("accepted");

        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn symlink_in_fallback_dir_is_rejected() {
        let temp = tempfile::tempdir().expect("temp dir");
        let owner = current_owner(temp.path());
        let target = link_target(temp.path());
        // Another user's layout: a real parent with a link where the
        // cluster directory belongs.
        let parent = temp.path().join("hanko-edge-0123456789abcdef");
        std::fs::create_dir(&parent).expect("mkdir");
        let cluster = parent.join("postgres");
        symlink(&target, &cluster).expect("symlink");

        create_owned_dir(&parent, owner, 0o700).expect("the parent is a real directory");
        let error = format!(
            "{:#}",
            create_owned_dir(&cluster, owner, 0o700).expect_err("a link must be rejected")
        );

        assert!(error.contains(&cluster.display().to_string()), "{error}");
        assert!(error.contains("symbolic link"), "{error}");
        assert_eq!(mode(&target), 0o755, "the link target was changed");
        assert!(
            std::fs::symlink_metadata(&cluster)
                .expect("metadata")
                .file_type()
                .is_symlink(),
            "the link was replaced"
        );
    }

    #[test]
    fn symlinked_fallback_dir_is_rejected() {
        let temp = tempfile::tempdir().expect("temp dir");
        let owner = current_owner(temp.path());
        let target = link_target(temp.path());
        let parent = temp.path().join("hanko-edge-0123456789abcdef");
        symlink(&target, &parent).expect("symlink");

        let error = format!(
            "{:#}",
            create_owned_dir(&parent, owner, 0o700).expect_err("a link must be rejected")
        );

        assert!(error.contains(&parent.display().to_string()), "{error}");
        assert!(error.contains("symbolic link"), "{error}");
        assert_eq!(mode(&target), 0o755, "the link target was changed");
    }

    #[test]
    fn file_in_place_of_dir_is_rejected() {
        let temp = tempfile::tempdir().expect("temp dir");
        let owner = current_owner(temp.path());
        let file = temp.path().join("postgres");
        std::fs::write(&file, "").expect("write");

        let error = format!(
            "{:#}",
            create_owned_dir(&file, owner, 0o700).expect_err("a file must be rejected")
        );

        assert!(error.contains(&file.display().to_string()), "{error}");
        assert!(error.contains("not a directory"), "{error}");
    }

    #[test]
    fn dir_of_other_user_is_rejected() {
        let temp = tempfile::tempdir().expect("temp dir");
        if current_owner(temp.path()).uid != 0 {
            // Written past the test harness's capture, so the skip shows.
            let _ = writeln!(
                std::io::stderr(),
                "note: dir_of_other_user_is_rejected skipped its check: giving a \
                 directory to another uid needs root"
            );
            return;
        }
        // Neither root nor the owner `up` hands directories to.
        let stranger = 4_242_421;
        let owner = Owner {
            uid: 4_242_422,
            gid: 4_242_422,
        };
        let dir = temp.path().join("hanko-edge-0123456789abcdef");
        std::fs::create_dir(&dir).expect("mkdir");
        std::os::unix::fs::lchown(&dir, Some(stranger), Some(stranger)).expect("chown as root");

        let error = format!(
            "{:#}",
            create_owned_dir(&dir, owner, 0o700).expect_err("another user's dir must be rejected")
        );

        assert!(error.contains(&dir.display().to_string()), "{error}");
        assert!(error.contains(&format!("uid {stranger}")), "{error}");
        assert_eq!(
            std::fs::symlink_metadata(&dir).expect("metadata").uid(),
            stranger,
            "the owner was changed"
        );
    }

    #[test]
    fn root_parent_rejects_the_postgres_user() {
        let temp = tempfile::tempdir().expect("temp dir");
        if current_owner(temp.path()).uid != 0 {
            let _ = writeln!(
                std::io::stderr(),
                "note: root_parent_rejects_the_postgres_user skipped its check: it needs root"
            );
            return;
        }
        let parent = temp.path().join("hanko-edge-0123456789abcdef");
        create_owned_dir(&parent, Owner::ROOT, 0o755).expect("created");
        let metadata = std::fs::symlink_metadata(&parent).expect("metadata");
        assert_eq!(metadata.uid(), 0);
        assert_eq!(mode(&parent), 0o755);

        // A parent the postgres user owns lets it rename what is inside.
        let postgres_uid = 4_242_423;
        std::os::unix::fs::lchown(&parent, Some(postgres_uid), Some(postgres_uid))
            .expect("chown as root");
        let error = format!(
            "{:#}",
            create_owned_dir(&parent, Owner::ROOT, 0o755).expect_err("must be rejected")
        );
        assert!(error.contains("not by root,"), "{error}");
    }
}
