//! The work `commander run --sync` sends besides copies: deletes of
//! target-only keys ([`Op::Delete`](crate::message::Op::Delete)), and the
//! outcome of an [`Op::Update`](crate::message::Op::Update) whose target
//! is newer. An update's compare-then-write is the `--verify` path of
//! [`super::transfer`].

use super::{Done, Ends, Mode, TransferOptions, MISMATCH};
use crate::error::{Error, ErrorKind, Result};
use crate::message::{KeyItem, Op};
use crate::report::Outcome;
use crate::store::{DeleteIf, Deletion};
use crate::verify::Verdict;

/// Class of a delete item without the target's listed size.
pub const BAD_DELETE: &str = "BadDeleteItem";

/// What became of a delete item.
pub(super) enum Deleting {
    Done(Done),
    /// Check mode, and the source has the key now: an ordinary check of
    /// this item (without the target's listing facts).
    CheckAsCopy(Box<KeyItem>),
}

/// An [`Op::Delete`] item: the source is looked at first (a key it has
/// again is kept), then the target key, and only it, is deleted if it is
/// still the listed object. Check mode deletes nothing: it shows the target
/// lacks the key the source lacks.
pub(super) async fn delete(
    ends: &Ends,
    item: &KeyItem,
    opts: &TransferOptions,
) -> Result<Deleting> {
    let source_has = ends.source.head(&item.key).await?.is_some();
    if opts.mode == Mode::Check {
        return check(ends, item, source_has).await;
    }
    if source_has {
        return Ok(Deleting::Done(noted(
            Outcome::Kept,
            "the source has the key again",
        )));
    }
    let target = ends.target.as_ref();
    let subject = format!("{}/{}", target.describe(), item.target_key());
    let Some(size) = item.size else {
        return Err(Error::new(
            ErrorKind::Invalid,
            BAD_DELETE,
            subject,
            "a delete item must carry the target's listed size (the delete is conditional on it)",
        ));
    };
    let cond = DeleteIf {
        etag: item.etag.clone(),
        size,
        last_modified: item.last_modified,
    };
    let done = match target.delete_if(item.target_key(), &cond).await? {
        Deletion::Deleted { conditional: true } => Done::new(Outcome::Deleted, 0),
        Deletion::Deleted { conditional: false } if target.capabilities().object_attrs => noted(
            Outcome::Deleted,
            "the endpoint has no conditional delete: checked by HEAD just before",
        ),
        Deletion::Deleted { conditional: false } => noted(
            Outcome::Deleted,
            "a directory has no conditional delete: size and mtime checked just before",
        ),
        Deletion::Changed(what) => noted(
            Outcome::Kept,
            &format!("the target changed since it was listed: {what}"),
        ),
        Deletion::Gone => noted(Outcome::Deleted, "already absent"),
    };
    Ok(Deleting::Done(done))
}

/// Check mode of a delete item: a key the source has again is checked as
/// any key; otherwise the target must lack it too.
async fn check(ends: &Ends, item: &KeyItem, source_has: bool) -> Result<Deleting> {
    if source_has {
        return Ok(Deleting::CheckAsCopy(Box::new(KeyItem {
            key: item.key.clone(),
            target_key: item.target_key.clone(),
            op: Op::Copy,
            ..KeyItem::default()
        })));
    }
    match ends.target.head(item.target_key()).await? {
        None => Ok(Deleting::Done(noted(
            Outcome::Verified,
            "the source lacks the key and so does the target",
        ))),
        Some(_) => Err(Error::new(
            ErrorKind::Permanent,
            MISMATCH,
            format!("{}/{}", ends.target.describe(), item.target_key()),
            "the target has a key the source lacks",
        )),
    }
}

/// An update whose target differs and was modified after its source: left
/// as it is, the note says how it differs.
pub(super) fn target_newer(verdict: &Verdict) -> Done {
    let how = match verdict {
        Verdict::Differs(reasons) => reasons.join("; "),
        Verdict::TagsDiffer => "tags differ".to_string(),
        Verdict::Unknown(why) => format!("not shown equal: {why}"),
        Verdict::Identical | Verdict::Missing => String::new(),
    };
    noted(
        Outcome::TargetNewer,
        &format!("the target is newer than the source and differs ({how}): left as it is"),
    )
}

fn noted(outcome: Outcome, note: &str) -> Done {
    Done {
        note: Some(note.to_string()),
        ..Done::new(outcome, 0)
    }
}
