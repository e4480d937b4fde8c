//! What the backup leaves out: `--exclude` globs, `--exclude-from` files and `SRC/.backupignore`,
//! all in gitignore syntax, matched against paths relative to SRC. An excluded folder is neither
//! walked nor watched, and nothing under it is copied.

use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::error::{About, Error, Why};

/// Files that are never worth a version, left out unless `--no-default-ignores`: every copy is
/// kept forever, so each editor swap file, lock file and half-downloaded file copied would stay
/// as a permanent version. In gitignore syntax (`\#` is a literal `#`).
pub(crate) const DEFAULT_IGNORES: [&str; 21] = [
    // Editors: vim's swap files and its write test, Emacs' backups, locks and autosaves.
    "*.swp",
    "*.swx",
    "4913",
    "*~",
    ".#*",
    "\\#*#",
    // LibreOffice's lock files, and the temporary file it saves into before renaming it.
    ".~lock.*#",
    "lu*.tmp",
    // rsync's temporary file for NAME, `.NAME.XXXXXX` with six random letters and digits: a
    // name with one capital or digit among the last six (all but 1 in 190 of rsync's; a dotfile
    // such as `.env.sample` is kept). A file its writer keeps open is not copied anyway (see
    // `settle`), whatever its name.
    ".?*.[A-Z0-9]?????",
    ".?*.?[A-Z0-9]????",
    ".?*.??[A-Z0-9]???",
    ".?*.???[A-Z0-9]??",
    ".?*.????[A-Z0-9]?",
    ".?*.?????[A-Z0-9]",
    // Downloads in progress: Firefox, Chrome, Safari.
    "*.part",
    "*.crdownload",
    "*.download",
    // What operating systems leave behind.
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    ".Trash-*/",
];

/// The name of the ignore file read from the root of SRC.
pub(crate) const IGNORE_FILE: &str = ".backupignore";

#[derive(Clone, Debug)]
pub(crate) struct Exclude {
    matcher: Gitignore,
}

impl Exclude {
    /// Nothing excluded.
    #[cfg(test)]
    pub(crate) fn none() -> Exclude {
        Exclude {
            matcher: Gitignore::empty(),
        }
    }

    /// Builds the matcher from the default ignores (unless `defaults` is off), command-line
    /// globs, pattern files, and `SRC/.backupignore` when it exists; a later `!pattern` takes a
    /// default back. The error names the file and line, or the glob, that does not parse.
    pub(crate) fn build(
        src: &Path,
        defaults: bool,
        globs: &[String],
        files: &[PathBuf],
    ) -> Result<Exclude, Error> {
        let mut b = GitignoreBuilder::new(src);
        let bad_glob = |default: bool, glob: &str, e: ignore::Error| {
            let glob = glob.to_string();
            Error::new(About::Glob { default, glob }, Why::Pattern(e.to_string()))
        };
        // The file is named once, by the error's subject.
        let bad_file = |about: About, e: ignore::Error| {
            let e = match e {
                ignore::Error::WithPath { err, .. } => *err,
                e => e,
            };
            Error::new(about, Why::Pattern(e.to_string()))
        };
        if defaults {
            for glob in DEFAULT_IGNORES {
                b.add_line(None, glob)
                    .map_err(|e| bad_glob(true, glob, e))?;
            }
        }
        for glob in globs {
            b.add_line(None, glob)
                .map_err(|e| bad_glob(false, glob, e))?;
        }
        for file in files {
            let flag = |why| Error::new(About::Option("--exclude-from", file.clone()), why);
            if !file.is_file() {
                return Err(flag(Why::NoSuchFile));
            }
            if let Some(e) = b.add(file) {
                return Err(bad_file(About::Option("--exclude-from", file.clone()), e));
            }
        }
        let own = src.join(IGNORE_FILE);
        if own.is_file()
            && let Some(e) = b.add(&own)
        {
            return Err(bad_file(About::Path(own), e));
        }
        let matcher = b
            .build()
            .map_err(|e| Error::run(Why::Pattern(e.to_string())))?;
        Ok(Exclude { matcher })
    }

    /// Whether `rel` (relative to SRC) is excluded, itself or through a folder above it.
    pub(crate) fn excludes(&self, rel: &Path, is_dir: bool) -> bool {
        if self.matcher.is_empty() || rel.as_os_str().is_empty() || rel.has_root() {
            return false;
        }
        self.matcher
            .matched_path_or_any_parents(rel, is_dir)
            .is_ignore()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.matcher.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(globs: &[&str]) -> Exclude {
        let globs: Vec<String> = globs.iter().map(|s| s.to_string()).collect();
        Exclude::build(Path::new("/nonexistent-src"), false, &globs, &[]).expect("valid globs")
    }

    #[test]
    fn gitignore_semantics() {
        let e = ex(&["*.tmp", "build/", "/cache", "!keep.tmp", "docs/**/draft*"]);
        let p = Path::new;
        assert!(e.excludes(p("a.tmp"), false));
        assert!(e.excludes(p("deep/er/a.tmp"), false));
        assert!(!e.excludes(p("keep.tmp"), false));
        assert!(e.excludes(p("build"), true));
        assert!(
            !e.excludes(p("build"), false),
            "a file named build is not the folder"
        );
        assert!(
            e.excludes(p("x/build/out.o"), false),
            "inside an excluded folder"
        );
        assert!(e.excludes(p("cache"), true));
        assert!(!e.excludes(p("x/cache"), true), "anchored to the root");
        assert!(e.excludes(p("docs/a/b/draft1.md"), false));
        assert!(!e.excludes(p("docs/a/b/final.md"), false));
        assert!(!e.excludes(p(""), true));
    }

    #[test]
    fn default_ignores_leave_out_litter_and_can_be_taken_back() {
        let on = Exclude::build(Path::new("/s"), true, &[], &[]).expect("defaults parse");
        let p = Path::new;
        for litter in [
            ".report.txt.swp",
            "4913",
            "notes.txt~",
            ".#notes.txt",
            "#notes.txt#",
            ".~lock.budget.ods#",
            "film.mkv.part",
            "setup.exe.crdownload",
            "deep/down/.DS_Store",
            "Thumbs.db",
        ] {
            assert!(on.excludes(p(litter), false), "{litter}");
        }
        assert!(on.excludes(p(".Trash-1000"), true));
        for temp in [
            ".report.odt.Xa81Qz",
            ".data.csv.a1b2c3",
            "sub/.x.ZZZZZZ",
            "lu8412ab3.tmp",
        ] {
            assert!(on.excludes(p(temp), false), "{temp}");
        }
        for kept in [
            ".env.sample",
            ".bashrc.backup",
            ".profile",
            ".config",
            "a.Xa81Qz",
        ] {
            assert!(!on.excludes(p(kept), false), "{kept}");
        }
        assert!(!on.excludes(p("report.txt"), false));
        assert!(!on.excludes(p("#notes.txt"), false));
        let back =
            Exclude::build(Path::new("/s"), true, &["!*.part".to_string()], &[]).expect("parse");
        assert!(!back.excludes(p("film.mkv.part"), false));
        let off = Exclude::build(Path::new("/s"), false, &[], &[]).expect("parse");
        assert!(!off.excludes(p("x.swp"), false));
    }

    #[test]
    fn nothing_is_excluded_by_default() {
        assert!(!Exclude::none().excludes(Path::new("a.tmp"), false));
        assert!(Exclude::none().is_empty());
    }

    #[test]
    fn a_bad_glob_is_named() {
        let err =
            Exclude::build(Path::new("/s"), false, &["{a,b".to_string()], &[]).expect_err("bad");
        assert!(err.to_string().starts_with("--exclude \"{a,b\": "), "{err}");
    }
}
