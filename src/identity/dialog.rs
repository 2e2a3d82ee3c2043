//! Dialogs this farm record-routed (RFC 3261 16.6 item 4, 12.2): our Record-Route entries
//! carry a MAC under the farm's key, so that a request merely claiming to be in a dialog of
//! ours (a To tag and a Route naming the farm) is told apart from one that is.

use super::Identity;
use crate::sip::Message;
use crate::sip::addr::NameAddr;
use crate::sip::header::HeaderName;

/// The Record-Route parameter that signs a dialog.
pub(crate) const RR_PARAM: &str = "sfr";

/// What our Record-Route carries for a dialog: a MAC over its Call-ID and the caller's tag
/// (the From tag of the request that creates it; in later requests it is the From or the To
/// tag, depending on the direction). Only the farm can write it, so a request that merely
/// claims to be in a dialog of ours (a To tag and a Route naming the farm) is told apart.
pub(crate) fn dialog_tag(identity: &Identity, call_id: &str, caller_tag: &str) -> String {
    identity.mac(&[b"dialog", call_id.as_bytes(), caller_tag.as_bytes()])
}

/// Is `msg` inside a dialog this farm record-routed: a To tag, and a top Route naming the
/// farm whose signature matches the dialog?
pub(crate) fn in_our_dialog(identity: &Identity, msg: &Message) -> bool {
    let to_tag = msg
        .get(&HeaderName::To)
        .and_then(|t| NameAddr::parse(t).ok())
        .and_then(|a| a.tag().map(str::to_owned));
    let Some(to_tag) = to_tag else {
        return false;
    };
    let Some(top) = super::top_route_to_us(identity, msg) else {
        return false;
    };
    let Some(Some(sig)) = top.param(RR_PARAM) else {
        return false;
    };
    let call_id = msg.call_id().unwrap_or("");
    [from_tag(msg), to_tag]
        .iter()
        .any(|tag| identity.mac_ok(sig, &[b"dialog", call_id.as_bytes(), tag.as_bytes()]))
}

pub(crate) fn from_tag(msg: &Message) -> String {
    msg.get(&HeaderName::From)
        .and_then(|f| NameAddr::parse(f).ok())
        .and_then(|a| a.tag().map(str::to_owned))
        .unwrap_or_default()
}
