//! Canonical function type ids, shared by every module in the process so `call_indirect` can
//! compare types across instances with one integer comparison.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use kiln_abi::FuncType;

fn registry() -> &'static Mutex<HashMap<FuncType, u32>> {
    static REGISTRY: OnceLock<Mutex<HashMap<FuncType, u32>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The canonical id of `ty` (structurally equal types get equal ids). Never 0... ids start at 1
/// so a zeroed VM context never matches a real type.
pub fn canonical_id(ty: &FuncType) -> u32 {
    let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
    let next = map.len() as u32 + 1;
    *map.entry(ty.clone()).or_insert(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_abi::ValType;

    #[test]
    fn equal_types_share_an_id_and_different_ones_do_not() {
        let a = FuncType { params: vec![ValType::I32], results: vec![] };
        let b = FuncType { params: vec![ValType::I64], results: vec![] };
        assert_eq!(canonical_id(&a), canonical_id(&a.clone()));
        assert_ne!(canonical_id(&a), canonical_id(&b));
        assert_ne!(canonical_id(&a), 0);
    }
}
