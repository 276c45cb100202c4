//! What the destination refuses, and why, as a type (docs/design.md, invariants 6 and 10): a
//! link below the root, another run's destination, a name that folds to another's. Carried
//! inside an `io::Error` (the storage's calls return those), and told apart by
//! [`Refused::of`], never by its words.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// A link on the way to a folder below the root: nothing is written, read or deleted through it.
    #[error(
        "{0} is a symlink, or leads through one: softcopy never writes, reads or deletes through a link in the \
         destination"
    )]
    Link(PathBuf),
    /// A folder that is, or lies inside, another run's destination.
    #[error(
        "{path} is another softcopy's destination ({who}): nothing of this copy is written, read or deleted there"
    )]
    Claimed { path: PathBuf, who: String },
    /// A folder stored under the name in another case, where the destination folds case.
    #[error(
        "{0} collides with a folder of the same name in another case at a destination that does not tell upper \
         from lower case: not copied into it"
    )]
    FolderCase(PathBuf),
    /// A file whose name folds to another's copy there (`whose` says which kind of copy).
    #[error(
        "{name} collides with {other} ({whose}) at a destination that does not tell upper from lower case: not \
         copied over it"
    )]
    NameCase { name: PathBuf, other: String, whose: &'static str },
}

impl Refused {
    /// What `e` refused, if it is a refusal.
    pub fn of(e: &io::Error) -> Option<&Refused> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<Refused>())
    }
}

impl From<Refused> for io::Error {
    fn from(r: Refused) -> io::Error {
        io::Error::other(r)
    }
}
