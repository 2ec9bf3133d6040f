//! Canonical type ids, shared by every module in the process so `call_indirect`, casts and
//! linking can compare types across instances with one integer comparison, and the subtype
//! relation between them.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use kiln_abi::gc::{CompositeType, FieldType, StorageType, SubType};
use kiln_abi::{FuncType, HeapType, RefType, ValType};

/// A type in canonical form: its place in the subtype hierarchy and shape, and its signature
/// if it is a function type, with every concrete reference an id or group-relative index.
#[derive(Clone, PartialEq, Eq, Hash)]
struct CanonicalType {
    sub: SubType,
    func: FuncType,
}

/// A recursion group in canonical form.
type Key = Vec<CanonicalType>;

/// What the registry knows about an id.
#[derive(Clone)]
struct TypeInfo {
    /// The declared supertype's id.
    supertype: Option<u32>,
    /// How a collector traces objects of the type.
    layout: ObjectLayout,
}

/// How a collector sizes and traces an object of a type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectLayout {
    /// A function type (no objects).
    Func,
    /// A struct: its size, and the offsets of its fields that may refer to GC objects.
    Struct { size: u32, references: Box<[u32]> },
    /// An array: its element size, and whether elements may refer to GC objects.
    Array { element_size: u32, references: bool },
}

/// Whether a value of `ty` may refer to a GC object (one of the `any` or `extern` hierarchies,
/// which share an encoding): what the collector traces.
pub(crate) fn traced(ty: ValType) -> bool {
    ty.may_refer_to_gc_object()
}

/// Whether a field of `storage` may hold a reference to a GC object.
fn traced_field(storage: StorageType) -> bool {
    matches!(storage, StorageType::Val(ty) if traced(ty))
}

impl ObjectLayout {
    fn of(composite: &CompositeType) -> ObjectLayout {
        match composite {
            CompositeType::Func => ObjectLayout::Func,
            CompositeType::Struct(fields) => {
                let layout = kiln_abi::gc::struct_layout(fields);
                let references = fields
                    .iter()
                    .zip(&layout.fields)
                    .filter(|(f, _)| traced_field(f.storage))
                    .map(|(_, &o)| o)
                    .collect();
                ObjectLayout::Struct { size: layout.size, references }
            }
            CompositeType::Array(element) => ObjectLayout::Array {
                element_size: kiln_abi::gc::storage_size(element.storage),
                references: traced_field(element.storage),
            },
        }
    }
}

/// The layouts of every type, by canonical id, while the registry is locked (a collection
/// looks up every object it copies).
pub struct Layouts<'a>(std::sync::MutexGuard<'a, Registry>);

impl Layouts<'_> {
    /// The layout of canonical type `id`.
    pub fn get(&self, id: u32) -> Option<&ObjectLayout> {
        self.0.infos.get(id.wrapping_sub(1) as usize).map(|i| &i.layout)
    }
}

/// Locks the registry for a collection's lookups.
pub fn layouts() -> Layouts<'static> {
    Layouts(registry())
}

#[derive(Default)]
pub struct Registry {
    /// Each group's first id (its members' ids follow), the group stored once.
    ids: HashMap<Key, u32>,
    /// By id - 1.
    infos: Vec<TypeInfo>,
}

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks a reference to a member of the same recursion group (by its index in the group) in a
/// canonical key; canonical ids stay below it.
const REC_RELATIVE: u32 = 1 << 31;

/// The id of each member of canonical group `group`, interning the group if it is new.
/// `supertype` of a member may be group-relative; it is resolved to an id here.
fn intern_group(group: Vec<CanonicalType>) -> Vec<u32> {
    let mut registry = registry();
    let size = group.len() as u32;
    let first = match registry.ids.get(&group) {
        Some(&id) => return (0..size).map(|k| id + k).collect(),
        None => registry.infos.len() as u32 + 1,
    };
    assert!(first + size < REC_RELATIVE, "too many distinct types");
    for ty in &group {
        let supertype = ty.sub.supertype.map(|s| if s & REC_RELATIVE != 0 { first + (s & !REC_RELATIVE) } else { s });
        registry.infos.push(TypeInfo { supertype, layout: ObjectLayout::of(&ty.sub.composite) });
    }
    registry.ids.insert(group, first);
    (0..size).map(|k| first + k).collect()
}

/// The canonical id of a host-provided function type (no concrete references, final, a
/// singleton group). Ids start at 1 so a zeroed VM context never matches a real type.
pub fn canonical_id(ty: &FuncType) -> u32 {
    intern_group(vec![CanonicalType { sub: SubType::FUNC, func: ty.clone() }])[0]
}

/// Canonical ids for a module's type section, in order. Types are canonicalised a recursion
/// group at a time (iso-recursive equivalence): a reference to a member of the same group
/// becomes its index in the group, a reference to an earlier type becomes that type's id. So
/// structurally equal types of different modules get equal ids whatever their indices.
/// `rec_groups` lists the group sizes (empty: every type is its own group); `subtypes` the
/// types' shapes (empty: all final function types).
pub fn canonical_ids(types: &[FuncType], subtypes: &[SubType], rec_groups: &[u32]) -> Vec<u32> {
    let singletons = vec![1u32; types.len()];
    let groups =
        if rec_groups.iter().map(|&n| n as usize).sum::<usize>() == types.len() { rec_groups } else { &singletons };
    let mut ids: Vec<u32> = Vec::with_capacity(types.len());
    let mut start = 0usize;
    for &size in groups {
        let end = start + size as usize;
        let index = |j: u32, ids: &[u32]| {
            let j = j as usize;
            if (start..end).contains(&j) {
                REC_RELATIVE | (j - start) as u32
            } else {
                ids.get(j).copied().unwrap_or(REC_RELATIVE - 1)
            }
        };
        let val = |ty: ValType, ids: &[u32]| match ty {
            ValType::Ref(r) => {
                ValType::Ref(RefType { nullable: r.nullable, heap: r.heap.map_concrete(|j| index(j, ids)) })
            }
            other => other,
        };
        let field = |f: FieldType, ids: &[u32]| FieldType {
            storage: match f.storage {
                StorageType::Val(v) => StorageType::Val(val(v, ids)),
                packed => packed,
            },
            mutable: f.mutable,
        };
        let group: Vec<CanonicalType> = (start..end)
            .map(|t| {
                let ty = &types[t];
                let sub = subtypes.get(t).unwrap_or(&SubType::FUNC);
                CanonicalType {
                    sub: SubType {
                        is_final: sub.is_final,
                        supertype: sub.supertype.map(|j| index(j, &ids)),
                        composite: match &sub.composite {
                            CompositeType::Func => CompositeType::Func,
                            CompositeType::Struct(fields) => {
                                CompositeType::Struct(fields.iter().map(|&f| field(f, &ids)).collect())
                            }
                            CompositeType::Array(element) => CompositeType::Array(field(*element, &ids)),
                        },
                    },
                    func: FuncType {
                        params: ty.params.iter().map(|&t| val(t, &ids)).collect(),
                        results: ty.results.iter().map(|&t| val(t, &ids)).collect(),
                    },
                }
            })
            .collect();
        ids.extend(intern_group(group));
        start = end;
    }
    ids
}

/// `ty` with concrete type indices replaced by canonical ids (`ids` is the module's table).
pub fn canonical_val_type(ty: ValType, ids: &[u32]) -> ValType {
    match ty {
        ValType::Ref(r) => ValType::Ref(RefType {
            nullable: r.nullable,
            heap: r.heap.map_concrete(|j| ids.get(j as usize).copied().unwrap_or(REC_RELATIVE - 1)),
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

/// Whether canonical type `sub` is `sup` or declares it as a (transitive) supertype.
pub fn is_subtype_id(sub: u32, sup: u32) -> bool {
    if sub == sup {
        return true;
    }
    let registry = registry();
    let mut at = sub;
    // Validation bounds the depth of a supertype chain (63); the bound here only guards a
    // corrupt registry against looping.
    for _ in 0..64 {
        match registry.infos.get(at.wrapping_sub(1) as usize).and_then(|i| i.supertype) {
            Some(s) if s == sup => return true,
            Some(s) => at = s,
            None => return false,
        }
    }
    false
}

/// Heap-type subtyping on canonical types: a reference to `sub` may be used where one to
/// `sup` is expected.
pub fn is_heap_subtype(sub: HeapType, sup: HeapType) -> bool {
    use HeapType as H;
    if sub == sup {
        return true;
    }
    match (sub, sup) {
        (H::ConcreteFunc(a), H::ConcreteFunc(b))
        | (H::ConcreteStruct(a), H::ConcreteStruct(b))
        | (H::ConcreteArray(a), H::ConcreteArray(b)) => is_subtype_id(a, b),
        (H::ConcreteFunc(_) | H::NoFunc, H::Func) => true,
        (H::NoFunc, H::ConcreteFunc(_)) => true,
        (H::NoExtern, H::Extern) | (H::NoExn, H::Exn) => true,
        (H::None, other) => other.hierarchy() == kiln_abi::RefHierarchy::Any,
        (H::I31 | H::Struct | H::Array | H::ConcreteStruct(_) | H::ConcreteArray(_) | H::Eq, H::Any) => true,
        (H::I31 | H::Struct | H::Array | H::ConcreteStruct(_) | H::ConcreteArray(_), H::Eq) => true,
        (H::ConcreteStruct(_), H::Struct) | (H::ConcreteArray(_), H::Array) => true,
        _ => false,
    }
}

/// Value-type subtyping on canonical types: `sub` may be used where `sup` is expected.
pub fn is_subtype(sub: ValType, sup: ValType) -> bool {
    match (sub, sup) {
        (ValType::Ref(a), ValType::Ref(b)) => (!a.nullable || b.nullable) && is_heap_subtype(a.heap, b.heap),
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
        let a = canonical_ids(&[unary.clone(), takes_ref(0)], &[], &[]);
        let b = canonical_ids(&[FuncType::default(), unary, takes_ref(1)], &[], &[1, 1, 1]);
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
        let ids = canonical_ids(&[refers_to(1), refers_to(0), refers_to(3), refers_to(2)], &[], &[2, 2]);
        assert_eq!(ids[0], ids[2]);
        assert_eq!(ids[1], ids[3]);
        // A self-recursive singleton group differs from either member.
        let single = canonical_ids(&[refers_to(0)], &[], &[1]);
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

    #[test]
    fn a_recursion_group_is_stored_once_not_once_per_member() {
        // A module's rec group of n types must cost the registry O(n), not n copies of the
        // group (a tenant's large group would otherwise take quadratic host memory, for ever).
        let types: Vec<FuncType> = (0..500)
            .map(|k| FuncType { params: vec![ValType::I64; k % 7], results: vec![ValType::F32; k / 7] })
            .collect();
        let ids = canonical_ids(&types, &[], &[500]);
        let range = ids[0]..ids[0] + 500;
        assert_eq!(ids, range.clone().collect::<Vec<_>>());
        let registry = registry();
        let keys = registry.ids.iter().filter(|(_, first)| range.contains(first)).collect::<Vec<_>>();
        assert_eq!(keys.len(), 1, "one key for the group");
        assert_eq!(keys[0].0.len(), 500);
    }
}
