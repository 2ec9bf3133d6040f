//! Canonical function type ids, shared by every module in the process so `call_indirect` can
//! compare types across instances with one integer comparison.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use kiln_abi::{FuncType, HeapType, RefType, ValType};

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

/// Canonical ids for a module's type section, in order. A concrete reference to type `j`
/// inside a type is replaced by `j`'s canonical id first, so structurally equal types of
/// different modules get equal ids whatever their indices. (Without GC, a type can only refer
/// to earlier types, so one pass in order suffices.)
pub fn canonical_ids(types: &[FuncType]) -> Vec<u32> {
    let mut ids: Vec<u32> = Vec::with_capacity(types.len());
    for ty in types {
        let canon = FuncType {
            params: ty.params.iter().map(|&t| canonical_val_type(t, &ids)).collect(),
            results: ty.results.iter().map(|&t| canonical_val_type(t, &ids)).collect(),
        };
        ids.push(canonical_id(&canon));
    }
    ids
}

/// `ty` with concrete type indices replaced by canonical ids (`ids` is the module's table).
pub fn canonical_val_type(ty: ValType, ids: &[u32]) -> ValType {
    match ty {
        ValType::Ref(RefType { nullable, heap: HeapType::ConcreteFunc(j) }) => ValType::Ref(RefType {
            nullable,
            // An index not yet canonical (not expected without GC) stays distinct from all ids.
            heap: HeapType::ConcreteFunc(ids.get(j as usize).copied().unwrap_or(u32::MAX - j)),
        }),
        other => other,
    }
}

/// Reference subtyping on canonical types: `sub` may be used where `sup` is expected.
pub fn is_subtype(sub: ValType, sup: ValType) -> bool {
    match (sub, sup) {
        (ValType::Ref(a), ValType::Ref(b)) => {
            (!a.nullable || b.nullable)
                && match (a.heap, b.heap) {
                    (x, y) if x == y => true,
                    (HeapType::ConcreteFunc(_), HeapType::Func) => true,
                    _ => false,
                }
        }
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_abi::ValType;

    #[test]
    fn concrete_references_are_canonicalised_across_modules() {
        let unary = FuncType { params: vec![ValType::I32], results: vec![] };
        let takes_ref = |i| FuncType {
            params: vec![ValType::Ref(RefType { nullable: false, heap: HeapType::ConcreteFunc(i) })],
            results: vec![],
        };
        // Module A: [unary, takes_ref(0)]; module B: [other, unary, takes_ref(1)].
        let a = canonical_ids(&[unary.clone(), takes_ref(0)]);
        let b = canonical_ids(&[FuncType::default(), unary, takes_ref(1)]);
        assert_eq!(a[0], b[1]);
        assert_eq!(a[1], b[2]);
        assert_ne!(b[0], b[1]);
        let concrete = ValType::Ref(RefType { nullable: false, heap: HeapType::ConcreteFunc(a[0]) });
        assert!(is_subtype(concrete, ValType::Ref(RefType::FUNCREF)));
        assert!(!is_subtype(ValType::Ref(RefType::FUNCREF), concrete));
    }

    #[test]
    fn equal_types_share_an_id_and_different_ones_do_not() {
        let a = FuncType { params: vec![ValType::I32], results: vec![] };
        let b = FuncType { params: vec![ValType::I64], results: vec![] };
        assert_eq!(canonical_id(&a), canonical_id(&a.clone()));
        assert_ne!(canonical_id(&a), canonical_id(&b));
        assert_ne!(canonical_id(&a), 0);
    }
}
