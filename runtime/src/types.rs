//! Canonical function type ids, shared by every module in the process so `call_indirect` can
//! compare types across instances with one integer comparison.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use kiln_abi::{FuncType, HeapType, RefType, ValType};

/// A recursion group in canonical form, and a member's index in it.
type Key = (Vec<FuncType>, u32);

fn registry() -> &'static Mutex<HashMap<Key, u32>> {
    static REGISTRY: OnceLock<Mutex<HashMap<Key, u32>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Marks a reference to a member of the same recursion group (by its index in the group) in a
/// canonical key; canonical ids stay below it.
const REC_RELATIVE: u32 = 1 << 31;

fn intern(key: Key) -> u32 {
    let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
    let next = map.len() as u32 + 1;
    assert!(next < REC_RELATIVE, "too many distinct function types");
    *map.entry(key).or_insert(next)
}

/// The canonical id of a host-provided type (no concrete references: a singleton group).
/// Ids start at 1 so a zeroed VM context never matches a real type.
pub fn canonical_id(ty: &FuncType) -> u32 {
    intern((vec![ty.clone()], 0))
}

/// Canonical ids for a module's type section, in order. Types are canonicalised a recursion
/// group at a time (iso-recursive equivalence): a reference to a member of the same group
/// becomes its index in the group, a reference to an earlier type becomes that type's id. So
/// structurally equal types of different modules get equal ids whatever their indices.
/// `rec_groups` lists the group sizes (empty: every type is its own group).
pub fn canonical_ids(types: &[FuncType], rec_groups: &[u32]) -> Vec<u32> {
    let singletons = vec![1u32; types.len()];
    let groups =
        if rec_groups.iter().map(|&n| n as usize).sum::<usize>() == types.len() { rec_groups } else { &singletons };
    let mut ids: Vec<u32> = Vec::with_capacity(types.len());
    let mut start = 0usize;
    for &size in groups {
        let end = start + size as usize;
        let map = |ty: ValType, ids: &[u32]| match ty {
            ValType::Ref(RefType { nullable, heap: HeapType::ConcreteFunc(j) }) => {
                let j = j as usize;
                let heap = if (start..end).contains(&j) {
                    HeapType::ConcreteFunc(REC_RELATIVE | (j - start) as u32)
                } else {
                    HeapType::ConcreteFunc(ids.get(j).copied().unwrap_or(REC_RELATIVE - 1))
                };
                ValType::Ref(RefType { nullable, heap })
            }
            other => other,
        };
        let group: Vec<FuncType> = types[start..end]
            .iter()
            .map(|ty| FuncType {
                params: ty.params.iter().map(|&t| map(t, &ids)).collect(),
                results: ty.results.iter().map(|&t| map(t, &ids)).collect(),
            })
            .collect();
        for k in 0..size {
            ids.push(intern((group.clone(), k)));
        }
        start = end;
    }
    ids
}

/// `ty` with concrete type indices replaced by canonical ids (`ids` is the module's table).
pub fn canonical_val_type(ty: ValType, ids: &[u32]) -> ValType {
    match ty {
        ValType::Ref(RefType { nullable, heap: HeapType::ConcreteFunc(j) }) => ValType::Ref(RefType {
            nullable,
            heap: HeapType::ConcreteFunc(ids.get(j as usize).copied().unwrap_or(REC_RELATIVE - 1)),
        }),
        other => other,
    }
}

/// `ty` with its concrete type indices replaced by canonical ids.
pub fn canonical_func_type(ty: &FuncType, ids: &[u32]) -> FuncType {
    FuncType {
        params: ty.params.iter().map(|&t| canonical_val_type(t, ids)).collect(),
        results: ty.results.iter().map(|&t| canonical_val_type(t, ids)).collect(),
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
        let a = canonical_ids(&[unary.clone(), takes_ref(0)], &[]);
        let b = canonical_ids(&[FuncType::default(), unary, takes_ref(1)], &[1, 1, 1]);
        assert_eq!(a[0], b[1]);
        assert_eq!(a[1], b[2]);
        assert_ne!(b[0], b[1]);
        let concrete = ValType::Ref(RefType { nullable: false, heap: HeapType::ConcreteFunc(a[0]) });
        assert!(is_subtype(concrete, ValType::Ref(RefType::FUNCREF)));
        assert!(!is_subtype(ValType::Ref(RefType::FUNCREF), concrete));
    }

    #[test]
    fn isomorphic_recursion_groups_get_equal_ids() {
        let refers_to = |i| FuncType {
            params: vec![ValType::I32, ValType::Ref(RefType { nullable: false, heap: HeapType::ConcreteFunc(i) })],
            results: vec![],
        };
        // (rec $t0 -> $t1, $t1 -> $t0) twice, at different positions.
        let ids = canonical_ids(&[refers_to(1), refers_to(0), refers_to(3), refers_to(2)], &[2, 2]);
        assert_eq!(ids[0], ids[2]);
        assert_eq!(ids[1], ids[3]);
        // A self-recursive singleton group differs from either member.
        let single = canonical_ids(&[refers_to(0)], &[1]);
        assert_ne!(single[0], ids[0]);
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
