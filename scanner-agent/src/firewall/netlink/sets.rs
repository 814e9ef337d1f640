//! Named sets and maps with their element counts: a dump of the sets, then
//! one dump of each named set's elements, counted as they stream by (no
//! element is kept, so a set of millions costs time, not memory).
//!
//! Unlike the rule read, the counts need no common generation: each set's
//! dump is consistent on its own (an interrupted one is repeated), and a
//! set deleted meanwhile is left out.

use std::time::Instant;

use super::{
    super::{FirewallError, ruleset::Family},
    ATTEMPTS, Reader, attrs, c_string,
};

/// One named set or map and its number of elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in super::super) struct SetElements {
    pub family: Family,
    pub table: String,
    pub set: String,
    pub elements: u64,
}

/// Every named set of this thread's network namespace, counted; gives up
/// at `deadline`.
pub(in super::super) fn set_elements(deadline: Instant) -> Result<Vec<SetElements>, FirewallError> {
    let mut reader = Reader::new(deadline)?;
    let mut sets = Vec::new();
    let mut complete = false;
    for _ in 0..ATTEMPTS {
        sets.clear();
        complete = reader.dump(libc::NFT_MSG_GETSET as u16, 0, &[], |msg| {
            if let Some(set) = attrs::named_set(msg)? {
                sets.push(set);
            }
            Ok(())
        })?;
        if complete {
            break;
        }
    }
    if !complete {
        return Err(FirewallError::KeepsChanging { attempts: ATTEMPTS });
    }
    let mut counted = Vec::with_capacity(sets.len());
    'sets: for (family, table, set) in sets {
        let mut filter = Vec::new();
        attrs::push_attribute(
            &mut filter,
            attrs::NFTA_SET_ELEM_LIST_TABLE,
            &c_string(&table),
        );
        attrs::push_attribute(&mut filter, attrs::NFTA_SET_ELEM_LIST_SET, &c_string(&set));
        for _ in 0..ATTEMPTS {
            let mut elements = 0;
            let complete =
                reader.dump(libc::NFT_MSG_GETSETELEM as u16, family, &filter, |msg| {
                    elements += attrs::set_elements(msg);
                    Ok(())
                })?;
            if complete {
                counted.push(SetElements {
                    family: Family(family),
                    table,
                    set,
                    elements,
                });
                continue 'sets;
            }
        }
        // Interrupted at every attempt, or gone (ENOENT): a set that is
        // being deleted or replaced right now is left out of this count.
    }
    Ok(counted)
}
