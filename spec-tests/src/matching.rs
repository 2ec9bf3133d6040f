//! Values between the script and the runtime: arguments made from script constants, results
//! matched against the script's patterns (NaN classes, lanes, reference kinds), trap messages.

use kiln_runtime::{AnyRef, CallError, RefHierarchy, Trap, Val, ValType};
use wast::core::{NanPattern, V128Pattern, WastArgCore, WastRetCore};
use wast::{QuoteWat, WastArg, WastRet};

/// The reference interpreter's rule: the expected message is a prefix of the actual one.
///
/// Also accepted: the actual message being a prefix of the expected one, for the few scripts
/// whose expectation adds detail Kiln does not report (`uninitialized element 2`).
pub(crate) fn trap_matches(trap: &Trap, expected: &str) -> bool {
    let actual = trap.to_string();
    actual.starts_with(expected) || expected.starts_with(&actual)
}

pub(crate) fn describe(result: &Result<Vec<Val>, CallError>) -> String {
    match result {
        Ok(values) => format!("results {:?}", values.iter().map(|v| v.to_string()).collect::<Vec<_>>()),
        Err(e) => format!("error `{e}`"),
    }
}

pub(crate) fn module_name(module: &QuoteWat<'_>) -> Option<String> {
    module.name().map(|id| id.name().to_string())
}

pub(crate) fn arg_value(arg: &WastArg<'_>, ty: ValType) -> Result<Val, String> {
    let WastArg::Core(core) = arg else { return Err("component-model arguments".into()) };
    Ok(match core {
        WastArgCore::I32(v) => Val::I32(*v),
        WastArgCore::I64(v) => Val::I64(*v),
        WastArgCore::F32(f) => Val::F32(f.bits),
        WastArgCore::F64(f) => Val::F64(f.bits),
        WastArgCore::V128(v) => Val::V128(u128::from_le_bytes(v.to_le_bytes())),
        WastArgCore::RefNull(_) => match ty {
            ValType::Ref(r) => match r.heap.hierarchy() {
                RefHierarchy::Extern => Val::ExternRef(None),
                RefHierarchy::Exn => Val::ExnRef(None),
                RefHierarchy::Any => Val::AnyRef(None),
                RefHierarchy::Func => Val::FuncRef(None),
            },
            _ => return Err("ref.null for a non-reference parameter".into()),
        },
        WastArgCore::RefExtern(n) => Val::ExternRef(Some(*n as u64)),
        WastArgCore::RefHost(n) => Val::AnyRef(Some(AnyRef::Host(*n as u64))),
    })
}

fn f32_matches(bits: u32, pattern: &NanPattern<wast::token::F32>) -> bool {
    match pattern {
        NanPattern::CanonicalNan => bits & 0x7fff_ffff == 0x7fc0_0000,
        NanPattern::ArithmeticNan => bits & 0x7fc0_0000 == 0x7fc0_0000,
        NanPattern::Value(v) => v.bits == bits,
    }
}

fn f64_matches(bits: u64, pattern: &NanPattern<wast::token::F64>) -> bool {
    match pattern {
        NanPattern::CanonicalNan => bits & 0x7fff_ffff_ffff_ffff == 0x7ff8_0000_0000_0000,
        NanPattern::ArithmeticNan => bits & 0x7ff8_0000_0000_0000 == 0x7ff8_0000_0000_0000,
        NanPattern::Value(v) => v.bits == bits,
    }
}

fn v128_matches(v: u128, pattern: &V128Pattern) -> bool {
    let bytes = v.to_le_bytes();
    let lane = |i: usize, size: usize| -> u64 {
        let mut b = [0u8; 8];
        b[..size].copy_from_slice(&bytes[i * size..(i + 1) * size]);
        u64::from_le_bytes(b)
    };
    match pattern {
        V128Pattern::I8x16(l) => l.iter().enumerate().all(|(i, &x)| lane(i, 1) == x as u8 as u64),
        V128Pattern::I16x8(l) => l.iter().enumerate().all(|(i, &x)| lane(i, 2) == x as u16 as u64),
        V128Pattern::I32x4(l) => l.iter().enumerate().all(|(i, &x)| lane(i, 4) == x as u32 as u64),
        V128Pattern::I64x2(l) => l.iter().enumerate().all(|(i, &x)| lane(i, 8) == x as u64),
        V128Pattern::F32x4(l) => l.iter().enumerate().all(|(i, p)| f32_matches(lane(i, 4) as u32, p)),
        V128Pattern::F64x2(l) => l.iter().enumerate().all(|(i, p)| f64_matches(lane(i, 8), p)),
    }
}

/// Whether `value` matches `pattern`; `Err` for patterns Kiln cannot check yet.
pub(crate) fn matches_ret(value: &Val, pattern: &WastRet<'_>) -> Result<bool, String> {
    let WastRet::Core(pattern) = pattern else { return Err("component-model results".into()) };
    matches_core(value, pattern)
}

fn matches_core(value: &Val, pattern: &WastRetCore<'_>) -> Result<bool, String> {
    Ok(match (pattern, value) {
        // Relaxed SIMD: any of the permitted results.
        (WastRetCore::Either(options), _) => {
            for option in options {
                if matches_core(value, option)? {
                    return Ok(true);
                }
            }
            false
        }
        (WastRetCore::I32(e), Val::I32(a)) => e == a,
        (WastRetCore::I64(e), Val::I64(a)) => e == a,
        (WastRetCore::F32(p), Val::F32(bits)) => f32_matches(*bits, p),
        (WastRetCore::F64(p), Val::F64(bits)) => f64_matches(*bits, p),
        (WastRetCore::V128(p), Val::V128(v)) => v128_matches(*v, p),
        (WastRetCore::RefNull(_), Val::FuncRef(f)) => f.is_none(),
        (WastRetCore::RefNull(_), Val::ExternRef(v)) => v.is_none(),
        (WastRetCore::RefNull(_), Val::ExnRef(e)) => e.is_none(),
        (WastRetCore::RefNull(_), Val::AnyRef(a)) => a.is_none(),
        (WastRetCore::RefExtern(None), Val::ExternRef(v)) => v.is_some(),
        // An externref made from an anyref reaches the host as that anyref.
        (WastRetCore::RefExtern(None), Val::AnyRef(a)) => a.is_some(),
        (WastRetCore::RefExtern(Some(n)), Val::ExternRef(v)) => *v == Some(*n as u64),
        (WastRetCore::RefFunc(_), Val::FuncRef(f)) => f.is_some(),
        (WastRetCore::RefHost(n), Val::AnyRef(Some(AnyRef::Host(m)))) => *n as u64 == *m,
        (WastRetCore::RefAny, Val::AnyRef(a)) => a.is_some(),
        (WastRetCore::RefEq, Val::AnyRef(a)) => matches!(a, Some(AnyRef::I31(_) | AnyRef::Object(_))),
        (WastRetCore::RefI31, Val::AnyRef(a)) => matches!(a, Some(AnyRef::I31(_))),
        (WastRetCore::RefStruct, Val::AnyRef(Some(AnyRef::Object(o)))) => !o.is_array(),
        (WastRetCore::RefArray, Val::AnyRef(Some(AnyRef::Object(o)))) => o.is_array(),
        _ => false,
    })
}
