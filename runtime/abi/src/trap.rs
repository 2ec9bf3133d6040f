//! Trap codes: what the compiler records per trapping instruction and what the runtime reports.

use serde::{Deserialize, Serialize};

macro_rules! for_each_trap_code {
    ($m:ident) => {
        $m! {
            /// The guest stack ran out (the prologue's stack-limit check fired).
            StackOverflow = 1 => "call stack exhausted",
            /// A linear-memory access outside the memory.
            HeapOutOfBounds = 2 => "out of bounds memory access",
            /// An atomic access to a misaligned address.
            HeapMisaligned = 3 => "unaligned atomic",
            /// A table access outside the table.
            TableOutOfBounds = 4 => "undefined element",
            /// `call_indirect` through a null table entry.
            IndirectCallToNull = 5 => "uninitialized element",
            /// `call_indirect` to a function of another type.
            BadSignature = 6 => "indirect call type mismatch",
            /// Signed division overflow (`INT_MIN / -1`).
            IntegerOverflow = 7 => "integer overflow",
            /// Integer division or remainder by zero.
            IntegerDivisionByZero = 8 => "integer divide by zero",
            /// A float-to-int conversion of NaN (out-of-range values are `IntegerOverflow`).
            BadConversionToInteger = 9 => "invalid conversion to integer",
            /// `unreachable` was executed.
            UnreachableCodeReached = 10 => "unreachable",
            /// The guest was stopped from outside (deadline or kill switch).
            Interrupt = 11 => "deadline exceeded",
            /// A null reference where a non-null one is required.
            NullReference = 12 => "null reference",
            /// `table.get`/`table.set` or a bulk table operation outside the table.
            TableAccessOutOfBounds = 13 => "out of bounds table access",
            /// `call_ref` or `return_call_ref` on a null reference.
            NullFunctionReference = 14 => "null function reference",
            /// `memory.atomic.wait` on a memory that is not shared.
            WaitOnUnsharedMemory = 15 => "expected shared memory",
            /// Code compiled with fuel metering used up the store's fuel.
            OutOfFuel = 16 => "all fuel consumed",
            /// `throw_ref` of a null exception reference.
            NullExceptionReference = 17 => "null exception reference",
            /// A throw when the store's exception objects already take its limit of memory.
            TooManyExceptions = 18 => "too many exceptions",
            /// A struct access through a null reference.
            NullStructReference = 19 => "null structure reference",
            /// An array access through a null reference.
            NullArrayReference = 20 => "null array reference",
            /// `i31.get_s`/`i31.get_u` of a null reference.
            NullI31Reference = 21 => "null i31 reference",
            /// `ref.cast` of a reference that is not of the target type.
            CastFailure = 22 => "cast failure",
            /// An array access or bulk array operation outside the array.
            ArrayOutOfBounds = 23 => "out of bounds array access",
            /// An allocation that the store's GC heap has no room for (see
            /// `StoreLimits::gc_heap_size`).
            GcHeapExhausted = 24 => "GC heap exhausted",
        }
    };
}

macro_rules! define_trap_code {
    ($($(#[$doc:meta])* $name:ident = $value:literal => $message:literal,)*) => {
        /// Why a guest stopped abnormally. The discriminant is what trap tables store.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[repr(u8)]
        pub enum TrapCode {
            $($(#[$doc])* $name = $value,)*
        }

        impl TrapCode {
            /// Every trap code, in discriminant order.
            pub const ALL: &'static [TrapCode] = &[$(TrapCode::$name,)*];

            /// The wording the WebAssembly spec (and its reference interpreter) uses.
            pub const fn message(self) -> &'static str {
                match self {
                    $(TrapCode::$name => $message,)*
                }
            }

            /// Decodes a trap-table byte.
            pub const fn from_u8(byte: u8) -> Option<TrapCode> {
                match byte {
                    $($value => Some(TrapCode::$name),)*
                    _ => None,
                }
            }
        }
    };
}

for_each_trap_code!(define_trap_code);

impl core::fmt::Display for TrapCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trap_codes_round_trip_through_their_byte() {
        for &code in TrapCode::ALL {
            assert_eq!(TrapCode::from_u8(code as u8), Some(code));
        }
        assert_eq!(TrapCode::from_u8(0), None);
        assert_eq!(TrapCode::from_u8(200), None);
    }
}
